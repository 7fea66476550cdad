"""underfitting: train and validation accuracy both low, with too small a gap between them; or
a network that never learned at all, whatever it logged: its loss flat at the entropy of a
uniform guess (ln C) with the accuracy at chance, the same validation accuracy at every
evaluation (one constant prediction), or a validation loss that does not move."""

from __future__ import annotations

import numpy as np

from traindoc import format as fmt

from .base import Finding, Thresholds
from .curves import chance_level, loss_curve, num_classes, series_or_none
from .fit_gap import collapsed, end_state

ID = "underfitting"
CHARTS = ('acc', 'loss')  # the run page charts that shade this rule's findings
NEEDS = ("train accuracy or loss", "validation accuracy or loss", "3+ validation evaluations")
ADVICE_STUCK = ("The network learned nothing: check that the labels match the inputs, that the gradients "
                "reach every layer and the optimizer steps the model's parameters; then try a bigger model "
                "or another LR.")
#: evaluations a flat validation series needs before "never changed" means anything
MIN_EVALS = 5


def check(run, cfg: Thresholds) -> list[Finding]:
    """Low = far from perfect relative to chance; small gap = within `gap_small`."""
    stuck = _never_learned(run, cfg)
    if stuck:
        return [stuck]
    st = end_state(run, cfg)
    if st is None or st.chance >= 1 or collapsed(run, cfg):
        return []  # a collapse back to chance is lr_too_high's
    progress = (st.train_end - st.chance) / (1 - st.chance)
    # without the number of classes, "chance" is only where the accuracy started: a fair level
    # above it says little about the task, so only a run that gained little from there is low
    low = cfg.low_progress if num_classes(run) else cfg.low_progress / 3
    # validation above training (heavy augmentation, dropout) is no sign of underfitting
    if abs(st.gap) < cfg.gap_small and progress < low:
        return [Finding(ID, "warning", (st.first_step, st.last_step), {
            "final_train_acc": st.train_end, "final_val_acc": st.val_end, "gap": st.gap,
            "chance_acc": st.chance, "progress_from_chance": progress,
        }, "Use a bigger model or less regularization: train and validation accuracy are both low "
           "and almost equal, so the model is not fitting the training data.")]
    return []


def _flat_train_loss(run, cfg: Thresholds) -> tuple[float, float] | None:
    """(level early, level late) of the train loss when it hardly moved after the first tenth of
    the run: the last third's mean within 3% of the second tenth's, and never 1.5x above where it
    started (a blow-up first is lr_too_high's dead network). None otherwise, or without a loss."""
    c = loss_curve(run)
    if c is None or len(c) < 4:
        return None
    first, last = float(c.steps[0]), float(c.steps[-1])
    span = last - first
    early = c.mean[(c.steps >= first + 0.1 * span) & (c.steps <= first + 0.2 * span)]
    late = c.mean[c.steps >= first + 2 * span / 3]
    if not len(early) or not len(late):
        return None
    a, b = float(np.mean(early)), float(np.mean(late))
    if a <= 0 or abs(b - a) > 0.03 * a or float(np.max(c.mean)) > cfg.explode_factor * float(c.mean[0]):
        return None
    return a, b


def _never_learned(run, cfg: Thresholds) -> Finding | None:
    """One of three signs that nothing was learned, each beside a train loss that never moved."""
    flat = _flat_train_loss(run, cfg)
    if flat is None:
        return None
    c = loss_curve(run)
    steps = (int(c.steps[0]), int(c.steps[-1]))
    ev = {"never_learned": True, "train_loss_early": flat[0], "train_loss_late": flat[1]}
    va, vl = series_or_none(run, fmt.VAL_ACC), series_or_none(run, fmt.VAL_LOSS)
    chance = chance_level(run, c.steps[0] + 0.2 * (c.steps[-1] - c.steps[0]), spread=0.03)
    if chance is not None:
        n, acc = chance
        entropy = float(np.log(n))
        for name, s in (("validation loss", vl), ("train loss", None)):
            values = c.mean if s is None else s.to_numpy(dtype=float)
            if s is not None and len(s) < 3:
                continue
            level = float(np.median(values[len(values) // 5:]))
            if abs(level - entropy) <= 0.03 * entropy:
                return Finding(ID, "warning", steps, {
                    **ev, "at_chance": True, "series": name, "loss_level": level, "ln_classes": entropy,
                    "classes": n, "accuracy": acc,
                }, f"The {name} sat at ln {n} = {entropy:.3f}, the loss of a uniform guess, with the accuracy at "
                   f"chance ({acc:.1%}) for the whole run. " + ADVICE_STUCK)
    if va is not None and len(va) >= MIN_EVALS:
        v = va.to_numpy(dtype=float)
        if float(v.max() - v.min()) <= 1e-6 and float(v.max()) < 0.99:
            return Finding(ID, "warning", steps, {
                **ev, "constant_val_acc": float(v[0]), "evaluations": len(v),
            }, f"The validation accuracy was {v[0]:.4g} at every one of {len(v)} evaluations: the model gives "
               "the same prediction whatever the input. " + ADVICE_STUCK)
    if vl is not None and len(vl) >= MIN_EVALS:
        v = vl.to_numpy(dtype=float)
        mid = float(np.median(v))
        if mid > 0 and float(v.max() - v.min()) <= 1e-3 * mid:
            return Finding(ID, "warning", steps, {
                **ev, "val_loss_range": float(v.max() - v.min()), "val_loss": mid, "evaluations": len(v),
            }, f"The validation loss stayed at {mid:.4g} (within {float(v.max() - v.min()):.2g}) over "
               f"{len(v)} evaluations while the train loss did not move: " + ADVICE_STUCK[0].lower() + ADVICE_STUCK[1:])
    return None
