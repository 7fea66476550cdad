"""Find runs under a path and diagnose each one; bad runs are reported, not fatal."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .reader import RunFormatError, RunReader, RunSeries, is_run_dir
from .rules import DEFAULT, Thresholds, diagnose_run, series_found
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


def find_runs(path: str, max_depth: int = 4) -> list[str]:
    """Run folders (traindoc or TensorBoard) at or under `path`, sorted. Raises InputError."""
    if not os.path.exists(path):
        raise InputError(f"no such path: {path}")
    if not os.path.isdir(path):
        raise InputError(f"not a folder (give a run folder, a TensorBoard logdir, or a folder of runs): {path}")
    if is_run_dir(path) or is_tb_run(path):
        return [path]
    found = []
    base_depth = path.rstrip(os.sep).count(os.sep)
    for dirpath, dirnames, _ in os.walk(path, followlinks=False):
        dirnames.sort()
        if is_run_dir(dirpath):
            found.append(dirpath)
            dirnames[:] = []  # a run's own folder holds no further runs
        elif dirpath.count(os.sep) - base_depth >= max_depth:
            dirnames[:] = []
    found += find_tb_runs(path, max_depth + 1)
    if not found:
        raise InputError(f"no traindoc runs and no TensorBoard event files under {path} "
                         "(a run folder has a meta.json; a TensorBoard run has events.out.tfevents.* files)")
    return sorted(set(found))


def open_reader(path: str):
    """An incremental reader for a run folder: RunReader or TBRunReader, same surface."""
    return RunReader(path) if is_run_dir(path) else TBRunReader(path)


def load(path: str) -> tuple[RunSeries, list[str]]:
    """Read one run folder of either kind: (series, lines about unreadable parts)."""
    reader = open_reader(path)
    reader.poll()
    return reader.series(), list(reader.problems)


def diagnose_path(path: str, cfg: Thresholds = DEFAULT) -> list[RunReport]:
    """Diagnose every run under `path`. A run that cannot be read gets an error, the rest go on."""
    reports = []
    for run_path in find_runs(path):
        name = os.path.relpath(run_path, path) if run_path != path else os.path.basename(os.path.normpath(path))
        try:
            run, problems = load(run_path)
            d = diagnose_run(run, cfg)
            reports.append(RunReport(run.name, run_path, d.findings, warnings=problems, skipped=d.skipped,
                                     diagnosed=d.diagnosed, found=series_found(run)))
        except (RunFormatError, OSError, ValueError) as exc:
            reports.append(RunReport(name, run_path, error=str(exc)))
    return reports
