"""Finding runs under a path and loading one: every format's discovery, one reader surface
(`open_reader`), one way of naming a run (`run_name`). Above the readers, below the catalog and
the orchestration (`diagnose`): it imports no rule."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from . import logs
from .reader import RunReader, is_run_dir
from .series import RunSeries
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
    spikes: list = field(default_factory=list)  # recovered loss spikes, as `Spike.to_dict()`

    def to_dict(self) -> dict:
        """The `--json` shape of one run."""
        d = {"run": self.name, "path": self.path, "diagnosed": self.diagnosed,
             "findings": [f.to_dict() for f in self.findings], "skipped": self.skipped, "spikes": self.spikes}
        if not self.diagnosed:
            d["found"] = self.found
        if self.error:
            d["error"] = self.error
        return d


def is_run(path: str) -> bool:
    """True for a run of a format read folder by folder (traindoc, the log formats); TensorBoard
    runs are found by `find_tb_runs`."""
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
    if is_run(path) or is_tb_run(path):
        return [path], []
    found = []
    base_depth = path.rstrip(os.sep).count(os.sep)
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        dirnames.sort()
        if dirpath != path and is_run(dirpath):
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
    return runs_and_others(path, max_depth)[0]


def runs_and_others(path: str, max_depth: int = 4) -> tuple[list[str], list[str]]:
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


def run_name(path: str, root: str) -> str:
    """The one way a run is named: its path relative to `root` with '/', or the root's own folder
    name when the root itself is the run (then it is the only run under it)."""
    rel = os.path.relpath(path, root).replace(os.sep, "/")
    return os.path.basename(os.path.normpath(root)) if rel == "." else rel


def name_runs(paths: list[str], root: str) -> dict[str, str]:
    """name -> path of runs under `root` (see `run_name`)."""
    return {run_name(p, root): p for p in paths}
