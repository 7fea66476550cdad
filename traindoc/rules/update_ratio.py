"""update_ratio: per-layer update/weight ratio persistently far outside the band around 1e-3."""

from __future__ import annotations

import numpy as np

from traindoc import format as fmt

from .base import Finding, Thresholds

ID = "update_ratio"
CHARTS = ('ratio',)  # the run page charts that shade this rule's findings
NEEDS = ("update ratios",)


def check(run, cfg: Thresholds) -> list[Finding]:
    """One finding per direction (too big / too small), listing the layers and their medians.

    Biases are left out: they start at or near zero, so their ratio says little about the LR.
    """
    last = run.last_step
    lo, hi = cfg.ratio_center / cfg.ratio_factor, cfg.ratio_center * cfg.ratio_factor
    high, low, first, end = {}, {}, None, None
    for key in run.with_prefix(fmt.RATIO_PREFIX):
        if key == fmt.RATIO_GLOBAL or key.endswith("bias"):
            continue
        steps, v = run.arrays(key)  # numpy, not a Series: this runs per layer
        keep = (steps > cfg.warmup_frac * last) & np.isfinite(v) & (v > 0)
        steps, v = steps[keep], v[keep]
        if len(v) < cfg.ratio_min_samples:
            continue
        layer = key[len(fmt.RATIO_PREFIX):]
        med = float(np.median(v))
        if (v > hi).mean() >= cfg.ratio_persist:
            high[layer] = med
        elif (v < lo).mean() >= cfg.ratio_persist:
            low[layer] = med
        else:
            continue
        first = int(steps[0]) if first is None else min(first, int(steps[0]))
        end = int(steps[-1]) if end is None else max(end, int(steps[-1]))
    out = []
    if high:
        out.append(Finding(ID, "warning", (first, end), {
            "direction": "too_high", "band": [lo, hi], "layers": high,
        }, "Lower the LR for these layers: their weights change by far more than 1e-3 of their size per step: "
           + ", ".join(sorted(high))))
    if low:
        out.append(Finding(ID, "warning", (first, end), {
            "direction": "too_low", "band": [lo, hi], "layers": low,
        }, "Raise the LR for these layers: their weights barely move (far under 1e-3 of their size per step): "
           + ", ".join(sorted(low))))
    return out
