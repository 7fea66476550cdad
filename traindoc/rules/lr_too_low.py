"""lr_too_low: the loss falls, but too slowly: still steadily falling at the end, far from a
plateau; or it has barely moved from where it started, yet falls steadily all along (an LR
orders of magnitude too low crawls; a model that cannot learn is flat or stalls)."""

from __future__ import annotations

import numpy as np

from .base import Finding, Thresholds
from .curves import first_loss, fitted_change, loss_curve, noise

ID = "lr_too_low"
CHARTS = ('loss', 'lr')  # the run page charts that shade this rule's findings
NEEDS = ("train loss",)


def check(run, cfg: Thresholds) -> list[Finding]:
    """A nearly straight descent: little of the drop early, a steady share of it still at the end."""
    c = loss_curve(run)
    if c is None or len(c) < cfg.min_windows or not np.isfinite(c.mean).all():
        return []
    crawl = _crawl(run, c, cfg)
    if crawl:
        return [crawl]
    last = c.steps[-1]
    start = c.mean[0]
    first_fall, last_fall, tail = _thirds(c)
    total = start - tail
    if total <= cfg.noise_sigmas * noise(c):
        return []  # not falling at all: another rule's business
    early_share = (start - c.value_at(last / 3)) / total
    late_change, late_se = fitted_change(c.after(0.75 * last))
    late_share = -late_change / total
    if early_share < cfg.low_early_share and late_share >= cfg.low_late_share \
            and -late_change > cfg.noise_sigmas * late_se and _straight(first_fall, last_fall, cfg):
        return [Finding(ID, "warning", (int(c.steps[0]), int(last)), {
            "first_loss": start, "final_loss": tail,
            "share_of_drop_in_first_third": early_share,
            "share_of_drop_in_last_quarter": late_share,
            "last_quarter_change_in_se": -late_change / late_se if late_se else float("inf"),
        }, "Raise the learning rate (try 3x to 10x): the loss is still falling in a straight line at the end.")]
    return []


def _thirds(c) -> tuple[float, float, float]:
    """(the fall over the run's first third, the fall over its last third down to the tail, the
    tail: the mean of the last tenth of the windows)."""
    s0, s1 = float(c.steps[0]), float(c.steps[-1])
    tail = float(c.mean[-max(1, len(c) // 10):].mean())
    return float(c.mean[0] - c.value_at(s0 + (s1 - s0) / 3)), float(c.value_at(s0 + 2 * (s1 - s0) / 3) - tail), tail


def _straight(first: float, last: float, cfg: Thresholds) -> bool:
    """Straight over its whole length: the first third and the last third of the run (their
    falls, from `_thirds`) each bring at least `low_thirds_ratio` of what the other brings. A
    curve that fell most in its first two thirds and is now flattening is settling
    (train_longer's business if it still gains); one that sat on a plateau for its first third
    and then fell did not crawl, it started late."""
    return first > 0 and last > 0 and min(first, last) >= cfg.low_thirds_ratio * max(first, last)


def _crawl(run, c, cfg: Thresholds) -> Finding | None:
    """Under `low_moved` of the first loss gained by the end, with a fall beyond noise over the
    whole run and still over its second half, at a pace that does not slow down (the last third
    falls at least half as far as the first). The first loss is the first batch's where it was
    recorded: a loss that fell from ln(vocabulary) to the labels' entropy inside the first window
    and then crept moved a lot, fast, and is no crawl. A loss that fell early and flattens
    (fine-tuning a pretrained model) is no crawl either."""
    start, last = first_loss(run, c), float(c.steps[-1])
    first, late, tail = _thirds(c)
    if start == 0 or (start - tail) / abs(start) >= cfg.low_moved:
        return None
    if first > 0 and late < 0.5 * first:
        return None
    whole, whole_se = fitted_change(c)
    half, half_se = fitted_change(c.after(last / 2))
    if -whole > cfg.noise_sigmas * whole_se and -half > cfg.crawl_half_sigmas * half_se:
        return Finding(ID, "warning", (int(c.steps[0]), int(last)), {
            "first_loss": start, "final_loss": tail, "share_of_first_loss_gained": (start - tail) / abs(start),
            "whole_run_fall_in_se": -whole / whole_se if whole_se else float("inf"),
            "second_half_fall_in_se": -half / half_se if half_se else float("inf"),
        }, "Raise the learning rate (try 10x or more): the loss has barely moved from where it started, "
           "though it falls steadily, so the updates are far too small.")
    return None
