"""underfitting: train and validation accuracy both low, with too small a gap between them."""

from __future__ import annotations

from .base import Finding, Thresholds
from .curves import num_classes
from .fit_gap import collapsed, end_state

ID = "underfitting"
CHARTS = ('acc',)  # the run page charts that shade this rule's findings
NEEDS = ("train accuracy", "validation accuracy")


def check(run, cfg: Thresholds) -> list[Finding]:
    """Low = far from perfect relative to chance; small gap = within `gap_small`."""
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
