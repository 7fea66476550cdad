"""Diagnose every run under a path, alone and beside its siblings; bad runs are reported, not
fatal. The orchestration: above the catalog and discovery, below the CLI and the app."""

from __future__ import annotations

import os
import sqlite3

from .catalog import Catalog
from .discovery import RunReport, is_run, load, run_name, runs_and_others
from .rules import DEFAULT, Thresholds, diagnose_runs, series_found
from .series import RunFormatError
from .tb import is_tb_run


def diagnose_path(path: str, cfg: Thresholds = DEFAULT, progress=None) -> list[RunReport]:
    """Diagnose every run under `path` (see `diagnose_tree`)."""
    return diagnose_tree(path, cfg, progress)[0]


def diagnose_tree(path: str, cfg: Thresholds = DEFAULT, progress=None) -> tuple[list[RunReport], list[str]]:
    """(a report per run under `path`, what under it is no run). Each run is diagnosed alone and
    then together with its siblings (sweeps, a task's ceiling: `rules.together`). A run that cannot
    be read gets an error, the rest go on. Raises InputError when nothing there is a run.

    A folder of runs goes through the run catalog (`catalog.py`) with the default thresholds: only
    runs whose files changed since the last call are read again, and an unchanged tree is not
    walked. `progress(done, total)` is told while runs are read. Without a usable cache folder,
    every run is read."""
    if cfg is DEFAULT and os.path.isdir(path) and not (is_run(path) or is_tb_run(path)):
        try:
            cat = Catalog(path)
            cat.refresh(progress=progress)
            reports, others = cat.reports(), cat.not_runs()
            if cat.odd_names():
                reports = None  # runs the index cannot name: read everything directly instead
        except (OSError, sqlite3.Error):
            reports = None
        if reports is not None:
            if not reports:
                runs_and_others(path)  # raises the InputError that says what is there
            for r in reports:  # paths as the caller gave the root (from the path indexed, never the name)
                rel = os.path.relpath(r.path, cat.root)
                r.path = path if rel == "." else os.path.join(path, rel)
            return reports, [os.path.join(path, *o.split("/")) for o in others]
    run_paths, others = runs_and_others(path)
    reports: list[RunReport] = []
    loaded = []  # (position in reports, run, problems)
    for run_path in run_paths:
        name = run_name(run_path, path)
        try:
            run, problems = load(run_path)
        except (RunFormatError, OSError, ValueError) as exc:
            reports.append(RunReport(name, run_path, error=str(exc)))
            continue
        loaded.append((len(reports), run, problems))
        reports.append(RunReport(name, run_path))
    for (at, run, problems), d in zip(loaded, diagnose_runs([r for _, r, _ in loaded], cfg)):
        reports[at] = RunReport(reports[at].name, reports[at].path, d.findings, warnings=problems, skipped=d.skipped,
                                diagnosed=d.diagnosed, found=series_found(run), spikes=[s.to_dict() for s in d.spikes])
    return reports, others
