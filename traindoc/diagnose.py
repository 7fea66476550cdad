"""Find runs under a path and diagnose each one; bad runs are reported, not fatal."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field

from . import logs
from .reader import RunFormatError, RunReader, RunSeries, is_run_dir
from .rules import DEFAULT, Thresholds, diagnose_runs, series_found
from .tb import TBRunReader, find_tb_runs, is_tb_run


class InputError(Exception):
    """The path given cannot be diagnosed at all (missing, a file, nothing in it)."""


@dataclass
class RunReport:
    """One run's diagnosis, or the one-line reason it could not be read."""

    name: str
    path: str
    findings: list = field(default_factory=list)
    error: str | None = None
    warnings: list = field(default_factory=list)  # parts of the input that could not be read
    skipped: list = field(default_factory=list)  # [{"rule", "missing"}]: rules that could not run
    diagnosed: bool = False  # at least one curve rule ran; never true for a run that was not read
    found: list = field(default_factory=list)  # the series the run has (shown when not diagnosed)

    def to_dict(self) -> dict:
        """The `--json` shape of one run."""
        d = {"run": self.name, "path": self.path, "diagnosed": self.diagnosed,
             "findings": [f.to_dict() for f in self.findings], "skipped": self.skipped}
        if not self.diagnosed:
            d["found"] = self.found
        if self.error:
            d["error"] = self.error
        return d


def _is_run(path: str) -> bool:
    return is_run_dir(path) or logs.kind_of(path) is not None


def scan(path: str, max_depth: int = 4) -> tuple[list[str], list[str]]:
    """(runs, not_runs) at or under `path`: run folders of every known format (traindoc,
    TensorBoard, Hugging Face, Lightning, MLflow, CSV logs), and the highest files or
    folders that hold none of them, each listed once. Raises InputError."""
    if not os.path.exists(path):
        raise InputError(f"no such path: {path}")
    if os.path.isfile(path) and logs.kind_of(path) == "csv":
        return [path], []
    if not os.path.isdir(path):
        raise InputError(f"not a folder or a CSV log (give a run folder, a logdir, or a folder of runs): {path}")
    if _is_run(path) or is_tb_run(path):
        return [path], []
    found = []
    base_depth = path.rstrip(os.sep).count(os.sep)
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        dirnames.sort()
        if dirpath != path and _is_run(dirpath):
            found.append(dirpath)
            dirnames[:] = []  # a run's own folder holds no further runs
            continue
        found += [os.path.join(dirpath, f) for f in sorted(filenames)
                  if logs.kind_of(os.path.join(dirpath, f)) == "csv"]
        if dirpath.count(os.sep) - base_depth >= max_depth:
            dirnames[:] = []
    found += find_tb_runs(path, max_depth + 1)
    runs = sorted(set(found))
    return runs, _not_runs(path, runs, max_depth)


_IGNORED = ("traindoc-tb.toml", "traindoc-tb.json")


def _not_runs(path: str, runs: list[str], depth: int) -> list[str]:
    """The highest entries under `path` that neither are nor hold a run (hidden names and
    override files aside)."""
    out = []
    try:
        names = sorted(os.listdir(path))
    except OSError:
        return out
    for n in names:
        if n.startswith(".") or n in _IGNORED:
            continue
        p = os.path.join(path, n)
        if p in runs or any(os.path.dirname(r) == p or r.startswith(p + os.sep) for r in runs):
            if p not in runs and os.path.isdir(p) and depth > 0:
                out += _not_runs(p, runs, depth - 1)
            continue
        if any(p.startswith(r + os.sep) for r in runs):
            continue  # part of a run (a TensorBoard run's split folder, a checkpoint)
        out.append(p)
    return out


def find_runs(path: str, max_depth: int = 4) -> list[str]:
    """Run folders (and CSV logs) of every known format at or under `path`, sorted. Raises InputError."""
    return _runs_and_others(path, max_depth)[0]


def _runs_and_others(path: str, max_depth: int = 4) -> tuple[list[str], list[str]]:
    """`scan`, raising InputError (with what is there) when nothing under `path` is a run."""
    runs, others = scan(path, max_depth)
    if not runs:
        listed = ", ".join(os.path.basename(o) for o in others[:5]) or "nothing"
        raise InputError(f"no runs under {path} (found {listed}): a traindoc run has a meta.json, a TensorBoard "
                         "run events.out.tfevents.* files; Hugging Face trainer_state.json, Lightning metrics.csv, "
                         "MLflow mlruns/ and CSV logs with an epoch or step column are read too")
    return runs, others


def open_reader(path: str):
    """An incremental reader of any run: RunReader, TBRunReader or LogRunReader, same surface."""
    if is_run_dir(path):
        return RunReader(path)
    if logs.kind_of(path) is not None:
        return logs.LogRunReader(path)
    return TBRunReader(path)


def load(path: str) -> tuple[RunSeries, list[str]]:
    """Read one run folder of either kind: (series, lines about unreadable parts)."""
    reader = open_reader(path)
    reader.poll()
    return reader.series(), list(reader.problems)


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
    if cfg is DEFAULT and os.path.isdir(path) and not (_is_run(path) or is_tb_run(path)):
        try:
            from .catalog import Catalog

            cat = Catalog(path)
            cat.refresh(progress=progress)
            reports, others = cat.reports(), cat.not_runs()
            if cat.odd_names():
                reports = None  # runs the index cannot name: read everything directly instead
        except (OSError, sqlite3.Error):
            reports = None
        if reports is not None:
            if not reports:
                _runs_and_others(path)  # raises the InputError that says what is there
            for r in reports:  # paths as the caller gave the root
                r.path = os.path.join(path, *r.name.split("/")) if r.name != os.path.basename(cat.root) else path
            return reports, [os.path.join(path, *o.split("/")) for o in others]
    run_paths, others = _runs_and_others(path)
    reports: list[RunReport] = []
    loaded = []  # (position in reports, run, problems)
    for run_path in run_paths:
        name = os.path.relpath(run_path, path) if run_path != path else os.path.basename(os.path.normpath(path))
        try:
            run, problems = load(run_path)
        except (RunFormatError, OSError, ValueError) as exc:
            reports.append(RunReport(name, run_path, error=str(exc)))
            continue
        loaded.append((len(reports), run, problems))
        reports.append(RunReport(run.name, run_path))
    for (at, run, problems), d in zip(loaded, diagnose_runs([r for _, r, _ in loaded], cfg)):
        reports[at] = RunReport(run.name, reports[at].path, d.findings, warnings=problems, skipped=d.skipped,
                                diagnosed=d.diagnosed, found=series_found(run))
    return reports, others
