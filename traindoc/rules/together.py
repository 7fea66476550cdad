"""Runs judged together: what sibling runs under one folder say about each other.

`sweep.py`: runs that differ only in the LR measure which LR was too low or too high.
`ceiling.py`: runs on one task say how far that task goes, so low accuracy is not blamed on
the model when no run did better. Both are read once from the runs (`study`), then applied to
the single-run diagnoses under a set of thresholds (`apply`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import Thresholds
from .ceiling import apply_ceilings, find_tasks
from .needs import Diagnosis
from .sweep import apply_sweeps, find_sweeps


@dataclass
class Study:
    """What the runs say about each other, independent of the thresholds."""

    runs: list
    sweeps: list
    tasks: dict


def study(runs: list) -> Study:
    """Find the sweeps and tasks among `runs` (RunSeries)."""
    runs = list(runs)
    return Study(runs, find_sweeps(runs), find_tasks(runs))


def apply(s: Study, diagnoses: list[Diagnosis], cfg: Thresholds) -> list[Diagnosis]:
    """The single-run diagnoses with the siblings' evidence (new objects)."""
    return apply_ceilings(s.runs, s.tasks, apply_sweeps(s.sweeps, diagnoses, cfg), cfg)


def diagnose_runs(runs: list, cfg: Thresholds, diagnose_one) -> list[Diagnosis]:
    """Each run on its own (`diagnose_one(run, cfg)`), then together."""
    s = study(runs)
    return apply(s, [diagnose_one(r, cfg) for r in s.runs], cfg)
