"""lr_too_high: the loss drops fast then stalls high or oscillates; or it explodes / goes NaN."""

from __future__ import annotations

import numpy as np

from traindoc import format as fmt

from .base import Finding, Thresholds
from .curves import Curve, chance_level, first_loss, fitted_change, loss_curve, noise, raw_loss_curve, series_or_none
from .fit_gap import collapsed
from .train_longer import converged

ID = "lr_too_high"
CHARTS = ('loss', 'lr')  # the run page charts that shade this rule's findings
NEEDS = ("train loss, NaN windows counted",)
ADVICE = "Lower the learning rate (try 3x to 10x lower), or introduce LR decay."


def check(run, cfg: Thresholds) -> list[Finding]:
    """Divergence first (NaN/inf or a loss far above its start), then a noisy high stall."""
    raw = raw_loss_curve(run)
    if raw is None or len(raw) < 2:
        return []
    nonfinite = _nonfinite(run, raw)
    if nonfinite is not None and nonfinite.evidence["diverged"]:
        return [nonfinite]
    out = [nonfinite] if nonfinite is not None else []
    c = loss_curve(run)  # the finite part: a transient NaN window does not hide the rest
    exploded = _exploded(run, c, cfg) if len(c) >= 2 else None
    if exploded:
        return out + [exploded]
    collapse = collapsed(run, cfg)
    if collapse:
        out.append(Finding(ID, "warning", (collapse["best_step"], int(raw.steps[-1])), collapse,
                           "Accuracy rose, then fell back to chance: the model now predicts only the class "
                           "prior. " + ADVICE))
    dead = _dead_at_chance(run, c, cfg)
    if dead:
        return out + [dead]
    if len(c) < cfg.min_windows:
        return out
    prior = _stuck_at_prior(run, c, cfg)
    return out + ([prior] if prior else _stall(c, cfg))


def _nonfinite(run, c: Curve) -> Finding | None:
    """NaN/inf losses: divergence (error) when the run never got finite again, else a
    warning about the windows that had them, the rest of the run still judged."""
    last = int(c.steps[-1])
    counts = run.get(fmt.LOSS_WINDOW + "/nonfinite").reindex(c.steps).fillna(0).to_numpy()
    bad = ~np.isfinite(c.mean) | (counts > 0)
    if not bad.any():
        return None
    first_bad = int(c.steps[np.argmax(bad)])
    finite = np.isfinite(c.mean)
    recovered = not bad[-1] and bool(finite[np.argmax(bad):].any())
    evidence = {"diverged": not recovered, "first_nonfinite_step": first_bad,
                "nonfinite_windows": int(bad.sum()),
                "last_finite_loss": float(c.mean[finite][-1]) if finite.any() else None}
    if not recovered:
        return Finding(ID, "error", (first_bad, last), evidence,
                       "The loss diverged to NaN/inf: " + ADVICE[0].lower() + ADVICE[1:])
    return Finding(ID, "warning", (first_bad, int(c.steps[np.flatnonzero(bad)[-1]])), evidence,
                   "Some batches gave NaN/inf losses and training went on: lower the learning rate or "
                   "clip gradients, and check those batches' data.")


#: Excursions above explode_factor x the first loss, each shorter than this share of the run,
#: that the run came back from: this many or more are a pattern, fewer are one-off spikes.
SPIKES_FOR_FINDING = 3
SPIKE_SHARE = 0.1


def _excursions(c: Curve, above: float) -> list[tuple[int, int]]:
    """(first, last) window indices of each stretch of the curve above `above`."""
    edges = np.diff(np.r_[0, (c.mean > above).astype(int), 0])
    return list(zip(np.flatnonzero(edges == 1).tolist(), (np.flatnonzero(edges == -1) - 1).tolist()))


def _exploded(run, c: Curve, cfg: Thresholds) -> Finding | None:
    """A finite loss far above where it started, at any time, warm-up or not. A run that came
    back from it is told so only when it was a long excursion or one of several: a one-off
    spike (or a warm-up bump) the run recovered from is healthy. A rise that stays far under the
    validation loss (a memorising model's train loss wandering at its floor) is no explosion."""
    last = int(c.steps[-1])
    start = first_loss(run, c)
    if start > 0:
        peak_i = int(np.argmax(c.mean))
        peak = c.mean[peak_i]
        val = series_or_none(run, fmt.VAL_LOSS)
        held = np.array([]) if val is None else val.to_numpy(dtype=float)
        floor = np.isfinite(held).any() and peak < 0.1 * float(np.nanmin(held))
        if peak > cfg.explode_factor * start and peak - start > cfg.noise_sigmas * noise(c) and not floor:
            tail = float(c.mean[-max(1, len(c) // 10):].mean())
            evidence = {"first_loss": start, "peak_loss": peak, "peak_over_first": peak / start, "final_loss": tail}
            if peak_i < len(c) - 1 and tail < start:
                # it came back below where it started: a spike the run survived, not a divergence
                spans = _excursions(c, cfg.explode_factor * start)
                span = max((float(c.steps[b] - c.steps[a]) for a, b in spans), default=0.0)
                if len(spans) < SPIKES_FOR_FINDING and span <= SPIKE_SHARE * (c.steps[-1] - c.steps[0]):
                    return None
                if val is not None and converged(val):
                    return None  # blips on a solved task: the validation loss is about zero
                evidence["excursions"] = len(spans)
                return Finding(ID, "warning", (int(c.steps[peak_i]), last), {"diverged": False, "recovered": True,
                                                                             **evidence},
                               "The loss spiked above where it started, then recovered: " + ADVICE[0].lower()
                               + ADVICE[1:] + " Gradient clipping also tames such spikes.")
            return Finding(ID, "error", (int(c.steps[peak_i]), last), {"diverged": True, **evidence},
                           "The loss exploded above where it started: " + ADVICE[0].lower() + ADVICE[1:])
    return None


def _dead_at_chance(run, c: Curve, cfg: Thresholds) -> Finding | None:
    """A network killed early: its loss blew up (or went NaN) in the first part of the run, then
    sat flat at ln C, the loss of predicting the class prior, with the accuracy at chance for
    the rest of the run, in the train loss or in the validation loss. A run that sat there from
    its very first step never blew up and is not judged here."""
    if len(c) < 4:
        return None
    last = float(c.steps[-1])
    chance = chance_level(run, c.steps[0] + 0.5 * (last - c.steps[0]))
    if chance is None:
        return None
    n, acc = chance
    entropy = float(np.log(n))
    curves = [("train loss", c.steps, c.mean)]
    val = series_or_none(run, fmt.VAL_LOSS)
    if val is not None:
        curves.append(("validation loss", val.index.to_numpy(), val.to_numpy(dtype=float)))
    for name, steps, values in curves:
        late = values[steps >= steps[0] + 0.5 * (steps[-1] - steps[0])]
        early = values[steps <= steps[0] + 0.2 * (steps[-1] - steps[0])]
        if len(late) < 2 or not np.isfinite(late).all():
            continue
        plateau = float(np.median(late))
        flat = float(np.max(np.abs(late - plateau))) <= max(0.03 * entropy, 1e-6)
        blew = (not np.isfinite(early).all()) or float(np.nanmax(early)) > cfg.explode_factor * entropy
        if flat and abs(plateau - entropy) <= 0.03 * entropy and blew:
            return Finding(ID, "error", (int(steps[0]), int(last)), {
                "predicts_prior": True, "diverged": False, "series": name, "plateau_loss": plateau,
                "ln_classes": entropy, "classes": n, "final_accuracy": acc,
                "early_peak_loss": float(np.nanmax(early)) if np.isfinite(early).any() else None,
            }, f"The loss blew up early, then sat at ln {n} = {entropy:.3f} with the accuracy at chance: the network "
               "is dead and predicts only the class prior. " + ADVICE)
    return None


def _stuck_at_prior(run, c: Curve, cfg: Thresholds) -> Finding | None:
    """The loss fell fast to the entropy of the label distribution (recorded by the collector)
    and stayed there for the second half: the model predicts only the class prior, which a
    learning rate far too high leaves it doing."""
    h = series_or_none(run, fmt.LABEL_ENTROPY)
    if h is None or float(h.iloc[0]) <= 0:
        return None
    entropy, last = float(h.iloc[0]), float(c.steps[-1])
    band = max(cfg.prior_band * entropy, cfg.noise_sigmas * noise(c))
    near = np.abs(c.mean - entropy) <= band
    late = c.steps >= 0.5 * last
    start = first_loss(run, c)
    if not late.any() or near[late].mean() < 0.9 or start <= entropy + band:
        return None
    reached = int(c.steps[np.argmax(near)])
    if reached > cfg.high_fast_frac * last:
        return None  # a slow approach is lr_too_low's to judge
    tail = float(c.mean[late].mean())
    return Finding(ID, "warning", (reached, int(last)), {
        "stuck_at_label_entropy": True, "label_entropy": entropy, "final_loss": tail, "first_loss": start,
        "reached_at_step": reached,
    }, "The loss dropped fast to the entropy of the labels and stayed there: the model predicts only the "
       "class prior. " + ADVICE)


def _stall(c: Curve, cfg: Thresholds) -> list[Finding]:
    last = c.steps[-1]
    start = c.mean[0]
    tail = c.mean[-max(1, len(c) // 10):].mean()
    best = float(np.min(c.mean))
    if start <= 0 or tail <= cfg.high_stall_level * start or start - best <= 0:
        return []  # it got low: whatever the LR, it is not stuck high
    second = c.after(0.5 * last)
    change, se = fitted_change(second)
    if -change > cfg.noise_sigmas * se:
        return []  # still making progress
    early = c.between(c.steps[0], cfg.high_fast_frac * last)
    fast_share = (start - float(np.min(early.mean))) / (start - best) if len(early) else 0.0
    if fast_share < cfg.high_fast_share:
        return []
    # the stall must look like an LR problem, not a capacity limit: the loss bounces
    # (window means scatter far beyond their own noise) or climbs back from its best
    x = second.steps.astype(float)
    resid = second.mean - np.polyval(np.polyfit(x, second.mean, 1), x) if len(second) > 2 else np.zeros(1)
    se_rec = np.nanmedian(second.se) if np.isfinite(second.se).any() else np.nan
    osc = float(np.std(resid) / se_rec) if se_rec and np.isfinite(se_rec) else 0.0
    rebound = tail - best
    rose = rebound > cfg.noise_sigmas * noise(c) and rebound >= cfg.high_rebound * (start - best)
    if osc >= cfg.high_osc_ratio or rose:
        return [Finding(ID, "warning", (int(second.steps[0]), int(last)), {
            "diverged": False, "first_loss": start, "best_loss": best, "final_loss": tail,
            "final_over_first": tail / start, "share_of_drop_in_first_quarter": fast_share,
            "oscillation_vs_noise": osc, "rebound_from_best": rebound,
        }, "The loss dropped fast, then stalled high" + (" and climbed back" if rose else " and oscillates")
           + ": " + ADVICE[0].lower() + ADVICE[1:])]
    return []
