"""A run as named series (`RunSeries`), what every reader produces and the rules and charts
work on, and `RunFormatError`, what every reader raises for a path it cannot read. Below the
readers: it imports nothing of traindoc's."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd


class RunFormatError(Exception):
    """A path that is not a readable run (missing, empty, newer schema, corrupt header)."""


@dataclass
class RunSeries:
    """A run as named series: what the rules and the app work on.

    `get(key)` returns a float Series indexed by step, sorted, last value kept
    where a step was written twice. `keys` lists what the run has.
    """

    name: str
    path: str
    meta: dict
    _data: dict
    #: values derived from the (never changing) data, computed once: the rules' loss curve
    memo: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, meta: dict, path: str) -> "RunSeries":
        """Split a long frame (step, wall, key, value) into per-key series."""
        data = {}
        if len(frame):
            codes = frame["key"].cat.codes.to_numpy()
            order = np.argsort(codes, kind="stable")
            sc = codes[order]
            bounds = np.flatnonzero(np.diff(sc)) + 1
            starts = np.concatenate([[0], bounds])
            ends = np.concatenate([bounds, [len(sc)]])
            steps = frame["step"].to_numpy()[order]
            values = frame["value"].to_numpy()[order]
            walls = frame["wall"].to_numpy()[order]
            cats = frame["key"].cat.categories
            for a, b in zip(starts, ends):
                data[cats[sc[a]]] = (steps[a:b], values[a:b], walls[a:b])
        name = str(meta.get("name") or os.path.basename(os.path.normpath(path)))
        return cls(name=name, path=path, meta=meta, _data=data)

    @classmethod
    def from_dict(cls, name: str, series: dict, meta: dict | None = None, path: str = "") -> "RunSeries":
        """Build from {key: pandas Series indexed by step} (used by other readers and tests)."""
        data = {}
        for k, s in series.items():
            steps = np.asarray(s.index, dtype=np.int64)
            data[k] = (steps, np.asarray(s.to_numpy(), dtype=float), np.full(len(steps), np.nan))
        return cls(name=name, path=path, meta=dict(meta or {}), _data=data)

    @property
    def keys(self) -> list[str]:
        """Names of the series this run has."""
        return sorted(self._data)

    def has(self, key: str) -> bool:
        """True if the run has a non-empty series `key`."""
        return key in self._data and len(self._data[key][0]) > 0

    def get(self, key: str) -> pd.Series:
        """Series `key` indexed by step (empty float Series if absent)."""
        if key not in self._data:
            return pd.Series(dtype=float, name=key)
        steps, values, _ = self._data[key]
        s = pd.Series(values, index=pd.Index(steps, name="step"), name=key)
        if not s.index.is_monotonic_increasing:
            s = s.sort_index(kind="stable")
        if s.index.has_duplicates:
            s = s[~s.index.duplicated(keep="last")]
        return s

    def arrays(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of `key` as numpy arrays, in the same order and with the same last-kept
        duplicates as `get` (for code that runs per layer and cannot afford a Series each)."""
        if key not in self._data:
            return np.zeros(0, np.int64), np.zeros(0)
        steps, values, _ = self._data[key]
        if len(steps) > 1 and (np.diff(steps) <= 0).any():
            order = np.argsort(steps, kind="stable")
            steps, values = steps[order], values[order]
            last = np.r_[steps[1:] != steps[:-1], True]
            steps, values = steps[last], values[last]
        return steps, values

    def walls(self, key: str) -> pd.Series:
        """Wall times of series `key`, indexed by step."""
        if key not in self._data:
            return pd.Series(dtype=float, name=key)
        steps, _, walls = self._data[key]
        return pd.Series(walls, index=pd.Index(steps, name="step"), name=key).sort_index(kind="stable")

    def with_prefix(self, prefix: str) -> list[str]:
        """Keys that start with `prefix`."""
        return [k for k in self.keys if k.startswith(prefix)]

    @property
    def last_step(self) -> int:
        """Largest step seen in any series (0 if none)."""
        return max((int(v[0].max()) for v in self._data.values() if len(v[0])), default=0)
