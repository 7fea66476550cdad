"""Smoothing and thinning for the browser. The rules never see these: they get full series.

Smoothing happens on the full series first; thinning then keeps the min and the max of
each bucket (so spikes survive) and always the first and last points.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def ema(values: np.ndarray, weight: float) -> np.ndarray:
    """Debiased exponential moving average (TensorBoard's smoothing); weight 0 = none.

    adjust=True divides by the sum of the weights used so far, so the start is not
    pulled towards zero; NaN/inf points are skipped, not spread.
    """
    values = np.asarray(values, dtype=float)
    if weight <= 0 or len(values) == 0:
        return values.copy()
    finite = np.where(np.isfinite(values), values, np.nan)
    return pd.Series(finite).ewm(alpha=1 - weight, adjust=True, ignore_na=True).mean().to_numpy()


def minmax_indices(y: np.ndarray, max_points: int) -> np.ndarray:
    """Indices to keep: first, last, and each bucket's argmin and argmax, in order."""
    n = len(y)
    if n <= max_points:
        return np.arange(n)
    buckets = max(1, (max_points - 2) // 2)
    edges = np.linspace(1, n - 1, buckets + 1).astype(int)
    yy = np.where(np.isfinite(y), y, np.nan)
    keep = [0, n - 1]
    for a, b in zip(edges[:-1], edges[1:]):
        if b <= a:
            continue
        seg = yy[a:b]
        if np.isnan(seg).all():
            keep.append(a)
            continue
        keep.append(a + int(np.nanargmin(seg)))
        keep.append(a + int(np.nanargmax(seg)))
    # NaN/inf points are kept where they fall, so a divergence is still visible
    bad = np.flatnonzero(~np.isfinite(y))
    if len(bad):
        keep.extend(bad[np.linspace(0, len(bad) - 1, min(len(bad), 50)).astype(int)].tolist())
    return np.unique(np.asarray(keep))


def thin(x: np.ndarray, y: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) reduced to about `max_points` points with min/max buckets."""
    idx = minmax_indices(np.asarray(y, dtype=float), max_points)
    return np.asarray(x)[idx], np.asarray(y)[idx]
