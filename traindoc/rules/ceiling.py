"""The task's ceiling: the best validation accuracy that a run in the same folder, on the same
number of classes, reached while fitting its training data beyond it.

`underfitting` alone measures a run's accuracy against perfect. On a task with noisy labels or
an irreducible entropy (a character language model, tabular data) no model gets near
perfect, and every run would look low. A sibling whose train accuracy is above its validation
accuracy by `gap_small` or more had the capacity to fit more than generalises, so its
validation accuracy says how far this task goes. With three or more runs in the task and such
a sibling among them, a run whose train accuracy covers `low_progress` of the way from chance to that
ceiling fits as well as anything tried on it: its underfitting finding is withdrawn. The
ceiling is never above 1, so siblings can only withdraw the finding, never add it; and a
folder of runs that all underfit has no such sibling, so nothing is withdrawn there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from .base import DEFAULT, Thresholds
from .curves import num_classes
from .fit_gap import end_state
from .needs import Diagnosis

MIN_SIBLINGS = 3


@dataclass
class Task:
    """Runs taken for one task: (run index, final train accuracy, final validation accuracy)."""

    members: list

    def ceiling(self, gap_small: float) -> tuple[float, int] | None:
        """(best validation accuracy among members that fit beyond it, whose), or None."""
        fitting = [(va, i) for i, ta, va in self.members if ta - va >= gap_small]
        return max(fitting) if fitting else None


def find_tasks(runs: list) -> dict[int, Task]:
    """Run index -> its task (folder + number of classes), for tasks of 3+ runs with accuracies."""
    groups: dict[tuple, Task] = {}
    for i, run in enumerate(runs):
        st = end_state(run, DEFAULT)
        if st is None:
            continue
        key = (os.path.dirname(os.path.normpath(run.path or "")), num_classes(run))
        groups.setdefault(key, Task([])).members.append((i, st.train_end, st.val_end))
    return {i: t for t in groups.values() if len(t.members) >= MIN_SIBLINGS for i, _, _ in t.members}


def apply_ceilings(runs: list, tasks: dict[int, Task], diagnoses: list[Diagnosis],
                   cfg: Thresholds) -> list[Diagnosis]:
    """The diagnoses without the underfitting findings that the task's ceiling explains."""
    out = list(diagnoses)
    for i, task in tasks.items():
        d = out[i]
        uf = [f for f in d.findings if f.rule == "underfitting"]
        if not uf:
            continue
        top = task.ceiling(cfg.gap_small)
        chance = uf[0].evidence["chance_acc"]
        if top is None or top[0] <= chance:
            continue
        progress = (uf[0].evidence["final_train_acc"] - chance) / (top[0] - chance)
        if progress >= cfg.low_progress:
            out[i] = replace(d, findings=[f for f in d.findings if f.rule != "underfitting"])
    return out
