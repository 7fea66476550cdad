"""initial_loss: the first loss is far from ln(C) for C classes (when C is known)."""

from __future__ import annotations

import math

from traindoc import format as fmt

from .base import Finding, Thresholds
from .curves import num_classes, series_or_none

ID = "initial_loss"
CHARTS = ('loss',)  # the run page charts that shade this rule's findings
NEEDS = ("first train loss", "number of classes")


def check(run, cfg: Thresholds) -> list[Finding]:
    """Compare the very first batch loss with ln C, the loss of a uniform prediction."""
    c = num_classes(run)
    first = series_or_none(run, fmt.LOSS_FIRST, fmt.LOSS_RAW)
    if c is None or first is None:
        return []
    value = float(first.iloc[0])
    expected = math.log(c)
    ratio = value / expected
    if cfg.init_low <= ratio <= cfg.init_high or not math.isfinite(ratio):
        return []
    why = "far above" if ratio > cfg.init_high else "far below"
    return [Finding(ID, "warning", (int(first.index[0]), int(first.index[0])), {
        "first_loss": value, "ln_num_classes": expected, "num_classes": c, "ratio": ratio,
    }, f"Check the initialization and the labels: the first loss is {why} ln({c}) = {expected:.3f}, "
       "the loss of a model that knows nothing yet.")]
