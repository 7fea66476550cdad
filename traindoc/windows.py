"""Windows over a per-step series: the one builder behind the rules, the TensorBoard reader
and the charts, with the statistics the collector records for its own windows."""

from __future__ import annotations

import numpy as np

STATS = ("mean", "var", "min", "max", "count", "nonfinite")


def window_stats(values: np.ndarray, width: int) -> tuple[np.ndarray, dict]:
    """Consecutive windows of `width` points (the last may be shorter): (index of each
    window's last point, {stat: array}) with the collector's statistics; `var` is the
    population variance, as the collector records it."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    if n == 0:
        return np.zeros(0, dtype=int), {k: np.zeros(0) for k in STATS}
    width = max(1, int(width))
    starts = np.arange(0, n, width)
    count = np.diff(np.append(starts, n)).astype(float)
    mean = np.add.reduceat(v, starts) / count
    dev = v - np.repeat(mean, count.astype(int))  # two passes: no cancellation at large offsets
    var = np.add.reduceat(dev * dev, starts) / count
    out = {"mean": mean, "var": var, "min": np.minimum.reduceat(v, starts),
           "max": np.maximum.reduceat(v, starts), "count": count,
           "nonfinite": np.add.reduceat(~np.isfinite(v), starts).astype(float)}
    return np.minimum(starts + width, n) - 1, out
