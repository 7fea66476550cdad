"""Train/validation accuracy at the end of a run, shared by underfitting and train_longer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from traindoc import format as fmt

from .base import Thresholds
from .curves import num_classes, series_or_none


@dataclass
class EndState:
    """Where train and validation accuracy stand at the end, and how they still move."""

    train_end: float
    val_end: float
    gap: float
    train_rise: float  # accuracy gained over the last third of the run
    val_rise: float
    chance: float
    first_step: int
    last_step: int


def _rise(s, start_step: float) -> float:
    late = s[s.index >= start_step]
    if len(late) < 2:
        return 0.0
    x = late.index.to_numpy(dtype=float)
    slope = np.polyfit(x, late.to_numpy(dtype=float), 1)[0]
    return float(slope * (x[-1] - x[0]))


def collapsed(run, cfg: Thresholds) -> dict | None:
    """Train accuracy that rose well above chance and fell back to it: what a learning rate
    far too high does (the model ends up predicting the class prior), not underfitting."""
    ta = series_or_none(run, fmt.TRAIN_ACC, fmt.TRAIN_ACC_EPOCH)
    c = num_classes(run)
    if ta is None or c is None or len(ta) < 4:
        return None
    chance = 1.0 / c
    progress = (ta.to_numpy(dtype=float) - chance) / (1 - chance)
    tail = float(progress[-max(1, len(progress) // 10):].mean())
    best_i = int(np.argmax(progress))
    if progress[best_i] >= cfg.collapse_from and tail <= cfg.collapse_to and best_i < len(progress) - 1:
        return {"collapsed_to_chance": True, "best_train_acc": float(ta.iloc[best_i]),
                "best_step": int(ta.index[best_i]), "final_train_acc": float(ta.iloc[-1]), "chance_acc": chance}
    return None


def end_state(run, cfg: Thresholds) -> EndState | None:
    """None when the run lacks train or validation accuracy (the rules then stay silent)."""
    ta = series_or_none(run, fmt.TRAIN_ACC, fmt.TRAIN_ACC_EPOCH)
    va = series_or_none(run, fmt.VAL_ACC)
    if ta is None or va is None or len(va) < 3 or len(ta) < 3:
        return None
    last = int(max(ta.index[-1], va.index[-1]))
    n_tail = max(1, len(ta) // 10)
    train_end = float(ta.iloc[-n_tail:].mean())
    val_end = float(va.iloc[-min(2, len(va)):].mean())
    c = num_classes(run)
    chance = 1.0 / c if c else float(min(ta.iloc[0], va.iloc[0]))
    return EndState(train_end, val_end, train_end - val_end, _rise(ta, 2 * last / 3), _rise(va, 2 * last / 3),
                    chance, int(min(ta.index[0], va.index[0])), last)
