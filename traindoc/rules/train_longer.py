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
NEEDS = ("train accuracy or loss", "validation accuracy or loss")


def check(run, cfg: Thresholds) -> list[Finding]:
    """Both rose by at least `rising_min` over the last third, and the gap is open."""
    st = end_state(run, cfg)
    if st is None:
        return _from_losses(run, cfg)
    if not (st.train_rise >= cfg.rising_min and st.val_rise >= cfg.rising_min and st.gap >= cfg.longer_gap):
        return []
    val = series_or_none(run, fmt.VAL_LOSS)
    if val is not None and float(val.iloc[-1]) > float(val.min()):
        return []  # the validation loss had stopped improving: more epochs would not help, whatever the accuracy says
    return [Finding(ID, "info", (int(2 * st.last_step / 3), st.last_step), {
            "train_acc_gain_last_third": st.train_rise, "val_acc_gain_last_third": st.val_rise,
            "final_train_acc": st.train_end, "final_val_acc": st.val_end, "gap": st.gap,
        }, "Train for more epochs: both accuracies were still rising when the run stopped.")]


def _from_losses(run, cfg: Thresholds) -> list[Finding]:
    """The validation loss is at its lowest at the last evaluation, and still falling: either
    its last step down is `longer_val_drop` of its value, or the train loss's last third
    still brings `longer_loss_share` of its whole drop, beyond noise."""
    c = loss_curve(run)
    val = series_or_none(run, fmt.VAL_LOSS)
    if c is None or len(c) < cfg.min_windows or val is None or len(val) < 2:
        return []
    if float(val.iloc[-1]) > float(val.min()):
        return []  # validation had already turned: more epochs would not help
    last = float(c.steps[-1])
    drop = float(c.mean[0] - c.mean.min())
    change, se = fitted_change(c.after(2 * last / 3))
    train_falling = drop > 0 and -change > cfg.noise_sigmas * se and -change >= cfg.longer_loss_share * drop
    prev = float(val.iloc[-2])
    val_step = (prev - float(val.iloc[-1])) / abs(prev) if prev else 0.0
    if not (train_falling or val_step >= cfg.longer_val_drop):
        return []
    return [Finding(ID, "info", (int(2 * last / 3), int(last)), {
        "train_loss_fall_last_third": -change, "share_of_total_drop": -change / drop if drop > 0 else None,
        "final_val_loss": float(val.iloc[-1]), "last_val_improvement": val_step, "val_evaluations": len(val),
    }, "Train for more epochs: the losses were still falling and validation was at its best when the run stopped.")]
