"""early_decay: the LR was cut while the loss was still falling fast, and after the cut it flattens."""

from __future__ import annotations

from .base import Finding, Thresholds
from .curves import fitted_change, loss_curve, lr_cuts, lr_series, written_on_change

ID = "early_decay"
NEEDS = ("train loss", "learning rate")


def check(run, cfg: Thresholds) -> list[Finding]:
    """Compare the loss's rate of fall before and after each sharp LR cut."""
    c = loss_curve(run)
    lr = lr_series(run)
    if c is None or lr is None or len(c) < cfg.min_windows:
        return []
    last = int(c.steps[-1])
    span = max(0.1 * last, 3 * (c.steps[1] - c.steps[0]) if len(c) > 1 else 1)
    for s, e, before, after in lr_cuts(lr, last, cfg.cut_factor, cfg.cut_span_frac, written_on_change(run)):
        pre = c.between(s - span, s)
        post = c.between(e + 0.5 * span, last)
        if len(pre) < 3 or len(post) < 3:
            continue
        pre_change, pre_se = fitted_change(pre)
        post_change, _ = fitted_change(post)
        level = pre.mean[0]  # where the loss stood when the span before the cut began
        pre_rate = -pre_change / (pre.steps[-1] - pre.steps[0])
        post_rate = -post_change / (post.steps[-1] - post.steps[0])
        still_fast = -pre_change / level >= cfg.decay_pre_rate and -pre_change > cfg.noise_sigmas * pre_se
        if still_fast and post_rate <= cfg.decay_post_ratio * pre_rate:
            return [Finding(ID, "warning", (s, last), {
                "cut_step": s, "lr_before": before, "lr_after": after,
                "loss_fall_before_cut_pct": 100 * -pre_change / level,
                "fall_rate_after_over_before": post_rate / pre_rate,
            }, f"Decay later: the LR was cut at step {s} while the loss was still falling fast, "
               "and progress stalled after the cut.")]
    return []
