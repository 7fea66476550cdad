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
    """Indices to keep: first, last, and each bucket's argmin and argmax, in order.

    Vectorised over equal-width buckets; NaN/inf points are kept where they fall (a sample
    of them), so a divergence still shows.
    """
    y = np.asarray(y, dtype=float)
    n = len(y)
    if n <= max_points:
        return np.arange(n)
    buckets = max(1, (max_points - 2) // 2)
    width = -(-(n - 2) // buckets)  # ceil
    inner = y[1:n - 1]
    pad = buckets * width - len(inner)
    lo = np.concatenate([np.where(np.isfinite(inner), inner, np.inf), np.full(pad, np.inf)]).reshape(buckets, width)
    hi = np.concatenate([np.where(np.isfinite(inner), inner, -np.inf), np.full(pad, -np.inf)]).reshape(buckets, width)
    base = 1 + np.arange(buckets) * width
    keep = [np.array([0, n - 1]), base + lo.argmin(axis=1), base + hi.argmax(axis=1)]
    bad = np.flatnonzero(~np.isfinite(y))
    if len(bad):
        keep.append(bad[np.linspace(0, len(bad) - 1, min(len(bad), 50)).astype(int)])
    idx = np.unique(np.concatenate(keep))
    return idx[idx < n]


def thin(x: np.ndarray, y: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) reduced to about `max_points` points with min/max buckets."""
    idx = minmax_indices(np.asarray(y, dtype=float), max_points)
    return np.asarray(x)[idx], np.asarray(y)[idx]
