"""early_decay: the LR was cut while the loss was still falling fast, and after the cut it
flattens; or, whatever the schedule's shape (cosine, linear, exponential, steps), the LR
reached a small fraction of its peak long before the end and progress stopped there."""

from __future__ import annotations

import numpy as np

from .base import Finding, Thresholds
from .curves import fitted_change, loss_curve, lr_cuts, lr_series, written_on_change

ID = "early_decay"
CHARTS = ('loss', 'lr')  # the run page charts that shade this rule's findings
NEEDS = ("train loss", "learning rate")


def check(run, cfg: Thresholds) -> list[Finding]:
    """Compare the loss's rate of fall before and after each sharp LR cut."""
    c = loss_curve(run)
    lr = lr_series(run)
    if c is None or lr is None or len(c) < cfg.min_windows:
        return []
    last = int(c.steps[-1])
    span = max(0.1 * last, 3 * (c.steps[1] - c.steps[0]) if len(c) > 1 else 1)
    cuts = lr_cuts(lr, last, cfg.cut_factor, cfg.cut_span_frac, written_on_change(run))
    found = _after_cuts(c, cuts, span, last, cfg)
    return found or _floor_early(c, lr, span, last, cfg)


def _judge(c, s: int, e: int, span: float, last: int, cfg: Thresholds, fast: bool):
    """(loss fall before s in % of its level, rate after e over rate before) when the loss was
    falling before s (fast, if asked) and fell at most decay_post_ratio as fast after; else None."""
    pre = c.between(s - span, s)
    post = c.between(e + 0.5 * span, last)
    if len(pre) < 3 or len(post) < 3:
        return None
    pre_change, pre_se = fitted_change(pre)
    post_change, _ = fitted_change(post)
    level = pre.mean[0]  # where the loss stood when the span before began
    if level <= 0 or -pre_change <= cfg.noise_sigmas * pre_se:
        return None  # not falling (more than noise) before: nothing was cut short
    if fast and -pre_change / level < cfg.decay_pre_rate:
        return None
    pre_rate = -pre_change / (pre.steps[-1] - pre.steps[0])
    post_rate = -post_change / (post.steps[-1] - post.steps[0])
    if post_rate > cfg.decay_post_ratio * pre_rate:
        return None
    return 100 * -pre_change / level, post_rate / pre_rate


def _after_cuts(c, cuts, span, last, cfg: Thresholds) -> list[Finding]:
    for s, e, before, after in cuts:
        if s > cfg.floor_by * last:
            continue  # a cut in the run's last stretch is a schedule's ending, not an early decay
        judged = _judge(c, s, e, span, last, cfg, fast=True)
        if judged:
            return [Finding(ID, "warning", (s, last), {
                "cut_step": s, "lr_before": before, "lr_after": after,
                "loss_fall_before_cut_pct": judged[0], "fall_rate_after_over_before": judged[1],
            }, f"Decay later: the LR was cut at step {s} while the loss was still falling fast, "
               "and progress stalled after the cut.")]
    return []


def _floor_early(c, lr, span, last, cfg: Thresholds) -> list[Finding]:
    """The first step where the LR is under floor_frac of its peak so far, if that comes
    before floor_by of the run and the loss stopped falling from there."""
    vals = lr.to_numpy(dtype=float)
    steps = lr.index.to_numpy()
    peak = np.maximum.accumulate(vals)
    low = np.flatnonzero((vals <= cfg.floor_frac * peak) & (peak > 0))
    if not len(low):
        return []
    at = int(steps[low[0]])
    if at > cfg.floor_by * last or (len(vals) > low[0] + 1 and vals[low[0]:].max() > cfg.floor_frac * peak[low[0]]):
        return []  # reached late, or the schedule went back up (a restart, a cycle)
    judged = _judge(c, at, at, span, last, cfg, fast=False)
    if not judged:
        return []
    return [Finding(ID, "warning", (at, last), {
        "floor_step": at, "floor_at_frac_of_run": at / last, "lr_peak": float(peak[low[0]]),
        "lr_at_floor": float(vals[low[0]]), "loss_fall_before_floor_pct": judged[0],
        "fall_rate_after_over_before": judged[1],
    }, f"Decay later or to a higher floor: the LR was under {cfg.floor_frac:.0%} of its peak by step {at} "
       f"({at / last:.0%} of the run) and progress stopped there while the loss had still been falling.")]
