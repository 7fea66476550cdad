"""train_longer: train and validation accuracy both still rising at the end, with a gap."""

from __future__ import annotations

from .base import Finding, Thresholds
from .fit_gap import end_state

ID = "train_longer"
NEEDS = ("train accuracy", "validation accuracy")


def check(run, cfg: Thresholds) -> list[Finding]:
    """Both rose by at least `rising_min` over the last third, and the gap is open."""
    st = end_state(run, cfg)
    if st is None:
        return []
    if st.train_rise >= cfg.rising_min and st.val_rise >= cfg.rising_min and st.gap >= cfg.longer_gap:
        return [Finding(ID, "info", (int(2 * st.last_step / 3), st.last_step), {
            "train_acc_gain_last_third": st.train_rise, "val_acc_gain_last_third": st.val_rise,
            "final_train_acc": st.train_end, "final_val_acc": st.val_end, "gap": st.gap,
        }, "Train for more epochs: both accuracies were still rising when the run stopped.")]
    return []
