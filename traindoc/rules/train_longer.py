"""train_longer: train and validation accuracy both still rising at the end, with a gap; or,
from the losses (runs without accuracy, or with too few evaluations to see a trend): the
train loss still falling steadily at the end and the validation loss at its best at the
last evaluation."""

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
    if st.train_rise >= cfg.rising_min and st.val_rise >= cfg.rising_min and st.gap >= cfg.longer_gap:
        return [Finding(ID, "info", (int(2 * st.last_step / 3), st.last_step), {
            "train_acc_gain_last_third": st.train_rise, "val_acc_gain_last_third": st.val_rise,
            "final_train_acc": st.train_end, "final_val_acc": st.val_end, "gap": st.gap,
        }, "Train for more epochs: both accuracies were still rising when the run stopped.")]
    return []


def _from_losses(run, cfg: Thresholds) -> list[Finding]:
    """The train loss's last third still brings `longer_loss_share` of its whole drop, beyond
    noise, and the validation loss is at its lowest at the last evaluation."""
    c = loss_curve(run)
    val = series_or_none(run, fmt.VAL_LOSS)
    if c is None or len(c) < cfg.min_windows or val is None or len(val) < 2:
        return []
    last = float(c.steps[-1])
    drop = float(c.mean[0] - c.mean.min())
    change, se = fitted_change(c.after(2 * last / 3))
    if drop <= 0 or -change <= cfg.noise_sigmas * se or -change < cfg.longer_loss_share * drop:
        return []
    if float(val.iloc[-1]) > float(val.min()):
        return []  # validation had already turned: more epochs would not help
    return [Finding(ID, "info", (int(2 * last / 3), int(last)), {
        "train_loss_fall_last_third": -change, "share_of_total_drop": -change / drop,
        "final_val_loss": float(val.iloc[-1]), "val_evaluations": len(val),
    }, "Train for more epochs: the train loss was still falling and validation was at its best when the run stopped.")]
