"""The task's ceiling: the best validation accuracy that a run in the same folder, on the same
number of classes, reached while fitting its training data beyond it.

`underfitting` alone measures a run's accuracy against perfect. On a task with noisy labels or
an irreducible entropy (a character language model, tabular data) no model gets near
perfect, and every run would look low. A sibling whose train accuracy is above its validation
accuracy by `gap_small` or more had the capacity to fit more than generalises, so its
validation accuracy says how far this task goes. With three or more runs in the task and such
a sibling among them, a run whose train accuracy covers `low_progress` of the way from chance to that
ceiling fits as well as anything tried on it: its underfitting finding is withdrawn. The
ceiling is never above 1; a folder of runs that all underfit has no such sibling, so nothing
is withdrawn there. The other way round, a run far below that ceiling (under `low_progress`
of the way from chance, yet above chance) with a gap under `sibling_gap` underfits even where its accuracy
looks fair against perfect, unless an LR finding already explains it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from .base import DEFAULT, Finding, Thresholds
from .curves import num_classes
from .fit_gap import end_state
from .needs import Diagnosis

MIN_SIBLINGS = 3


@dataclass
class Member:
    """One run of a task, as its accuracies ended."""

    index: int
    name: str
    train: float
    val: float
    chance: float
    steps: tuple


@dataclass
class Task:
    """Runs taken for one task (same folder, same number of classes)."""

    members: list

    def ceiling(self, gap_small: float) -> Member | None:
        """The member with the best validation accuracy among those that fit beyond it, or None."""
        fitting = [m for m in self.members if m.train - m.val >= gap_small]
        return max(fitting, key=lambda m: m.val) if fitting else None


def digest(run) -> dict | None:
    """What a task needs of a run, JSON-able (the run catalog stores it); None without accuracies."""
    st = end_state(run, DEFAULT)
    if st is None:
        return None
    return {"folder": os.path.dirname(os.path.normpath(run.path or "")), "classes": num_classes(run),
            "task": task_key(run), "name": run.name, "train": st.train_end, "val": st.val_end,
            "chance": st.chance, "steps": [st.first_step, st.last_step]}


#: Hyperparameter names that say which data a run trained on.
DATA_NAMES = ("dataset", "data", "dataset_name", "data_name", "task", "task_name", "data_dir", "data_path",
              "train_file", "train_data", "corpus")


def task_key(run) -> list:
    """What shows that two runs work on one task, beyond the number of classes: the dataset its
    hyperparameters name, and the script that wrote it, read from the names of its
    hyperparameters (or, for logs without any, the names of the series it logged). Runs that
    share a folder and a class count but not this are different experiments."""
    cfg = run.meta.get("config") if isinstance(run.meta.get("config"), dict) else {}
    data = sorted((str(k).lower(), str(v)) for k, v in cfg.items() if str(k).lower() in DATA_NAMES)
    shape = sorted(str(k) for k in cfg) if cfg else sorted(k for k in run.keys if not k.startswith("train/loss/"))
    return [data, shape]


def tasks_of(digests: list) -> list[Task]:
    """The tasks (folder, number of classes, `task_key`) of 3+ runs with accuracies, from the runs' `digest`s
    (None where a run has none); member indices are positions in `digests`."""
    groups: dict[tuple, Task] = {}
    for i, d in enumerate(digests):
        if d is not None:
            task = repr(d.get("task"))  # digests stored before the task key have none: grouped as before
            groups.setdefault((d["folder"], d["classes"], task), Task([])).members.append(
                Member(i, d["name"], d["train"], d["val"], d["chance"], tuple(d["steps"])))
    return [t for t in groups.values() if len(t.members) >= MIN_SIBLINGS]


def apply_ceilings(tasks: list[Task], diagnoses: list[Diagnosis], cfg: Thresholds) -> list[Diagnosis]:
    """Underfitting withdrawn where the run reaches `low_progress` of the task's ceiling; added
    where it reaches less, its gap is under `sibling_gap`, and no LR finding explains it."""
    out = list(diagnoses)
    for task in tasks:
        top = task.ceiling(cfg.gap_small)
        if top is None:
            continue
        for me in task.members:
            i = me.index
            d = out[i]
            if top.val <= me.chance or top.index == i:
                continue
            progress = (me.train - me.chance) / (top.val - me.chance)
            rules = {f.rule for f in d.findings}
            if "underfitting" in rules and progress >= cfg.low_progress:
                out[i] = replace(d, findings=[f for f in d.findings if f.rule != "underfitting"])
            elif ("underfitting" not in rules and cfg.collapse_to < progress < cfg.low_progress
                  and abs(me.train - me.val) < cfg.sibling_gap and not rules & {"lr_too_low", "lr_too_high"}):
                # (at chance the model learned nothing at all: a capacity limit still learns something)
                out[i] = replace(d, findings=d.findings + [Finding("underfitting", "warning", me.steps, {
                    "final_train_acc": me.train, "final_val_acc": me.val, "gap": me.train - me.val,
                    "chance_acc": me.chance, "task_best_val_acc": top.val, "task_best_run": top.name,
                    "progress_toward_task_best": progress, "task_runs": len(task.members),
                }, f"Use a bigger model or less regularization: {top.name}, on the same task, reached "
                   f"{top.val:.1%} validation accuracy, while this run fits its own training data only to "
                   f"{me.train:.1%}, hardly above its validation accuracy.")])
    return out
