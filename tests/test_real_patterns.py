"""What real runs written elsewhere hold, and how traindoc reads and judges them (issue 19).

Each test stands for a failure seen on the real-world set (corpus/real/): validation under other
names and layouts, per-epoch series logged at the epoch's number beside a per-step loss,
per-epoch logs drawn in windows, overfitting by a steady modest rise, unrelated runs taken for
one task, sweeps that change LR-coupled settings with the LR, a network an LR killed at the
start, converged runs told to train longer, a fine-tune's flat loss read as a crawl, and archived
logs shown as stale. The logs of the set are not committed (they belong to their authors), so
these are written here: by the libraries themselves where a file format is involved
(SummaryWriter, json, csv), and as hand-built series where only the rule's reading is.
"""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np
import pandas as pd

from traindoc import format as fmt
from traindoc.discovery import load
from traindoc.reader import RunSeries
from traindoc.rules import diagnose_run, diagnose_runs
from traindoc.rules.sweep import find_sweeps


def _fired(run) -> set:
    return {f.rule for f in diagnose_run(run).findings}


def _age(folder, seconds: float = 3600) -> None:
    """Make every file under `folder` look written `seconds` ago (an archived log)."""
    past = time.time() - seconds
    for d, _, files in os.walk(folder):
        for f in files:
            os.utime(os.path.join(d, f), (past, past))


# ---- reading ------------------------------------------------------------------------------
def _tf2_loop(folder, epochs=50, steps_per_epoch=78, rising=0.0):
    """A TF2-style custom loop: train loss per step in train/, `v_loss`/`v_accuracy` per epoch
    at the epoch's number in test/ (as the issue's logs did), written by a real SummaryWriter."""
    from torch.utils.tensorboard import SummaryWriter

    tr, te = SummaryWriter(os.path.join(folder, "train")), SummaryWriter(os.path.join(folder, "test"))
    for s in range(epochs * steps_per_epoch):
        tr.add_scalar("loss", 2.0 * math.exp(-s / 600) + 0.1, s)
    for e in range(epochs):
        te.add_scalar("v_loss", 1.5 * math.exp(-e / 5) + 0.3 + rising * e, e)
        te.add_scalar("v_accuracy", 0.5 + 0.006 * e, e)
    tr.close()
    te.close()


def test_validation_in_a_test_folder_is_read_and_placed_where_each_epoch_ended(tmp_path):
    _tf2_loop(str(tmp_path / "run"))
    s, _ = load(str(tmp_path / "run"))
    assert s.has(fmt.VAL_LOSS) and s.has(fmt.VAL_ACC)  # `test/v_loss` was a custom scalar before
    val = s.get(fmt.VAL_LOSS)
    last = int(s.get(fmt.LOSS_RAW).index[-1])
    # epoch e (0-based) ended at (e + 1) / 50 of the run, not at step e
    assert list(val.index[:3]) == [round(k * last / 50) for k in (1, 2, 3)] and val.index[-1] == last
    assert any("per epoch" in r and "ratio of lengths" in r for r in s.meta["readings"])


def test_the_runs_own_epoch_counter_places_epochs(tmp_path):
    """Lightning-style: an `epoch` series beside the per-step loss; validation at the epoch number."""
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(tmp_path / "run"))
    step = 0
    for e in range(10):
        for _ in range(100 if e else 60):  # a short first epoch: a plain ratio would misplace it
            w.add_scalar("train_loss", 2.0 / (1 + step / 200), step)
            w.add_scalar("epoch", e, step)
            step += 1
        w.add_scalar("val_loss", 1.0 / (1 + e), e)
    w.close()
    s, _ = load(str(tmp_path / "run"))
    val = s.get(fmt.VAL_LOSS)
    assert list(val.index[:3]) == [59, 159, 259] and int(val.index[-1]) == step - 1
    assert any("epoch counter" in r for r in s.meta["readings"])


def test_several_evaluation_sets_use_one_and_say_which(tmp_path):
    history = []
    for i in range(1, 31):
        history.append({"step": i * 10, "epoch": i / 10, "loss": 2.0 / i ** 0.5, "learning_rate": 1e-4})
        if i % 5 == 0:
            history.append({"step": i * 10, "epoch": i / 10, "eval_test_loss": 1.5 - i / 100,
                            "eval_validation_loss": 1.2 - i / 100, "eval_validation_accuracy": 0.5 + i / 100})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    s, _ = load(str(tmp_path / "out"))
    assert s.get(fmt.VAL_LOSS).iloc[0] == 1.2 - 5 / 100  # the set named validation, not the test set
    assert s.has(fmt.VAL_ACC) and s.has("custom/eval/test_loss")
    assert any("eval/validation_loss" in r and "eval/test_loss" in r for r in s.meta["readings"])


def test_a_per_epoch_log_is_judged_and_drawn_point_by_point(tmp_path):
    from traindoc.app.charts import loss_frame
    from traindoc.rules.curves import loss_curve

    rows = ["epoch,accuracy,loss,val_accuracy,val_loss"]
    for e in range(20):
        rows.append(f"{e},{0.5 + 0.02 * e},{2 * math.exp(-e / 5) + 0.1},{0.5 + 0.015 * e},{1.5 * math.exp(-e / 6) + 0.3}")
    (tmp_path / "history.csv").write_text("\n".join(rows) + "\n")
    s, _ = load(str(tmp_path / "history.csv"))
    raw = s.get(fmt.LOSS_RAW)
    frame = loss_frame(s)
    assert len(frame) == 20 and np.allclose(frame["mean"].to_numpy(), raw.to_numpy())  # was 4 windows of 5 epochs
    assert frame["std"].isna().all()  # no noise band made of the trend itself
    assert np.allclose(loss_curve(s).mean, raw.to_numpy())


def test_archived_logs_say_ended_or_no_end_marker_never_stale(tmp_path):
    from traindoc.status import status_of
    from traindoc.catalog import Catalog

    _tf2_loop(str(tmp_path / "root" / "tb"), epochs=3, steps_per_epoch=20)
    history = [{"step": s, "epoch": s / 10, "loss": 1.0 / s} for s in range(1, 12)]
    (tmp_path / "root" / "hf").mkdir()
    (tmp_path / "root" / "hf" / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    cat = Catalog(str(tmp_path / "root"))
    cat.refresh()  # indexed while just written: running
    assert {r["status"] for r in cat.query()[0]} == {"running"}
    (tmp_path / "root" / "hf" / "trainer_state.json").write_text(json.dumps(
        {"log_history": history + [{"step": 11, "train_runtime": 12.5, "train_loss": 0.3}]}))
    _age(str(tmp_path / "root"))
    cat.refresh()
    rows = {r["name"]: r for r in cat.query()[0]}
    assert rows["tb"]["status"] == "no end marker" and rows["hf"]["status"] == "ended"
    for r in rows.values():
        assert status_of({"status": r["status"], "updated": r["updated"]}) == r["status"] != "stale"


# ---- rules --------------------------------------------------------------------------------
def _epochs(train, val, name="r", path="/runs/r", meta=None, **more):
    idx = np.arange(1, len(train) + 1)
    series = {fmt.LOSS_RAW: pd.Series(train, index=idx), fmt.VAL_LOSS: pd.Series(val, index=idx)}
    series.update({k: pd.Series(v, index=idx) for k, v in more.items()})
    return RunSeries.from_dict(name, series, {"source": "csv", **(meta or {})}, path=path)


def test_a_steady_modest_rise_of_the_validation_loss_is_overfitting():
    """The issue's run: validation loss rising steadily for 11 epochs to 8% above its minimum while
    the train loss fell 20x; the fixed 10% threshold missed it."""
    train = 2.0 * np.exp(-np.arange(30) / 10)
    val = np.r_[np.linspace(1.0, 0.60, 19), 0.60 * (1 + 0.08 * np.arange(1, 12) / 11)]
    assert "overfitting" in _fired(_epochs(train, val))
    wobble = np.r_[np.linspace(1.0, 0.60, 19), 0.60 * (1 + 0.03 * np.sin(np.arange(1, 12)))]
    assert "overfitting" not in _fired(_epochs(train, wobble))  # noise around the minimum is not a rise


def test_a_validation_loss_at_about_zero_needs_no_more_epochs():
    train = 1e-5 + np.exp(-np.arange(30) / 3)
    val = 1e-5 + 0.5 * np.exp(-np.arange(30) / 2)
    assert "train_longer" not in _fired(_epochs(train, val))
    still = 0.5 + 0.5 * np.exp(-np.arange(30) / 15)  # the same shape, far from zero and still falling
    assert "train_longer" in _fired(_epochs(train + 0.5, still))


def test_a_network_killed_at_the_start_is_lr_too_high_not_underfitting():
    """Loss exploded in the first epoch, then sat at ln 10 with accuracy at chance for 50 epochs."""
    rng = np.random.default_rng(0)
    train = np.r_[14.5, np.log(10) + rng.normal(0, 0.002, 49)]
    acc = 0.1 + rng.normal(0, 0.003, 50)
    run = _epochs(train, np.full(50, np.log(10)), **{fmt.TRAIN_ACC_EPOCH: acc, fmt.VAL_ACC: acc})
    d = diagnose_run(run)
    assert {f.rule for f in d.findings} == {"lr_too_high"}
    assert d.findings[0].evidence["predicts_prior"] and d.findings[0].evidence["classes"] == 10
    # a run that sat at ln 10 from its first step never blew up: not this reading
    flat = _epochs(np.log(10) + rng.normal(0, 0.002, 50), np.full(50, np.log(10)),
                   **{fmt.TRAIN_ACC_EPOCH: acc, fmt.VAL_ACC: acc})
    assert not any(f.evidence.get("predicts_prior") for f in diagnose_run(flat).findings)


def test_a_loss_that_fell_inside_the_first_window_and_crept_is_no_crawl():
    """The issue's LM at 300x the LR: from ln(vocab) to the labels' entropy inside the first window,
    then 3.48 -> 3.19 over the run. Read as 'barely moved, falling steadily' before."""
    steps = np.arange(10, 560, 10)
    mean = 3.48 - 0.29 * (steps - steps[0]) / (steps[-1] - steps[0])
    s = {fmt.LOSS_WINDOW + "/mean": pd.Series(mean, index=steps), fmt.LOSS_WINDOW + "/var": pd.Series(0.01, index=steps),
         fmt.LOSS_WINDOW + "/count": pd.Series(10.0, index=steps), fmt.LOSS_FIRST: pd.Series([4.17], index=[1])}
    assert "lr_too_low" not in _fired(RunSeries.from_dict("lm", s, {}, path="/r/lm"))
    # a fine-tune from a pretrained model: fast early, then flattening, under 10% overall
    fine = 1.93 - 0.17 * (1 - np.exp(-(steps - steps[0]) / 120))
    assert "lr_too_low" not in _fired(RunSeries.from_dict("ft", {fmt.LOSS_RAW: pd.Series(fine, index=steps)}, {},
                                                          path="/r/ft"))


def test_runs_on_different_datasets_are_no_task_and_never_named():
    """Same folder, same class count, different experiments: no ceiling from an unrelated run."""
    def acc_run(name, dataset, train_acc, val_acc):
        idx = np.arange(1, 21)
        loss = 2.0 * np.exp(-idx / 6) + 0.5
        return RunSeries.from_dict(name, {
            fmt.LOSS_RAW: pd.Series(loss, index=idx), fmt.VAL_LOSS: pd.Series(loss + 0.1, index=idx),
            fmt.TRAIN_ACC_EPOCH: pd.Series(np.linspace(0.2, train_acc, 20), index=idx),
            fmt.VAL_ACC: pd.Series(np.linspace(0.2, val_acc, 20), index=idx)},
            {"config": {"dataset": dataset, "lr": 0.01}, "num_classes": 10}, path=f"/exp/{name}")
    runs = [acc_run("cifar-mlp", "cifar10", 0.52, 0.51), acc_run("mnist-a", "mnist", 0.97, 0.88),
            acc_run("mnist-b", "mnist", 0.96, 0.87)]
    from traindoc.rules.together import study

    findings = diagnose_runs(runs)[0].findings
    assert not any("mnist" in json.dumps(f.to_dict()) for f in findings)
    assert not study(runs).tasks  # two datasets: no task of three
    same = [acc_run("cifar-mlp", "mnist", 0.52, 0.51)] + runs[1:]  # one dataset, one script: one task
    assert [len(t.members) for t in study(same).tasks] == [3]


def test_a_sweep_that_sets_min_lr_from_the_lr_is_still_a_sweep():
    runs = []
    for lr in (1e-4, 1e-3, 1e-2, 1e-1):
        idx = np.arange(1, 41)
        level = {1e-4: 1.5, 1e-3: 0.8, 1e-2: 0.4, 1e-1: 0.45}[lr]
        loss = level + (2.3 - level) * np.exp(-idx / 8)
        runs.append(RunSeries.from_dict(f"lr{lr}", {fmt.LOSS_RAW: pd.Series(loss, index=idx),
                                                    fmt.VAL_LOSS: pd.Series(loss + 0.05, index=idx)},
                                        {"config": {"lr": lr, "min_lr": lr / 10, "warmup_steps": 100,
                                                    "batch_size": 64}}, path=f"/sweep/lr{lr}"))
    sweeps = find_sweeps(runs)
    assert len(sweeps) == 1 and len(sweeps[0].members) == 4
    assert "lr_too_low" in {f.rule for f in diagnose_runs(runs)[0].findings}
    runs[0].meta["config"]["batch_size"] = 32  # a setting that is not the LR's: that run leaves the sweep
    assert [m.name for m in find_sweeps(runs)[0].members] == ["lr0.001", "lr0.01", "lr0.1"]
