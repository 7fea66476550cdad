"""Runs judged together: what sibling runs under one folder say about each other.

`sweep.py`: runs that differ only in the LR measure which LR was too low or too high.
`ceiling.py`: runs on one task say how far that task goes, so low accuracy is not blamed on
the model when no run did better. Both are read once from the runs (`study`), then applied to
the single-run diagnoses under a set of thresholds (`apply`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import Thresholds
from . import ceiling, sweep
from .ceiling import apply_ceilings
from .needs import Diagnosis
from .sweep import apply_sweeps, find_sweeps  # noqa: F401 (the compare page finds sweeps through here)


@dataclass
class Study:
    """What the runs say about each other, independent of the thresholds."""

    sweeps: list
    tasks: list


def digest(run, points: int = 400) -> dict:
    """All that judging `run` together with others needs, JSON-able (the run catalog keeps it, so
    sibling evidence never needs the siblings' series again); loss curves at most `points` long."""
    return {"sweep": sweep.digest(run, points), "task": ceiling.digest(run)}


def study(runs: list) -> Study:
    """Find the sweeps and tasks among `runs` (RunSeries)."""
    return study_digests([digest(r) for r in runs])


def study_digests(digests: list) -> Study:
    """The same from the runs' `digest`s (positions in the list are the runs' indices)."""
    return Study(sweep.sweeps_of([d["sweep"] if d else None for d in digests]),
                 ceiling.tasks_of([d["task"] if d else None for d in digests]))


def apply(s: Study, diagnoses: list[Diagnosis], cfg: Thresholds) -> list[Diagnosis]:
    """The single-run diagnoses with the siblings' evidence (new objects)."""
    return apply_ceilings(s.tasks, apply_sweeps(s.sweeps, diagnoses, cfg), cfg)


def diagnose_runs(runs: list, cfg: Thresholds, diagnose_one) -> list[Diagnosis]:
    """Each run on its own (`diagnose_one(run, cfg)`), then together."""
    runs = list(runs)
    return apply(study(runs), [diagnose_one(r, cfg) for r in runs], cfg)
