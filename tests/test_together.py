"""Runs judged together (sweeps over the LR, a task's ceiling) and this wave's single-run
behaviours, on hand-built series: each test states a case that the rules got wrong before."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from traindoc import collector
from traindoc.reader import RunSeries
from traindoc.rules import diagnose_run, diagnose_runs, run_rules
from traindoc.rules.sweep import find_sweeps

from tests.test_rules import rules_fired, run_of, windows

T = np.arange(60)
VAL_STEPS = [100, 200, 300, 400, 500, 600]


def _run(name, loss, val_loss, config=None, folder="/sweeps/a", lr_series=None):
    s = windows(loss, var=1e-4)
    s["val/loss"] = pd.Series(val_loss, index=VAL_STEPS)
    if lr_series is not None:
        s["lr/pg0"] = pd.Series([lr_series], index=[10])
    return RunSeries.from_dict(name, s, {"config": config} if config is not None else {},
                               path=f"{folder}/{name}")


def _curve(level, tau=8.0):
    """A healthy-shaped curve from 2.3 to `level`."""
    return level + (2.3 - level) * np.exp(-T / tau)


def _val(level):
    return [level + (2.3 - level) * np.exp(-k) + 0.02 for k in range(1, 7)]


def _sweep(levels: dict, extra=None, folder="/sweeps/a"):
    """One run per LR, ending at the given loss level (lower is better)."""
    return [_run(f"lr{lr:g}", _curve(lv), _val(lv), {"lr": lr, "seed": 0, "wd": 0.0, **(extra or {})}, folder)
            for lr, lv in levels.items()]


def _by_name(runs, diagnoses):
    return {r.name: {f.rule: f for f in d.findings} for r, d in zip(runs, diagnoses)}


def test_a_sweep_names_too_low_and_too_high_by_the_side_of_the_best():
    runs = _sweep({1e-4: 1.6, 1e-3: 0.9, 1e-2: 0.3, 3e-2: 0.32, 1e-1: 0.7, 1.0: 1.5})
    got = _by_name(runs, diagnose_runs(runs))
    low = got["lr0.0001"]["lr_too_low"]
    assert low.evidence["sweep_best_run"] == "lr0.01" and low.evidence["sweep_best_lr"] == 1e-2
    assert len(low.evidence["sweep_runs"]) == 6 and "lr0.01 (lr 0.01)" in low.evidence["sweep_runs"]
    assert "lr_too_low" in got["lr0.001"]
    assert "lr_too_high" in got["lr0.1"] and "lr_too_high" in got["lr1"]
    assert got["lr1"]["lr_too_high"].evidence["lr_ratio_to_best"] == pytest.approx(100)
    assert not {"lr_too_low", "lr_too_high"} & set(got["lr0.01"])  # the best
    assert not {"lr_too_low", "lr_too_high"} & set(got["lr0.03"])  # 3x from the best: a neighbour
    # alone, the same curves are healthy-shaped: only the siblings tell
    assert not {"lr_too_low", "lr_too_high"} & {f.rule for f in diagnose_run(runs[0]).findings}


def test_seeds_are_averaged_and_other_hyperparameters_split_sweeps():
    runs = _sweep({1e-3: 1.2, 1e-2: 0.3, 1e-1: 0.9})
    runs += [_run(f"{r.name}-s1", r.get("train/loss/mean").to_numpy(), r.get("val/loss").to_numpy(),
                  {**r.meta["config"], "seed": 1}) for r in runs]
    (sweep,) = find_sweeps(runs)
    assert len(sweep.members) == 6
    other = _sweep({1e-3: 1.2, 1e-2: 0.3, 1e-1: 0.9}, extra={"wd": 0.1})
    assert len(find_sweeps(runs + other)) == 2  # weight decay differs: two sweeps, not one
    elsewhere = _sweep({1e-3: 1.2, 1e-2: 0.3, 1e-1: 0.9}, folder="/sweeps/b")
    assert len(find_sweeps(runs + elsewhere)) == 2  # another folder: another sweep
    assert find_sweeps(runs[:2]) == []  # two LRs are no sweep


def test_what_the_collector_saw_splits_runs_a_thin_config_calls_a_sweep():
    """sample_runs' configs list model, optimizer, LR and batch size only: an early-decay schedule,
    a linear model or heavy weight decay beside a low-LR run must not make them one sweep."""
    runs = _sweep({1e-4: 1.6, 1e-3: 0.9, 1e-2: 0.3})
    for r in runs:
        r.meta.update(model_class="MLP", num_params=1000, optimizers=["SGD"], weight_decay=[0.0])
    assert len(find_sweeps(runs)) == 1
    runs[2].meta["weight_decay"] = [0.3]
    assert find_sweeps(runs) == []
    runs[2].meta["weight_decay"] = [0.0]
    runs[1].meta["num_params"] = 50  # a smaller model
    assert find_sweeps(runs) == []


def test_a_single_run_lr_reading_that_the_sweep_contradicts_is_withdrawn():
    straight = np.linspace(2.3, 0.5, 60)  # alone: a straight descent, read as lr_too_low
    best = _run("lr0.01", straight, _val(0.45), {"lr": 1e-2, "seed": 0, "wd": 0.0})
    assert "lr_too_low" in {f.rule for f in diagnose_run(best).findings}
    runs = [best] + _sweep({1e-3: 1.5, 1e-1: 1.0, 1.0: 1.8})
    got = _by_name(runs, diagnose_runs(runs))
    assert "lr_too_low" not in got["lr0.01"]  # a higher LR did worse: raising it is no fix
    assert "lr_too_high" in got["lr0.1"] and "lr_too_low" in got["lr0.001"]


def test_sweeps_without_hyperparameters_come_from_the_logged_lr():
    runs = [_run(f"r{i}", _curve(lv), _val(lv), None, lr_series=lr)
            for i, (lr, lv) in enumerate({1e-4: 1.6, 1e-3: 0.9, 1e-2: 0.3}.items())]
    (sweep,) = find_sweeps(runs)
    assert sorted(m.lr for m in sweep.members) == [1e-4, 1e-3, 1e-2]
    assert "lr_too_low" in _by_name(runs, diagnose_runs(runs))["r0"]
    # two runs at one LR without hyperparameters: something else differs, no sweep
    twin = _run("twin", _curve(0.5), _val(0.5), None, lr_series=1e-3)
    assert find_sweeps(runs + [twin]) == []


def _acc_run(name, train_acc, val_acc, folder="/task", classes=10):
    steps = np.arange(1, 61) * 10
    s = {"train/acc": pd.Series(np.r_[np.linspace(0.1, train_acc, 20), np.full(40, train_acc)], index=steps),
         "val/acc": pd.Series([0.1, val_acc - 0.05, val_acc, val_acc, val_acc, val_acc], index=VAL_STEPS)}
    s.update(windows(_curve(1.0)))
    return RunSeries.from_dict(name, s, {"num_classes": classes}, path=f"{folder}/{name}")


def test_the_tasks_ceiling_withdraws_underfitting_where_no_run_did_better():
    """A character LM: no model gets near perfect accuracy. A run at 0.50 train / 0.49 val is
    as good as the task allows when its best sibling, which fits beyond what generalises, reaches 0.52."""
    runs = [_acc_run("a", 0.50, 0.49), _acc_run("b", 0.60, 0.52), _acc_run("c", 0.46, 0.45)]
    assert "underfitting" in rules_fired({k: runs[0].get(k) for k in runs[0].keys}, {"num_classes": 10})
    got = _by_name(runs, diagnose_runs(runs))
    assert "underfitting" not in got["a"]
    # a folder where every run is low and none fits beyond validation: nothing is withdrawn
    low = [_acc_run(n, 0.30, 0.29, folder="/tiny") for n in ("x", "y", "z")]
    assert all("underfitting" in v for v in _by_name(low, diagnose_runs(low)).values())
    # a much better sibling leaves the finding standing
    runs[1] = _acc_run("b", 1.0, 0.95)
    assert "underfitting" in _by_name(runs, diagnose_runs(runs))["a"]


def test_far_below_what_the_task_reaches_with_a_small_gap_is_underfitting():
    """0.60 train / 0.57 val looks fair against perfect (a 3-point gap), but a sibling on the same
    task reaches 0.95: the run does not fit its data. At chance, though, it learned nothing at all,
and the siblings do not call that a capacity limit."""
    runs = [_acc_run("small", 0.60, 0.57), _acc_run("big", 0.99, 0.95), _acc_run("mid", 0.97, 0.94)]
    assert "underfitting" not in rules_fired({k: runs[0].get(k) for k in runs[0].keys}, {"num_classes": 10})
    f = _by_name(runs, diagnose_runs(runs))["small"]["underfitting"]
    assert f.evidence["task_best_run"] == "big" and f.evidence["task_best_val_acc"] == pytest.approx(0.95)
    runs[0] = _acc_run("small", 0.11, 0.10)  # the siblings add nothing at chance
    at_chance = _by_name(runs, diagnose_runs(runs))["small"].get("underfitting")
    assert at_chance is None or "task_best_run" not in at_chance.evidence


def test_a_loss_that_barely_moved_but_falls_steadily_is_lr_too_low():
    crawl = 2.30 - 0.08 * T / 60  # 3.5% of the first loss in the whole run, falling all along
    f = {x.rule: x for x in run_rules(run_of(windows(crawl, var=1e-4)))}
    assert f["lr_too_low"].evidence["share_of_first_loss_gained"] < 0.1
    rng = np.random.default_rng(3)
    flat = 2.30 + rng.normal(0, 0.003, 60)  # barely moved and not falling: no LR reading
    assert "lr_too_low" not in rules_fired(windows(flat, var=1e-4))
    stalled = 2.30 - 0.1 * (1 - np.exp(-T / 3))  # dropped a little, then flat: a stall, not a crawl
    assert "lr_too_low" not in rules_fired(windows(stalled, var=1e-4))


def test_train_longer_from_the_validation_losss_own_last_step():
    """Two evaluations, the second 10% lower: still improving, even where the train loss's last third is a small
    share of a large early drop (a language model cut at a sixth of its budget)."""
    loss = 2.2 + 2.3 * np.exp(-T / 4) - 0.002 * T
    s = windows(loss, var=1e-3)
    s["val/loss"] = pd.Series([2.65, 2.40], index=[300, 600])
    assert "train_longer" in rules_fired(s)
    s["val/loss"] = pd.Series([2.41, 2.40], index=[300, 600])  # 0.4%: converging
    assert "train_longer" not in rules_fired(s)


def test_train_longer_waits_when_the_validation_loss_turned_up():
    steps = np.arange(1, 61) * 10
    s = {"train/acc": pd.Series(np.linspace(0.5, 0.99, 60), index=steps),
         "val/acc": pd.Series([0.5, 0.6, 0.65, 0.68, 0.70, 0.72], index=VAL_STEPS),
         "val/loss": pd.Series([1.0, 0.8, 0.7, 0.72, 0.8, 0.9], index=VAL_STEPS)}
    s.update(windows(_curve(0.1)))
    assert "train_longer" not in rules_fired(s, {"num_classes": 10})
    s["val/loss"] = pd.Series([1.0, 0.8, 0.7, 0.65, 0.6, 0.58], index=VAL_STEPS)
    assert "train_longer" in rules_fired(s, {"num_classes": 10})


def test_a_spike_the_run_survived_is_a_warning_not_a_divergence():
    loss = _curve(0.3).copy()
    loss[20:23] = [3.9, 3.6, 1.0]  # 1.7x the first loss, then back down
    f = {x.rule: x for x in run_rules(run_of(windows(loss, var=1e-4)))}
    assert "lr_too_high" not in f  # one spike the run recovered from is healthy (corpus/real/LABELS.md)
    loss[35:37] = [3.9, 3.6]
    loss[50:52] = [3.9, 3.6]  # the third: a pattern
    f = {x.rule: x for x in run_rules(run_of(windows(loss, var=1e-4)))}
    assert f["lr_too_high"].severity == "warning" and f["lr_too_high"].evidence["diverged"] is False
    assert f["lr_too_high"].evidence["recovered"] is True
    loss[23:] = 4.0  # stays up: exploded
    f = {x.rule: x for x in run_rules(run_of(windows(loss, var=1e-4)))}
    assert f["lr_too_high"].severity == "error" and f["lr_too_high"].evidence["diverged"] is True


def test_a_cut_in_the_last_stretch_is_no_early_decay():
    """ReduceLROnPlateau halving the LR at 85% of the run: the schedule's ending, not an early decay."""
    def stalls_after(k):  # falling fast until window k, flat after
        return np.r_[2.3 - 1.5 * np.arange(k) / k, np.full(60 - k, 0.8)]

    s = windows(stalls_after(51), var=1e-4)
    s["lr/pg0"] = pd.Series([0.05, 0.0005], index=[10, 510])
    assert "early_decay" not in rules_fired(s)
    s = windows(stalls_after(11), var=1e-4)
    s["lr/pg0"] = pd.Series([0.05, 0.0005], index=[10, 110])  # the same cut at 18% of the run: early
    assert "early_decay" in rules_fired(s)


def test_the_cli_judges_a_real_sweep_together(tmp_path):
    """Runs written by the collector in one folder, differing only in `config={"lr": ...}`: `traindoc
    diagnose --json` names the sibling that did better."""
    import torch

    for lr in (1e-4, 1e-2, 1e-1):
        torch.manual_seed(0)
        x = torch.randn(512, 8)
        y = (x[:, :2].sum(1) > 0).long()
        model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        run = collector.attach(model, opt, root=str(tmp_path), name=f"lr{lr:g}", config={"lr": lr, "seed": 0},
                               num_classes=2, log_every=4)
        for epoch in range(8):
            for b in range(0, 512, 32):
                out = model(x[b:b + 32])
                loss = torch.nn.functional.cross_entropy(out, y[b:b + 32])
                opt.zero_grad()
                loss.backward()
                opt.step()
                run.log_train(loss, output=out, target=y[b:b + 32])
            with torch.no_grad():
                out = model(x)
                run.log_val(loss=float(torch.nn.functional.cross_entropy(out, y)),
                            accuracy=float((out.argmax(1) == y).float().mean()))
        run.close()
    out = subprocess.run([sys.executable, "-m", "traindoc.cli", "diagnose", str(tmp_path), "--json"],
                         capture_output=True, text=True)
    runs = {r["run"]: r for r in json.loads(out.stdout)["runs"]}
    low = [f for f in runs["lr0.0001"]["findings"] if f["rule"] == "lr_too_low"]
    assert low and low[0]["evidence"].get("sweep_best_run") in ("lr0.01", "lr0.1"), runs["lr0.0001"]["findings"]
    assert os.path.isdir(tmp_path / "lr0.01")
