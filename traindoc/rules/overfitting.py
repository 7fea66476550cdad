"""overfitting: train accuracy keeps rising while validation accuracy falls from its peak
(or train loss falls while validation loss rises)."""

from __future__ import annotations

import numpy as np

from traindoc import format as fmt

from .base import Finding, Thresholds
from .curves import loss_curve, series_or_none

ID = "overfitting"
CHARTS = ('loss', 'acc')  # the run page charts that shade this rule's findings
NEEDS = ("validation accuracy or loss", "train accuracy or loss", "3+ validation evaluations")


def _advice(best: int) -> str:
    return (f"Regularize (weight decay, dropout, augmentation), add data, or stop early at step {best}, "
            "where validation was best.")


def check(run, cfg: Thresholds) -> list[Finding]:
    """Accuracy first; validation loss as the fallback signal."""
    return _by_accuracy(run, cfg) or _by_loss(run, cfg)


def _train_acc(run):
    return series_or_none(run, fmt.TRAIN_ACC, fmt.TRAIN_ACC_EPOCH)


def _past_best(v, cfg: Thresholds, higher_is_better: bool, worse):
    """(step, value) of the best evaluation, if the last `overfit_confirm` ones after it are
    all `worse(value_after, best_value)`; else None."""
    if len(v) < 2 + cfg.overfit_confirm:
        return None
    best = int(v.idxmax() if higher_is_better else v.idxmin())
    value = float(v.loc[best])
    after = v[v.index > best]
    if len(after) < cfg.overfit_confirm or not worse(after.iloc[-cfg.overfit_confirm:], value).all():
        return None
    return best, value


#: A validation accuracy with this many points or more was logged per batch: each point is one
#: batch's accuracy (steps of 1/batch size), so its best and last are read from running means
#: over a twentieth of the series, never from one lucky batch.
PER_BATCH_EVALS = 100


def _smoothed(v):
    if v is None or len(v) < PER_BATCH_EVALS:
        return v
    return v.rolling(len(v) // 20, min_periods=len(v) // 20).mean().dropna()


def _by_accuracy(run, cfg: Thresholds) -> list[Finding]:
    va = _smoothed(series_or_none(run, fmt.VAL_ACC))
    ta = _train_acc(run)
    found = None if va is None or ta is None else _past_best(
        va, cfg, True, lambda later, peak: later <= peak - cfg.overfit_acc_drop)
    if found is None:
        return []
    best, peak = found
    ta_best = float(ta[ta.index <= best].iloc[-3:].mean()) if (ta.index <= best).any() else float(ta.iloc[0])
    ta_end = float(ta.iloc[-3:].mean())
    if ta_end < ta_best + cfg.overfit_train_rise:
        return []  # train accuracy did not keep rising: that is not overfitting
    return [Finding(ID, "warning", (best, int(va.index[-1])), {
        "best_step": best, "best_val_acc": peak, "final_val_acc": float(va.iloc[-1]),
        "train_acc_at_best": ta_best, "final_train_acc": ta_end,
    }, _advice(best))]


def _steady_rise(v, cfg: Thresholds):
    """(step, value) of the validation loss's minimum when what follows it is a steady rise
    rather than a bad evaluation or two: it fills `overfit_confirm` + 1 evaluations or a fifth
    of the run, most of its steps go up, and it ends `overfit_loss_rise` / 2 above the minimum
    and beyond the series' own scatter. A long steady rise counts at half the rise that a short
    one needs (`_past_best`); else None."""
    if len(v) < 3:
        return None
    best = int(v.idxmin())
    low = float(v.loc[best])
    after = v[v.index > best]
    span = float(v.index[-1] - v.index[0]) or 1.0
    if low <= 0 or len(after) < 2 or (len(after) <= cfg.overfit_confirm and (v.index[-1] - best) / span < 0.2):
        return None
    tail = after.to_numpy(dtype=float)
    steps_up = np.diff(np.r_[low, tail]) > 0
    end = float(tail[-min(2, len(tail)):].mean())
    scatter = float(np.median(np.abs(np.diff(v.to_numpy(dtype=float), 2))) / np.sqrt(6)) if len(v) >= 5 else 0.0
    if steps_up.mean() < 0.6 or end < low * (1 + cfg.overfit_loss_rise / 2) or end - low <= cfg.noise_sigmas * scatter:
        return None
    if tail[-1] <= low * (1 + cfg.overfit_loss_rise / 4):
        return None  # it came back down to the minimum at the end
    return best, low


def _by_loss(run, cfg: Thresholds) -> list[Finding]:
    vl = series_or_none(run, fmt.VAL_LOSS)
    c = loss_curve(run)
    found = None if vl is None or c is None else (_past_best(
        vl, cfg, False, lambda later, low: (later >= low * (1 + cfg.overfit_loss_rise)) & (low > 0))
        or _steady_rise(vl, cfg))
    if found is None:
        return []
    best, low = found
    if c.mean[-1] >= c.value_at(best):
        return []  # train loss did not keep falling
    return [Finding(ID, "warning", (best, int(vl.index[-1])), {
        "best_step": best, "best_val_loss": low, "final_val_loss": float(vl.iloc[-1]),
        "train_loss_at_best": c.value_at(best), "final_train_loss": float(c.mean[-1]),
    }, _advice(best))]
