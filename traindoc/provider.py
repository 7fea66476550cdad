"""One run provider per root, for every page and the CLI (in the spirit of TensorBoard's
DataProvider): `list_runs` names the runs, `read` gives one run's series, cut to the keys, the
step range and the number of points asked for. Names come from the catalog's last listing of
the root (one naming, `discovery.run_name`); a name is only ever looked up, never joined onto
a path, and a run whose real path leaves the root (a symlink) is not listed."""

from __future__ import annotations

import hashlib
import os
import threading

import numpy as np

from .catalog import Catalog
from .catalog.changes import signature
from .discovery import InputError, find_runs, load, name_runs
from .series import RunSeries


def _inside(path: str, root: str) -> bool:
    real = os.path.realpath(path)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _contained(path: str, root: str) -> bool:
    """The run and every file directly in it resolve inside `root`."""
    if not _inside(path, root):
        return False
    try:
        names = os.listdir(path) if os.path.isdir(path) else []
    except OSError:
        return True
    return all(_inside(os.path.join(path, n), root) for n in names)


class RunProvider:
    """The runs of one root. Thread-safe; share one per root (`provider_for`)."""

    def __init__(self, root: str, cache: str | None = None):
        self.root = os.path.realpath(root)
        self.catalog = Catalog(self.root, cache)
        self._lock = threading.Lock()
        self._names: dict[str, str] | None = None

    def refresh(self, progress=None):
        """Bring the catalog up to date (reads only the runs whose files changed)."""
        out = self.catalog.refresh(progress=progress)
        with self._lock:
            self._names = None
        return out

    def list_runs(self, refresh: bool = True) -> dict[str, str]:
        """name -> path of every run under the root (after a refresh unless `refresh` is False)."""
        if refresh:
            self.refresh()
        with self._lock:
            if self._names is None:
                rows, _ = self.catalog.query(limit=1 << 30)
                names = {r["name"]: r["path"] for r in rows}
                if self.catalog.odd_names():  # names SQLite cannot hold: found by a walk instead
                    names = {**self._walk(), **names}
                self._names = {n: p for n, p in names.items() if _contained(p, self.root)}
            return dict(self._names)

    def _walk(self) -> dict[str, str]:
        """name -> path of every run a walk of the root finds (no run is read)."""
        try:
            return name_runs(find_runs(self.root), self.root)
        except InputError:
            return {}

    def path_of(self, name: str) -> str | None:
        """The path of run `name` from the last listing. A name not known yet (a run that just
        appeared, or a fresh index) is looked for by a walk of the root that reads no run: the
        page of one run, opened from a link, does not wait for every run to be indexed."""
        names = self.list_runs(refresh=False)
        if name not in names:
            walked = self._walk()
            with self._lock:
                self._names = {n: p for n, p in walked.items() if _contained(p, self.root)}
                names = dict(self._names)
        return names.get(name)

    def fingerprint(self, name: str) -> str | None:
        """A short hash of what run `name` shows, from file sizes and mtimes only (no read): the
        run's files and its siblings' (they add findings). Equal fingerprints, same data."""
        path = self.path_of(name)
        if path is None:
            return None
        folder = os.path.dirname(os.path.normpath(path))
        names = self.list_runs(refresh=False)
        beside = sorted(p for p in names.values() if os.path.dirname(os.path.normpath(p)) == folder)
        h = hashlib.sha1()
        for p in beside or [path]:
            h.update(f"{p}\0{signature(p)}\n".encode("utf-8", "surrogateescape"))
        return h.hexdigest()[:20]

    def read(self, name: str, keys=None, steps: tuple[float, float] | None = None,
             max_points: int | None = None) -> RunSeries:
        """Run `name` as series: only `keys` (all when None), only steps in `steps` (first,
        last), at most `max_points` per key (evenly strided, the last point kept). Raises
        KeyError for a name that is not a run here, the readers' errors for a run that cannot
        be read."""
        path = self.path_of(name)
        if path is None:
            raise KeyError(name)
        run, _ = load(path)
        return cut(run, keys, steps, max_points)


def cut(run: RunSeries, keys=None, steps=None, max_points: int | None = None) -> RunSeries:
    """`run` restricted to `keys`, a step range and a number of points per key."""
    data = {}
    for k in run.keys if keys is None else [k for k in keys if run.has(k)]:
        s, v, w = run._data[k]
        if steps is not None:
            m = (s >= steps[0]) & (s <= steps[1])
            s, v, w = s[m], v[m], w[m]
        if max_points is not None and len(s) > max_points > 0:
            idx = np.unique(np.r_[np.linspace(0, len(s) - 1, max_points).astype(np.int64), len(s) - 1])
            s, v, w = s[idx], v[idx], w[idx]
        data[k] = (s, v, w)
    return RunSeries(name=run.name, path=run.path, meta=run.meta, _data=data)


_PROVIDERS: dict[str, RunProvider] = {}
_GUARD = threading.Lock()


def provider_for(root: str) -> RunProvider:
    """The process's one provider of `root`."""
    real = os.path.realpath(root)
    with _GUARD:
        if real not in _PROVIDERS:
            _PROVIDERS[real] = RunProvider(real)
        return _PROVIDERS[real]
