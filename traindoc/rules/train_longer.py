"""train_longer: train and validation accuracy both still rising at the end, with a gap, and the
validation loss (where recorded) at its best at the last evaluation; or,
from the losses (runs without accuracy, or with too few evaluations to see a trend): the validation loss at its best at the last evaluation and still falling, by
its own last step or by the train loss's steady fall."""

from __future__ import annotations

from traindoc import format as fmt

from .base import Finding, Thresholds
from .curves import fitted_change, loss_curve, series_or_none
from .fit_gap import end_state

ID = "train_longer"
CHARTS = ('acc',)  # the run page charts that shade this rule's findings
NEEDS = ("train accuracy or loss", "a trend in the train loss or 3+ evaluations")  # no validation: the train loss alone


def check(run, cfg: Thresholds) -> list[Finding]:
    """From the accuracies (both still rising, with a gap), else from the losses."""
    return _from_accuracy(run, cfg) or _from_losses(run, cfg)


def _from_accuracy(run, cfg: Thresholds) -> list[Finding]:
    """Both rose by at least `rising_min` over the last third, and the gap is open."""
    st = end_state(run, cfg)
    if st is None:
        return []
    if not (st.train_rise >= cfg.rising_min and st.val_rise >= cfg.rising_min and st.gap >= cfg.longer_gap):
        return []
    val = series_or_none(run, fmt.VAL_LOSS)
    if val is not None and (float(val.iloc[-1]) > float(val.min()) or converged(val)):
        return []  # the validation loss had stopped improving: more epochs would not help, whatever the accuracy says
    return [Finding(ID, "info", (int(2 * st.last_step / 3), st.last_step), {
            "train_acc_gain_last_third": st.train_rise, "val_acc_gain_last_third": st.val_rise,
            "final_train_acc": st.train_end, "final_val_acc": st.val_end, "gap": st.gap,
        }, "Train for more epochs: both accuracies were still rising when the run stopped.")]


def converged(val) -> bool:
    """A validation loss that reached about zero (under 1e-3 of where it started, or 1e-4): the
    task is solved, and more epochs have nothing left to gain."""
    low, first = float(val.min()), abs(float(val.iloc[0]))
    return low <= max(1e-4, 1e-3 * first)


def _late_share(val) -> float:
    """The share of the validation loss's whole fall that came in the last third of the run,
    from its own evaluations (4 or more; 0 with fewer): a curve still falling steadily at the end."""
    if len(val) < 4:
        return 0.0
    steps = val.index.to_numpy(dtype=float)
    values = val.to_numpy(dtype=float)
    total = values[0] - values.min()
    if total <= 0:
        return 0.0
    cut = steps[0] + 2 * (steps[-1] - steps[0]) / 3
    before = values[steps <= cut]
    return float((before.min() - values[-1]) / total) if len(before) else 0.0


def _from_losses(run, cfg: Thresholds) -> list[Finding]:
    """The validation loss is at its lowest at the last evaluation, and still falling: either
    its last step down is `longer_val_drop` of its value (and `longer_step_share` of its whole
    fall), or the train loss's last third still brings `longer_loss_share` of its whole drop,
    beyond noise, or its own last third does. A run with a few per-epoch train points is judged
    from its validation loss alone (3 evaluations or more); a run with no validation loss at all,
    from its train loss alone, at its lowest at the end and still falling that much."""
    c = loss_curve(run)
    val = series_or_none(run, fmt.VAL_LOSS)
    short = c is None or len(c) < cfg.min_windows
    if val is None:
        return [] if short else _from_train_loss(run, c, cfg)
    if len(val) < (3 if short else 2):
        return []
    if float(val.iloc[-1]) > float(val.min()) or converged(val):
        return []  # validation had already turned, or has nothing left to gain: more epochs would not help
    train_falling, change, drop = (False, None, None) if short else _late_fall(c, cfg)
    prev = float(val.iloc[-2])
    fall = float(val.iloc[0]) - float(val.min())
    val_step = (prev - float(val.iloc[-1])) / abs(prev) if prev else 0.0
    if len(val) >= 3 and prev > float(val.iloc[-3]):
        val_step = 0.0  # one good evaluation after a worse one is a wobble, not a trend
    if fall > 0 and prev - float(val.iloc[-1]) < cfg.longer_step_share * fall:
        val_step = 0.0  # a step too small beside the whole fall: settling onto the floor
    val_share = _late_share(val)
    if not (train_falling or val_step >= cfg.longer_val_drop or val_share >= cfg.longer_loss_share):
        return []
    last = int(max(val.index[-1], c.steps[-1] if c is not None and len(c) else 0))
    return [Finding(ID, "info", (int(2 * last / 3), last), {
        "train_loss_fall_last_third": None if change is None else -change,
        "share_of_total_drop": -change / drop if change is not None and drop else None,
        "final_val_loss": float(val.iloc[-1]), "last_val_improvement": val_step, "val_evaluations": len(val),
        "val_share_of_drop_last_third": val_share,
    }, "Train for more epochs: the losses were still falling and validation was at its best when the run stopped.")]


def _late_fall(c, cfg: Thresholds) -> tuple[bool, float, float]:
    """(still falling, the fitted change over the last third, the whole drop): still falling when
    the last third brings `longer_loss_share` of the drop from the first window, beyond noise."""
    drop = float(c.mean[0] - c.mean.min())
    change, se = fitted_change(c.after(2 * float(c.steps[-1]) / 3))
    return drop > 0 and -change > cfg.noise_sigmas * se and -change >= cfg.longer_loss_share * drop, change, drop


def _from_train_loss(run, c, cfg: Thresholds) -> list[Finding]:
    """No validation loss: the train loss's last third still brings `longer_loss_share` of its
    whole drop, beyond noise, and its last windows hold its lowest point (no turn, no plateau)."""
    falling, change, drop = _late_fall(c, cfg)
    if not falling:
        return []
    last = float(c.steps[-1])
    if float(c.mean[-3:].min()) > float(c.mean.min()):
        return []
    return [Finding(ID, "info", (int(2 * last / 3), int(last)), {
        "train_loss_fall_last_third": -change, "share_of_total_drop": -change / drop, "validation": None,
    }, "Train for more steps: the train loss was still falling steeply at its lowest when the run stopped "
       "(no validation loss was recorded, so overfitting could not be ruled out: log one).")]
