"""Curve helpers shared by the rules: the loss curve with its noise, trends, LR cuts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from traindoc import format as fmt
from traindoc.series import RunSeries
from traindoc.windows import window_stats


@dataclass
class Curve:
    """Window means of a noisy per-batch series, with their standard errors."""

    steps: np.ndarray
    mean: np.ndarray
    se: np.ndarray  # standard error of each window mean (NaN where unknown)
    #: the spread of the loss inside each window (NaN where unknown): the band the charts draw
    std: np.ndarray | None = None
    #: the highest loss inside each window (NaN where unknown): what a one-batch spike raises
    peak: np.ndarray | None = None

    def __post_init__(self):
        if self.std is None:
            self.std = np.full(len(self.steps), np.nan)
        if self.peak is None:
            self.peak = np.full(len(self.steps), np.nan)

    def __len__(self) -> int:
        return len(self.steps)

    def after(self, step: float) -> "Curve":
        """The part of the curve at or after `step`."""
        return self._where(self.steps >= step)

    def between(self, a: float, b: float) -> "Curve":
        """The part of the curve with a <= step <= b."""
        return self._where((self.steps >= a) & (self.steps <= b))

    def _where(self, k: np.ndarray) -> "Curve":
        return Curve(self.steps[k], self.mean[k], self.se[k], self.std[k], self.peak[k])

    def value_at(self, step: float) -> float:
        """Mean of the window that contains `step` (nearest at or after)."""
        i = min(int(np.searchsorted(self.steps, step)), len(self.steps) - 1)
        return float(self.mean[i])


def loss_curve(run: RunSeries) -> Curve | None:
    """The train loss as window means + standard errors.

    Uses the collector's windows (mean, var, count) when present; otherwise builds
    rolling windows from a per-step series (TensorBoard runs), so noise is known either way.
    """
    c = raw_loss_curve(run)
    if c is None:
        return None
    keep = np.isfinite(c.mean)  # a NaN/inf window is reported by lr_too_high; the rest is judged
    return c if keep.all() else c._where(keep)


def raw_loss_curve(run: RunSeries) -> Curve | None:
    """The loss curve with its non-finite windows (what lr_too_high looks at for divergence).
    Computed once per run: every rule asks for it."""
    if "raw_loss_curve" not in run.memo:
        run.memo["raw_loss_curve"] = _raw_loss_curve(run)
    return run.memo["raw_loss_curve"]


def _raw_loss_curve(run: RunSeries) -> Curve | None:
    mean_key = fmt.LOSS_WINDOW + "/mean"
    if run.has(mean_key):
        m = run.get(mean_key)
        var = run.get(fmt.LOSS_WINDOW + "/var").reindex(m.index)
        cnt = run.get(fmt.LOSS_WINDOW + "/count").reindex(m.index)
        se = np.sqrt(var.to_numpy() / cnt.clip(lower=1).to_numpy())
        peak = run.get(fmt.LOSS_WINDOW + "/max").reindex(m.index).to_numpy(dtype=float) \
            if run.has(fmt.LOSS_WINDOW + "/max") else None
        return Curve(m.index.to_numpy(), m.to_numpy(dtype=float), se, np.sqrt(var.clip(lower=0).to_numpy()), peak)
    if run.has(fmt.LOSS_RAW):
        raw = run.get(fmt.LOSS_RAW)
        return rolling_curve(raw)
    return None


#: A per-step loss without recorded windows is judged in about this many windows; one with
#: fewer than twice as many points (per-epoch logs) is judged point by point.
ROLLING_WINDOWS = 100


def rolling_curve(raw: pd.Series, target_windows: int = ROLLING_WINDOWS) -> Curve:
    """Group a per-step series into about `target_windows` windows of mean and SE."""
    n = len(raw)
    width = max(1, n // target_windows)
    if width == 1:  # too few points to estimate noise per window: use neighbours' spread
        vals = raw.to_numpy(dtype=float)
        resid = np.abs(np.diff(vals)) / np.sqrt(2) if n > 1 else np.array([np.nan])
        se = np.full(n, np.nanmedian(resid) if len(resid) else np.nan)
        return Curve(raw.index.to_numpy(), vals, se, peak=vals)
    last, st = window_stats(raw.to_numpy(dtype=float), width)
    return Curve(raw.index.to_numpy()[last], st["mean"], np.sqrt(st["var"] / st["count"]), np.sqrt(st["var"]),
                 st["max"])


def noise(c: Curve) -> float:
    """Typical standard error of a window mean: recorded SE, or the scatter of neighbours."""
    rec = np.nanmedian(c.se) if len(c) and np.isfinite(c.se).any() else np.nan
    if len(c) > 2:
        scatter = np.nanmedian(np.abs(np.diff(c.mean, 2))) / np.sqrt(6)  # second differences cancel trends
    else:
        scatter = np.nan
    vals = [v for v in (rec, scatter) if np.isfinite(v)]
    return float(max(vals)) if vals else 0.0


def fitted_change(c: Curve) -> tuple[float, float]:
    """(change over the segment by a least-squares line, its standard error)."""
    if len(c) < 3:
        return 0.0, float("inf")
    x = c.steps.astype(float)
    y = c.mean
    A = np.vstack([x, np.ones_like(x)]).T
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    slope = coef[0]
    resid = y - A @ coef
    s = max(np.sqrt(np.sum(resid ** 2) / max(len(x) - 2, 1)), noise(c))
    se_slope = s / np.sqrt(np.sum((x - x.mean()) ** 2))
    span = x[-1] - x[0]
    return float(slope * span), float(se_slope * span)


def lr_series(run: RunSeries) -> pd.Series | None:
    """The main learning rate of the first optimizer, if recorded: its first parameter group, or,
    where three or more groups were logged and they disagree, the group that follows the median
    of all of them at most steps. A scheduler scales every group alike; one group off on its own
    (YOLO's bias LR warming down from 0.1 while the weights warm up) is not the run's schedule.
    Computed once per run: several rules and the sweep digest ask for it."""
    if "lr_series" not in run.memo:
        run.memo["lr_series"] = _lr_series(run)
    return run.memo["lr_series"]


def _lr_series(run: RunSeries) -> pd.Series | None:
    groups = sorted((k for k in run.with_prefix(fmt.LR_PREFIX + "pg") if k[len(fmt.LR_PREFIX) + 2:].isdigit()),
                    key=lambda k: int(k[len(fmt.LR_PREFIX) + 2:]))
    if len(groups) >= 3:
        frame = pd.concat([run.get(k) for k in groups], axis=1, join="inner")
        if len(frame):
            vals = frame.to_numpy(dtype=float)
            med = np.median(vals, axis=1, keepdims=True)
            close = np.isclose(vals, med, rtol=1e-6, atol=0).sum(axis=0)
            return run.get(groups[int(np.argmax(close))])
    for key in (fmt.LR_PREFIX + "pg0", "lr"):
        if run.has(key):
            return run.get(key)
    return None


def written_on_change(run: RunSeries) -> bool:
    """True for collector runs (hyperparameters written when they change), False for imports."""
    return run.meta.get("source", "traindoc") == "traindoc"


def lr_cuts(lr: pd.Series, last_step: int, factor: float, span_frac: float,
            on_change: bool = True) -> list[tuple[int, int, float, float]]:
    """Sharp LR cuts: one jump between consecutive recorded values to `factor` or less.

    Returns (step of the cut, same step, LR before, LR after). Series written on change
    (the collector's) hold the old value until the jump; sampled series (TensorBoard,
    `on_change=False`) must show the jump within `span_frac` of the run. It must start from at least
    1% of the peak LR so far, so warm-ups (rises), smooth schedules (small steps) and the
    last steps of a cosine (tiny values) are not cuts.
    """
    if lr is None or len(lr) < 2:
        return []
    span = max(1, int(span_frac * max(last_step, 1)))
    steps = lr.index.to_numpy()
    vals = lr.to_numpy(dtype=float)
    peak = np.maximum.accumulate(vals)
    before, after = vals[:-1], vals[1:]
    with np.errstate(invalid="ignore"):
        hit = (before >= 0.01 * peak[:-1]) & (before > 0) & (after <= factor * before)
    if not on_change:
        hit &= np.diff(steps) <= span + 1
    return [(int(steps[i + 1]), int(steps[i + 1]), float(before[i]), float(after[i])) for i in np.flatnonzero(hit)]


def first_loss(run: RunSeries, c: Curve) -> float:
    """The loss the run started from: the first batch if recorded, else the first window."""
    s = series_or_none(run, fmt.LOSS_FIRST, fmt.LOSS_RAW)
    v = float(s.iloc[0]) if s is not None else float("nan")
    return v if np.isfinite(v) else float(c.mean[0])


def num_classes(run: RunSeries) -> int | None:
    """C from the metadata or the config, if the run says: the one lookup every rule uses."""
    for source in (run.meta, run.meta.get("config") or {}):
        for key in ("num_classes", "n_classes", "classes"):
            v = source.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and 2 <= v < 1e12:
                return int(v)  # an infinite or absurd count (a hand-written config) is no count
    return None


def series_or_none(run: RunSeries, *keys: str) -> pd.Series | None:
    """The first of `keys` that the run has, without NaNs."""
    for k in keys:
        if run.has(k):
            s = run.get(k).dropna()
            if len(s):
                return s
    return None


def chance_level(run, late_from: float, spread: float = 0.01) -> tuple[int, float] | None:
    """(C, the accuracy it ends at) when the run's accuracy sits flat at 1/C over its second
    half, C from the run's number of classes or read off that level (2 to 1000 classes)."""
    acc = series_or_none(run, fmt.VAL_ACC, fmt.TRAIN_ACC_EPOCH, fmt.TRAIN_ACC)
    if acc is None or len(acc) < 4:
        return None
    late = acc[acc.index >= late_from].to_numpy(dtype=float)
    if len(late) < 2 or float(np.std(late)) > spread:
        return None
    level = float(late.mean())
    n = num_classes(run) or (int(round(1 / level)) if level > 0 else 0)
    if not 2 <= n <= 1000 or abs(level - 1 / n) > 0.015:
        return None
    return n, level
