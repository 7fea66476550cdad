"""Loss spikes: windows whose loss jumped far above where the run was just before and just after.

Not a rule with an id: a spike the run recovered from is not a fault by itself (lr_too_high
judges the ones that add up to a pattern, and divergence). They are counted, each with its step,
so that a long run's page says how often training was knocked back and when.

A spike, on the train loss as the rules judge it (`curves.raw_loss_curve`):
- the window's highest loss (the collector's per-window max, the max of a rolling window of a
  per-step log, or the point itself) stands at least `SPIKE_K` times the run's own noise above the
  level of the `SIDE` windows before it *and* of the `SIDE` windows after it: the loss was lower
  before (a fast-falling start is not a spike) and came back down after (a jump that stays up is
  a level shift or a divergence, not a spike);
- and at least `SPIKE_MIN_RISE` of that level above it, so that the hair-thin noise of a very
  smooth curve does not make every blip a spike.
The run's noise is the robust spread (1.4826 x the median absolute deviation) of the window peaks
around the median of their neighbours. Spike windows at most `SIDE` windows apart are one spike
(the bounces of one recovery), counted at its highest window.
Runs with fewer than `MIN_WINDOWS` finite windows are too short to say what is unusual.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from traindoc.series import RunSeries

from .curves import raw_loss_curve

#: how many times the run's own noise a window's peak must stand above the loss on both sides
SPIKE_K = 6.0
#: and at least this share of the loss level it rose from
SPIKE_MIN_RISE = 0.05
#: windows on each side whose median is "where the loss was"
SIDE = 5
#: fewer finite windows than this: not counted (too short to know the run's noise)
MIN_WINDOWS = 30


@dataclass(frozen=True)
class Spike:
    step: int  # the step of the window where the loss peaked
    peak: float  # the highest loss in that window
    before: float  # the level of the windows before it
    after: float  # the level of the windows after it
    noise: float  # the run's own noise, in loss units
    times_noise: float | None  # how far above the higher of before and after, in units of `noise`
    #                            (None when the run has no noise to speak of: a quantised loss)

    def to_dict(self) -> dict:
        return {"step": self.step, "peak": self.peak, "before": self.before, "after": self.after,
                "noise": self.noise, "times_noise": self.times_noise}


def loss_spikes(run: RunSeries) -> list[Spike]:
    """The run's recovered loss spikes, in step order (computed once per run)."""
    if "loss_spikes" not in run.memo:
        run.memo["loss_spikes"] = _spikes(run)
    return run.memo["loss_spikes"]


def _side_medians(peak: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median of the SIDE values before and after each index (NaN where a side is short: the
    first and last SIDE windows)."""
    n = len(peak)
    before = np.full(n, np.nan)
    after = np.full(n, np.nan)
    if n > SIDE:
        med = np.median(sliding_window_view(peak, SIDE), axis=1)  # med[k]: peak[k .. k+SIDE-1]
        before[SIDE:] = med[:n - SIDE]
        after[:n - SIDE] = med[1:]
    return before, after


def _spikes(run: RunSeries) -> list[Spike]:
    c = raw_loss_curve(run)
    if c is None:
        return []
    peak = np.where(np.isfinite(c.peak), c.peak, c.mean)
    keep = np.isfinite(peak) & np.isfinite(c.mean)
    if keep.sum() < MIN_WINDOWS:
        return []
    steps, peak = c.steps[keep], peak[keep]
    before, after = _side_medians(peak)
    # the run's own noise: how far window peaks stray from the median of their neighbours
    around = np.where(np.isnan(before), after, np.where(np.isnan(after), before, (before + after) / 2))
    dev = np.abs(peak - around)
    dev = dev[np.isfinite(dev)]
    if not len(dev):
        return []
    sigma = 1.4826 * float(np.median(dev))
    level = np.maximum(before, after)  # NaN where a side is short: no spike at the ends
    rise = peak - level
    floor = SPIKE_MIN_RISE * np.abs(level)
    if sigma <= 0:  # a quantised or constant loss: only the relative floor speaks
        sigma = float("nan")
    with np.errstate(invalid="ignore"):
        hit = np.isfinite(rise) & (rise >= floor) & (np.isnan(sigma) | (rise >= SPIKE_K * sigma))
    out: list[Spike] = []
    hits = np.flatnonzero(hit)
    # one event: spike windows no more than SIDE windows apart (the bounces of one recovery)
    for group in np.split(hits, np.flatnonzero(np.diff(hits) > SIDE) + 1) if len(hits) else []:
        top = int(group[np.argmax(rise[group])])
        times = round(float(rise[top] / sigma), 1) if np.isfinite(sigma) else None
        # before and after of the whole group: the levels outside it (finite at every hit)
        out.append(Spike(int(steps[top]), float(peak[top]), float(before[group[0]]), float(after[group[-1]]),
                         float(sigma) if np.isfinite(sigma) else 0.0, times))
    return out


#: spikes named one by one in a description; the rest are counted
NAMED = 10


def one(s) -> str:
    """One spike (a `Spike` or its dict): its step, its height in noise, and how far it rose."""
    d = s.to_dict() if isinstance(s, Spike) else s
    times = f"{d['times_noise']:g}x its noise, " if d.get("times_noise") is not None else ""
    return f"step {int(d['step']):,} ({times}to {d['peak']:.4g} from {d['before']:.4g})"


def describe(spikes: list) -> str:
    """One sentence on a run's spikes (`Spike`s or their dicts), for pages, notebooks and reports."""
    if not spikes:
        return ""
    ds = [s.to_dict() if isinstance(s, Spike) else s for s in spikes]
    parts = [one(s) for s in ds[:NAMED]]
    more = f", and {len(ds) - NAMED} more" if len(ds) > NAMED else ""
    return (f"{len(ds)} loss spike{'s' if len(ds) != 1 else ''} the run recovered from: "
            + "; ".join(parts) + more + ".")
