"""Smoothing and thinning for the browser. The rules never see these: they get full series.

Smoothing happens on the full series first; thinning then keeps the min and the max of
each bucket (so spikes survive) and always the first and last points. Inside `window((x0, x1))`
thinning keeps only the steps in [x0, x1] (and one point either side, so lines run to the
edges): a zoomed chart gets its points from that range alone, as fine as the full view's.
"""

from __future__ import annotations

import contextlib
import contextvars

import numpy as np
import pandas as pd

_WINDOW: contextvars.ContextVar[tuple[float, float] | None] = contextvars.ContextVar("window", default=None)


@contextlib.contextmanager
def window(steps: tuple[float, float] | None):
    """Figures built inside this block show steps (first, last) only (None: every step)."""
    token = _WINDOW.set(steps)
    try:
        yield
    finally:
        _WINDOW.reset(token)


def in_window(x: np.ndarray) -> slice:
    """The slice of sorted steps `x` that the current window shows, one point either side."""
    w = _WINDOW.get()
    if w is None or len(x) == 0:
        return slice(None)
    lo = max(0, int(np.searchsorted(x, w[0], side="left")) - 1)
    hi = min(len(x), int(np.searchsorted(x, w[1], side="right")) + 1)
    return slice(lo, hi)


def shown(x: np.ndarray) -> np.ndarray:
    """Which of the steps `x` the current window shows (markers: no point outside it)."""
    w = _WINDOW.get()
    x = np.asarray(x)
    return np.ones(len(x), dtype=bool) if w is None else (x >= w[0]) & (x <= w[1])


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
    """(x, y) reduced to about `max_points` points with min/max buckets (in the current window)."""
    x, y = np.asarray(x), np.asarray(y)
    part = in_window(x)
    x, y = x[part], y[part]
    idx = minmax_indices(np.asarray(y, dtype=float), max_points)
    return x[idx], y[idx]
