"""lr_too_low: the loss falls, but too slowly: still steadily falling at the end, far from a plateau."""

from __future__ import annotations

import numpy as np

from .base import Finding, Thresholds
from .curves import fitted_change, loss_curve, noise

ID = "lr_too_low"
NEEDS = ("train loss",)


def check(run, cfg: Thresholds) -> list[Finding]:
    """A nearly straight descent: little of the drop early, a steady share of it still at the end."""
    c = loss_curve(run)
    if c is None or len(c) < cfg.min_windows or not np.isfinite(c.mean).all():
        return []
    last = c.steps[-1]
    start = c.mean[0]
    tail = c.mean[-max(1, len(c) // 10):].mean()
    total = start - tail
    if total <= cfg.noise_sigmas * noise(c):
        return []  # not falling at all: another rule's business
    early_share = (start - c.value_at(last / 3)) / total
    late_change, late_se = fitted_change(c.after(0.75 * last))
    late_share = -late_change / total
    if early_share < cfg.low_early_share and late_share >= cfg.low_late_share \
            and -late_change > cfg.noise_sigmas * late_se:
        return [Finding(ID, "warning", (int(c.steps[0]), int(last)), {
            "first_loss": start, "final_loss": tail,
            "share_of_drop_in_first_third": early_share,
            "share_of_drop_in_last_quarter": late_share,
            "last_quarter_change_in_se": -late_change / late_se if late_se else float("inf"),
        }, "Raise the learning rate (try 3x to 10x): the loss is still falling in a straight line at the end.")]
    return []
