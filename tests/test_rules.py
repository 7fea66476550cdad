"""Rules on hand-built series: silence without inputs, noise vs trend, the raw-series path."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from traindoc.reader import RunSeries
from traindoc.rules import DEFAULT, RULES, run_rules
from traindoc.rules.curves import lr_cuts, rolling_curve


def windows(values, every=10, var=0.01, count=10):
    steps = np.arange(1, len(values) + 1) * every
    idx = pd.Index(steps)
    return {"train/loss/mean": pd.Series(values, index=idx), "train/loss/var": pd.Series(var, index=idx),
            "train/loss/count": pd.Series(float(count), index=idx)}


def run_of(series, meta=None):
    return RunSeries.from_dict("t", series, meta or {})


def rules_fired(series, meta=None):
    return sorted({f.rule for f in run_rules(run_of(series, meta))})


def test_every_rule_is_silent_on_an_empty_run():
    run = run_of({})
    for rule in RULES:
        assert rule.check(run, DEFAULT) == [], rule.ID


def test_healthy_exponential_decay_gets_nothing():
    t = np.arange(100)
    assert rules_fired(windows(0.3 + 2.0 * np.exp(-t / 10))) == []


def test_straight_slow_descent_is_lr_too_low():
    # with no validation loss, a loss still falling this steeply at its end is also told to train longer
    assert rules_fired(windows(np.linspace(2.3, 1.6, 100))) == ["lr_too_low", "train_longer"]


def test_noise_is_not_a_trend():
    rng = np.random.default_rng(0)
    flat = 1.5 + rng.normal(0, 0.02, 100)  # se = sqrt(0.01/10) = 0.03: the wiggle is noise
    assert "lr_too_low" not in rules_fired(windows(flat))


def test_nan_is_diverged_and_silences_the_rest():
    vals = list(0.3 + 2.0 * np.exp(-np.arange(60) / 10)) + [float("nan")] * 5
    s = windows(vals)
    s["train/loss/nonfinite"] = pd.Series([0.0] * 60 + [10.0] * 5, index=s["train/loss/mean"].index)
    s["val/acc"] = pd.Series([0.5, 0.7, 0.6, 0.5, 0.4], index=[100, 200, 300, 400, 500])
    s["train/acc"] = pd.Series(np.linspace(0.3, 0.9, 65), index=s["train/loss/mean"].index)
    found = run_rules(run_of(s))
    assert [f.rule for f in found] == ["lr_too_high"]
    assert found[0].evidence["diverged"] is True and found[0].severity == "error"
    assert found[0].evidence["first_nonfinite_step"] == 610


def test_raw_per_step_series_gets_rolling_noise():
    rng = np.random.default_rng(1)
    steps = np.arange(1, 5001)
    raw = pd.Series(0.5 + 1.8 * np.exp(-steps / 500) + rng.normal(0, 0.1, len(steps)), index=steps)
    c = rolling_curve(raw)
    assert len(c) == 100
    assert np.nanmedian(c.se) == pytest.approx(0.1 / math.sqrt(50), rel=0.25)
    assert rules_fired({"train/loss": raw}) == []


def test_overfitting_names_the_best_step():
    val = pd.Series([0.5, 0.7, 0.8, 0.78, 0.75, 0.72], index=[100, 200, 300, 400, 500, 600])
    train = pd.Series(np.linspace(0.5, 1.0, 60), index=np.arange(1, 61) * 10)
    (f,) = [f for f in run_rules(run_of({"val/acc": val, "train/acc": train})) if f.rule == "overfitting"]
    assert f.evidence["best_step"] == 300 and "step 300" in f.advice


def test_overfitting_by_validation_loss_alone():
    vl = pd.Series([1.0, 0.7, 0.6, 0.7, 0.8], index=[100, 200, 300, 400, 500])
    s = windows(list(np.linspace(2.0, 0.2, 50)))
    s["val/loss"] = vl
    assert "overfitting" in rules_fired(s)


def test_underfitting_and_train_longer_by_gap():
    steps = np.arange(1, 31) * 10
    low = {"train/acc": pd.Series(np.full(30, 0.40), index=steps),
           "val/acc": pd.Series([0.39, 0.40, 0.40, 0.40], index=[75, 150, 225, 300])}
    assert rules_fired(low, {"num_classes": 10}) == ["underfitting"]
    rising = {"train/acc": pd.Series(np.linspace(0.3, 0.8, 30), index=steps),
              "val/acc": pd.Series([0.3, 0.45, 0.6, 0.7], index=[75, 150, 225, 300])}
    assert rules_fired(rising, {"num_classes": 10}) == ["train_longer"]


def test_initial_loss_needs_num_classes():
    first = {"train/loss/first": pd.Series([9.0], index=[0])}
    assert rules_fired(first) == []
    assert rules_fired(first, {"num_classes": 10}) == ["initial_loss"]
    assert rules_fired({"train/loss/first": pd.Series([2.31], index=[0])}, {"num_classes": 10}) == []


def test_update_ratio_flags_layers_persistently_out_of_band():
    steps = np.arange(1, 21) * 50
    s = {"update_ratio/fc.weight": pd.Series(np.full(20, 1e-6), index=steps),
         "update_ratio/fc.bias": pd.Series(np.full(20, 1.0), index=steps),  # biases are not judged
         "update_ratio/conv.weight": pd.Series(np.full(20, 2e-3), index=steps)}
    (f,) = run_rules(run_of(s))
    assert f.evidence["direction"] == "too_low" and list(f.evidence["layers"]) == ["fc.weight"]


def test_lr_cuts_ignore_warmup_and_smooth_schedules():
    warm_then_step = pd.Series([0.01, 0.05, 0.1, 0.01], index=[1, 50, 100, 500])  # written on change
    assert lr_cuts(warm_then_step, 1000, 0.5, 0.05) == [(500, 500, 0.1, 0.01)]
    # sampled every 400 steps (an imported log): the fall is not known to be sharp
    assert lr_cuts(warm_then_step, 1000, 0.5, 0.05, on_change=False) == []
    every_step = pd.Series([0.1] * 499 + [0.01] * 501, index=np.arange(1, 1001))
    assert lr_cuts(every_step, 1000, 0.5, 0.05, on_change=False) == [(500, 500, 0.1, 0.01)]
    cosine = pd.Series(0.1 * (1 + np.cos(np.pi * np.arange(1000) / 1000)) / 2, index=np.arange(1, 1001))
    assert lr_cuts(cosine, 1000, 0.5, 0.05) == []
    assert lr_cuts(cosine, 1000, 0.5, 0.05, on_change=False) == []


def test_thresholds_all_have_reasons():
    assert all(DEFAULT.reasons().values())


# ---- rules that read other people's runs (issue 10) --------------------------------------
def test_a_transient_nan_window_is_reported_and_the_rest_still_judged():
    """One bad batch gave NaN, training went on: a warning, not 'diverged', and the
    overfitting that the validation curve shows is still found."""
    vals = list(0.3 + 2.0 * np.exp(-np.arange(80) / 10))
    vals[30] = float("nan")
    s = windows(vals)
    s["train/loss/nonfinite"] = pd.Series([1.0 if i == 30 else 0.0 for i in range(80)], index=s["train/loss/mean"].index)
    s["train/acc"] = pd.Series(np.linspace(0.5, 0.99, 80), index=s["train/loss/mean"].index)
    s["val/acc"] = pd.Series([0.6, 0.75, 0.8, 0.82, 0.78, 0.74, 0.7, 0.66], index=np.arange(1, 9) * 100)
    found = {f.rule: f for f in run_rules(run_of(s, {"num_classes": 10}))}
    assert found["lr_too_high"].severity == "warning" and found["lr_too_high"].evidence["diverged"] is False
    assert found["lr_too_high"].evidence["first_nonfinite_step"] == 310
    assert "overfitting" in found


def _acc_run(train, val, num_classes=10, where="meta"):
    steps = np.arange(1, len(train) + 1) * 100
    s = windows(list(2.3 * np.exp(-np.arange(len(train)) / 3) + 1.0), every=100)
    s["train/acc"] = pd.Series(train, index=steps)
    s["val/acc"] = pd.Series(val, index=steps)
    meta = {"num_classes": num_classes} if where == "meta" else {"config": {"num_classes": num_classes}}
    return run_of(s, meta)


def test_validation_above_training_is_not_underfitting():
    """Heavy augmentation keeps train accuracy below validation accuracy; the model is not too small."""
    run = _acc_run(np.linspace(0.30, 0.55, 12), np.linspace(0.40, 0.66, 12))
    assert "underfitting" not in {f.rule for f in run_rules(run)}
    low = _acc_run(np.linspace(0.20, 0.31, 12), np.linspace(0.20, 0.30, 12))  # both low and level: still found
    assert "underfitting" in {f.rule for f in run_rules(low)}


@pytest.mark.parametrize("where", ["meta", "config"])
def test_collapse_to_chance_is_lr_too_high_not_underfitting(where):
    """A learning rate that blew a classifier back to predicting the prior (10 classes: 0.1)."""
    acc = [0.3, 0.5, 0.6, 0.45, 0.2, 0.11, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    found = {f.rule: f for f in run_rules(_acc_run(acc, [a - 0.01 for a in acc], where=where))}
    assert "underfitting" not in found
    assert found["lr_too_high"].evidence["collapsed_to_chance"] is True
    assert found["lr_too_high"].evidence["chance_acc"] == pytest.approx(0.1)


def test_one_class_count_for_every_rule():
    """num_classes in the config (not the metadata) serves initial_loss and the accuracy rules alike."""
    from traindoc.rules.curves import num_classes
    from traindoc.rules.fit_gap import end_state

    run = _acc_run(np.linspace(0.2, 0.3, 12), np.linspace(0.2, 0.3, 12), num_classes=5, where="config")
    assert num_classes(run) == 5 and end_state(run, DEFAULT).chance == pytest.approx(0.2)


def _schedule_run(lr_fn, floor_at, n=100):
    """Loss windows falling fast while the LR is high, flat once it reaches its floor."""
    t = np.arange(n)
    loss = np.where(t < floor_at, 2.3 - 1.5 * t / floor_at, 0.8)  # stalls where the LR bottomed out
    s = windows(loss)
    steps = s["train/loss/mean"].index
    s["lr/pg0"] = pd.Series([lr_fn(k) for k in range(n)], index=steps)
    return run_of(s, {"source": "tensorboard"})


@pytest.mark.parametrize("shape", ["cosine", "linear", "exponential"])
def test_early_decay_whatever_the_schedule_shape(shape):
    floor_at = 30  # the schedule bottoms out at 30% of the run
    fn = {"cosine": lambda k: 1e-4 + (0.1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * min(k, floor_at) / floor_at)),
          "linear": lambda k: max(1e-4, 0.1 * (1 - k / floor_at)),
          "exponential": lambda k: 0.1 * 0.8 ** min(k, floor_at)}[shape]
    found = {f.rule: f for f in run_rules(_schedule_run(fn, floor_at))}
    assert "early_decay" in found, sorted(found)
    ev = found["early_decay"].evidence  # by the floor, or by the last sharp step down to it
    assert ev.get("floor_step", ev.get("cut_step")) <= 350


def test_a_schedule_that_ends_at_its_floor_is_healthy():
    """Cosine to 1e-4 over the whole budget, the loss still improving to the end: no early decay."""
    n = 100
    t = np.arange(n)
    s = windows(0.3 + 2.0 * np.exp(-t / 25))
    s["lr/pg0"] = pd.Series([1e-4 + (0.1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * k / n)) for k in range(n)],
                            index=s["train/loss/mean"].index)
    assert "early_decay" not in rules_fired(s, {"source": "tensorboard"})


def test_a_loss_stuck_at_the_label_entropy_is_lr_too_high():
    """nanoGPT at LR 0.3: a fast drop to the entropy of the character frequencies, then flat there."""
    t = np.arange(100)
    entropy = 3.3
    loss = entropy + 1.0 * np.exp(-t / 3)  # reaches the prior in a few windows and stays
    s = windows(loss, var=0.001)
    s["train/label_entropy"] = pd.Series([entropy], index=[500])
    found = {f.rule: f for f in run_rules(run_of(s))}
    assert found["lr_too_high"].evidence["stuck_at_label_entropy"] is True
    healthy = windows(2.2 + 2.0 * np.exp(-t / 15), var=0.001)  # well below the prior: learning
    healthy["train/label_entropy"] = pd.Series([entropy], index=[500])
    assert "lr_too_high" not in rules_fired(healthy)


def test_train_longer_from_the_losses():
    """A loss-only run (regression) cut short: the train loss still falls steadily and the
    validation loss is at its best at the last evaluation. Once validation turns, no."""
    t = np.arange(40)
    s = windows(0.5 + 1.5 * np.exp(-t / 22), var=1e-4)  # a healthy curve, cut while still falling
    s["val/loss"] = pd.Series([1.9, 1.8, 1.7], index=[130, 260, 400])
    assert "train_longer" in rules_fired(s)
    s["val/loss"] = pd.Series([1.9, 1.7, 1.8], index=[130, 260, 400])
    assert "train_longer" not in rules_fired(s)


def test_a_loss_that_went_nan_in_its_first_windows_is_a_divergence_not_undiagnosed():
    """LR far too high: two finite windows, then NaN for the rest of the run. Too few finite
    windows for the trend rules, but the run is no mystery: lr_too_high, error."""
    import numpy as np
    import pandas as pd

    from traindoc import format as fmt
    from traindoc.rules import diagnose_run
    from traindoc.series import RunSeries

    steps = np.arange(1, 16) * 20
    mean = np.r_[[1.2, 9.5], np.full(13, np.nan)]
    series = {fmt.LOSS_WINDOW + "/mean": pd.Series(mean, index=steps),
              fmt.LOSS_WINDOW + "/var": pd.Series(np.r_[[0.1, 30.0], np.full(13, np.nan)], index=steps),
              fmt.LOSS_WINDOW + "/count": pd.Series(np.full(15, 20.0), index=steps),
              fmt.LOSS_WINDOW + "/nonfinite": pd.Series(np.r_[[0, 3], np.full(13, 20)], index=steps)}
    d = diagnose_run(RunSeries.from_dict("nan-early", series))
    assert d.diagnosed
    (f,) = d.findings
    assert f.rule == "lr_too_high" and f.severity == "error" and f.evidence["diverged"]
    assert f.evidence["first_nonfinite_step"] == 40
