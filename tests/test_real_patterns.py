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



def test_a_sweep_with_its_own_output_paths_and_a_run_planned_shorter():
    """makemore's and word_language_model's LR tries: each run saves to its own path (`work_dir`,
    `save`), the baseline ran longer (`max_steps`), and a run planned at a third of the steps sits
    beside them. The paths and lengths split no sweep; the short run is judged on its own."""
    runs = []
    for i, (lr, steps) in enumerate(((5e-6, 5001), (5e-5, 5001), (5e-4, 7501), (5e-3, 5001), (5e-4, 1501))):
        idx = np.arange(100, steps, 100)
        level = {5e-6: 2.9, 5e-5: 2.3, 5e-4: 2.1, 5e-3: 2.05}[lr]
        loss = level + (3.3 - level) * np.exp(-idx / (800 if lr >= 5e-4 else 3000))
        runs.append(RunSeries.from_dict(f"r{i}", {fmt.LOSS_RAW: pd.Series(loss, index=idx),
                                                  fmt.VAL_LOSS: pd.Series(loss + 0.02, index=idx)},
                                        {"config": {"learning_rate": lr, "max_steps": steps, "work_dir": f"/tmp/o{i}",
                                                    "save": f"/tmp/m{i}.pt", "n_layer": 2}}, path=f"/mm/r{i}"))
    (sweep,) = find_sweeps(runs)
    assert sorted(m.name for m in sweep.members) == ["r0", "r1", "r2", "r3"]  # r4 was planned at 1501 steps
    fired = [{f.rule for f in d.findings} for d in diagnose_runs(runs)]
    assert "lr_too_low" in fired[0] and "lr_too_low" in fired[1] and "lr_too_low" not in fired[3]
    runs[1].meta["config"]["data_dir"] = "/data/other"  # an input that differs is a difference
    assert "r1" not in [m.name for m in find_sweeps(runs)[0].members]

def _yolo_logdir(folder, epochs=60, overfit=True):
    """A detector's TensorBoard run as YOLOv5 writes it: per-epoch loss terms under train/ and
    val/, no total loss, mAP under metrics/, one LR per parameter group as x/lr0..2."""
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(folder)
    for e in range(epochs):
        fall = math.exp(-e / 8)
        for split, extra in (("train", 0.0), ("val", 0.0006 * max(0, e - 20) if overfit else 0.0)):
            w.add_scalar(f"{split}/box_loss", 0.05 + 0.08 * fall + extra, e)
            w.add_scalar(f"{split}/obj_loss", 0.02 + 0.03 * fall + extra, e)
            w.add_scalar(f"{split}/cls_loss", 0.005 + 0.02 * fall + extra, e)
        w.add_scalar("metrics/mAP_0.5", 0.7 * (1 - fall), e)
        sched = 0.01 * (1 - e / epochs)
        warm = min(1.0, (e + 1) / 4)  # a 4-epoch warm-up: the weights' LR rises, the biases' falls from 0.1
        w.add_scalar("x/lr0", 0.1 + (sched - 0.1) * warm, e)
        for g in (1, 2):
            w.add_scalar(f"x/lr{g}", sched * warm, e)
    w.close()


def test_a_detectors_loss_terms_are_summed_into_its_loss_and_judged(tmp_path):
    _yolo_logdir(str(tmp_path / "exp"))
    s, _ = load(str(tmp_path / "exp"))
    assert s.has(fmt.LOSS_RAW) and s.has(fmt.VAL_LOSS) and s.has("lr/pg0") and s.has("lr/pg2")
    e = 30
    fall = math.exp(-e / 8)
    want = (0.05 + 0.08 * fall) + (0.02 + 0.03 * fall) + (0.005 + 0.02 * fall)
    assert abs(s.get(fmt.LOSS_RAW).loc[e] - want) < 1e-5
    assert s.has("custom/train/box_loss")  # the terms stay on the page
    assert any("sum of the 3 loss terms" in r and "`val/cls_loss`" in r for r in s.meta["readings"])
    assert "overfitting" in _fired(s)  # before: no loss at all, the run was not diagnosed
    from traindoc.rules.curves import lr_series

    assert lr_series(s).max() < 0.011  # the weights' schedule, not the biases' warm-down from 0.1
    assert "early_decay" not in _fired(s)
    _yolo_logdir(str(tmp_path / "fine"), overfit=False)
    assert "overfitting" not in _fired(load(str(tmp_path / "fine"))[0])


def test_a_lone_loss_term_or_a_run_with_its_own_total_is_not_summed(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(tmp_path / "a"))
    for s in range(20):
        w.add_scalar("train/box_loss", 1.0 / (s + 1), s)  # one term alone: a part, not the loss
        w.add_scalar("total_loss", 3.0 / (s + 1), s)
        w.add_scalar("train/cls_loss", 2.0 / (s + 1), s)
        w.add_scalar("val/box_loss", 1.0 / (s + 1), s)
    w.close()
    s, _ = load(str(tmp_path / "a"))
    assert np.allclose(s.get(fmt.LOSS_RAW).to_numpy(), 3.0 / np.arange(1, 21))  # its own total, not a sum
    assert not s.has(fmt.VAL_LOSS)  # one validation term is no validation loss


def test_a_hand_written_history_without_an_epoch_column_is_read_row_by_row(tmp_path):
    rows = ["training_loss, training_acc, val_loss, val_acc, time"]
    for e in range(25):
        rows.append(f"{0.69 - 0.001 * e:.5f},{0.45 + 0.001 * e:.5f},{0.52 - 0.0005 * e:.5f},0.72414,0.05")
    (tmp_path / "training_log.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "notes.csv").write_text("name,comment\nrun1,fine\n")  # no loss column: not a run
    from traindoc.discovery import find_runs

    assert find_runs(str(tmp_path)) == [str(tmp_path / "training_log.csv")]
    s, _ = load(str(tmp_path / "training_log.csv"))
    assert list(s.get(fmt.LOSS_RAW).index) == list(range(1, 26))
    assert s.has(fmt.VAL_LOSS) and s.has(fmt.VAL_ACC)
    assert _fired(s)  # a loss that barely moved in 25 epochs is judged, not passed as healthy


def test_a_network_that_never_learned_is_underfitting_and_not_told_to_train_longer():
    """Loss at ln 4 from the first evaluation, accuracy at chance (a LoRA fine-tune at too small an
    LR, a reading-comprehension model): nothing was learned, so more steps are no advice."""
    rng = np.random.default_rng(1)
    n = 40
    val_loss = np.log(4) - 0.0002 * np.arange(n) / n + rng.normal(0, 0.0003, n)  # edging down: not progress
    run = _epochs(np.log(4) + 0.01 + rng.normal(0, 0.004, n), val_loss,
                  **{fmt.VAL_ACC: 0.25 + rng.normal(0, 0.02, n)})
    d = diagnose_run(run)
    stuck = [f for f in d.findings if f.rule == "underfitting"]
    assert stuck and stuck[0].evidence["classes"] == 4 and stuck[0].evidence["never_learned"]
    assert "train_longer" not in {f.rule for f in d.findings}
    assert {s["rule"] for s in d.skipped}.isdisjoint({"underfitting"})  # judged without a train accuracy


def test_one_constant_prediction_or_a_frozen_validation_loss_is_underfitting():
    rng = np.random.default_rng(2)
    train = 0.57 + rng.normal(0, 0.004, 30)
    # the same validation accuracy at every one of 30 epochs: one class predicted for everything
    const = _epochs(train, 0.45 + rng.normal(0, 0.003, 30), **{fmt.VAL_ACC: np.full(30, 0.72414)})
    assert "underfitting" in _fired(const)
    frozen = _epochs(1.34 + rng.normal(0, 0.003, 30), 1.5277 + rng.normal(0, 0.00005, 30))
    assert "underfitting" in _fired(frozen)


def test_runs_that_learned_are_not_read_as_never_learned():
    rng = np.random.default_rng(3)
    e = np.arange(30)
    # converged early: the loss fell, then flat; validation accuracy high and a little noisy
    conv = _epochs(2.3 * np.exp(-e) + 0.1 + rng.normal(0, 0.002, 30), 0.3 + rng.normal(0, 0.002, 30),
                   **{fmt.VAL_ACC: 0.93 + rng.normal(0, 0.003, 30), fmt.TRAIN_ACC_EPOCH: 0.95 + rng.normal(0, 0.003, 30)})
    assert "underfitting" not in _fired(conv)
    # a loss flat at ln 10 but accuracy well above chance is no uniform guess
    flat = _epochs(np.log(10) + rng.normal(0, 0.003, 30), np.log(10) + rng.normal(0, 0.003, 30),
                   **{fmt.VAL_ACC: 0.6 + rng.normal(0, 0.01, 30)})
    assert not any(f.evidence.get("never_learned") for f in diagnose_run(flat).findings)
    # a validation loss that still moves while the train loss falls: learning
    learning = _epochs(2.0 * np.exp(-e / 10) + 0.2, 1.0 + 0.001 * rng.normal(0, 1, 30) - 0.01 * e)
    assert not any(f.evidence.get("never_learned") for f in diagnose_run(learning).findings)


def _windows(name, mean, steps=None):
    steps = np.arange(10, 10 * len(mean) + 1, 10) if steps is None else steps
    s = {fmt.LOSS_WINDOW + "/mean": pd.Series(mean, index=steps), fmt.LOSS_WINDOW + "/var": pd.Series(0.01, index=steps),
         fmt.LOSS_WINDOW + "/count": pd.Series(10.0, index=steps)}
    return RunSeries.from_dict(name, s, {}, path=f"/r/{name}")


def test_a_run_stopped_while_its_train_loss_still_fell_steeply_is_told_to_train_longer():
    """minGPT stopped at 300 or 1001 iterations, a detectron2 run still in its warm-up: no
    validation loss, the train loss still falling at its lowest. Before, nothing was said."""
    t = np.arange(1, 101)
    cut = _windows("cut", 0.5 + 2.0 * np.exp(-t / 60))
    d = diagnose_run(cut)
    (f,) = [f for f in d.findings if f.rule == "train_longer"]
    assert f.evidence["validation"] is None and f.evidence["share_of_total_drop"] > 0.15
    done = _windows("done", 0.5 + 2.0 * np.exp(-t / 10))  # flat for its last two thirds
    assert "train_longer" not in _fired(done)
    few = RunSeries.from_dict("few", {fmt.LOSS_RAW: pd.Series([0.5385, 0.5381, 0.5377, 0.5373, 0.5369],
                                                                index=range(1, 6))}, {}, path="/r/few")
    d = diagnose_run(few)
    assert not d.diagnosed and not d.findings  # 5 points and no validation: not judged, never "healthy"


def test_a_short_per_epoch_log_is_judged_from_its_validation_loss():
    """ultralytics' 5-epoch classify runs: 5 train points, validation still falling at its best."""
    val = np.array([1.993, 1.963, 1.895, 1.860, 1.824])
    run = _epochs(np.linspace(1.99, 1.13, 5), val)
    assert "train_longer" in _fired(run)
    # a fine-tune settling onto its floor: the last step is tiny beside the whole fall
    settled = _epochs(np.linspace(4.3, 0.1, 5), np.array([2.294, 0.705, 0.210, 0.1546, 0.1509]))
    assert "train_longer" not in _fired(settled)


def test_one_off_spikes_a_run_recovered_from_are_healthy_and_repeated_ones_are_not():
    """A warm-up bump at epoch 2 of 20 (ultralytics classify), blips on a solved task, a memorised
    model's train loss wandering at 0.01 beside a validation loss of 0.84: all read as
    explosions before."""
    t = np.arange(1, 101)
    base = 0.3 + 2.0 * np.exp(-t / 15)
    bump = base.copy()
    bump[3] = 4.0  # one window far above where it started, then back
    assert "lr_too_high" not in _fired(_windows("bump", bump))
    spikes = base.copy()
    spikes[[30, 55, 80]] = 4.0
    (f,) = [f for f in diagnose_run(_windows("spikes", spikes)).findings if f.rule == "lr_too_high"]
    assert f.evidence["recovered"] and f.evidence["excursions"] == 3
    rng = np.random.default_rng(4)
    e = np.arange(1, 21)
    memorised = _epochs(0.006 + np.abs(rng.normal(0, 0.003, 20)), 0.84 + rng.normal(0, 0.01, 20))
    assert "lr_too_high" not in _fired(memorised)
    solved = np.abs(rng.normal(0, 1e-6, 60))
    solved[[5, 20, 40]] = (0.07, 0.01, 0.11)
    run = _epochs(np.r_[6e-5, solved[1:]], np.abs(rng.normal(0, 1e-6, 60)) + 1e-9)
    assert "lr_too_high" not in _fired(run)
    assert "lr_too_high" in _fired(_epochs(0.5 + 0.05 * e, 0.9 + 0.05 * e))  # a climb that stays is still one


def test_a_per_batch_validation_accuracy_is_judged_by_its_running_mean_not_one_lucky_batch():
    """A Lightning run that logged `val_accuracy_step` for each of 707 validation batches: one
    batch at 98% early on was taken for the best, and a healthy run was told it overfit."""
    rng = np.random.default_rng(5)
    steps = np.arange(707)
    va = rng.binomial(64, 0.88, 707) / 64
    va[77] = 63 / 64
    ta = 0.47 + 0.38 * (1 - np.exp(-np.arange(127) / 20))
    run = RunSeries.from_dict("v9", {fmt.VAL_ACC: pd.Series(va, index=steps),
                                     fmt.TRAIN_ACC: pd.Series(ta, index=np.arange(49, 6350, 50))},
                              {}, path="/r/v9")
    assert "overfitting" not in _fired(run)
    falling = rng.binomial(64, np.linspace(0.92, 0.78, 707)) / 64  # a real decline, batch by batch
    worse = RunSeries.from_dict("v10", {fmt.VAL_ACC: pd.Series(falling, index=steps * 9),
                                        fmt.TRAIN_ACC: pd.Series(np.linspace(0.80, 0.99, 127),
                                                                 index=np.arange(49, 6350, 50))}, {}, path="/r/v10")
    assert "overfitting" in _fired(worse)


def test_two_points_of_each_loss_are_not_diagnosed_and_never_healthy():
    """A train and a validation loss of two points each: before, the rules that only asked for
    the series to exist counted it as judged, and it read as "no problems found"."""
    run = RunSeries.from_dict("x", {fmt.LOSS_RAW: pd.Series([2.0, 1.5], index=[1, 2]),
                                    fmt.VAL_LOSS: pd.Series([2.1, 1.7], index=[1, 2])}, {}, path="/r/x")
    d = diagnose_run(run)
    assert not d.diagnosed and not d.findings
    assert "3+ validation evaluations" in {m for s in d.skipped for m in s["missing"]}


def test_a_run_with_a_curve_finding_counts_as_diagnosed_whatever_was_skipped():
    from traindoc.rules.base import Finding
    from traindoc.rules.needs import CURVE_RULES, Diagnosis

    skipped = [{"rule": r, "missing": ["train loss"]} for r in CURVE_RULES]
    assert not Diagnosis([], skipped).diagnosed
    swept = Finding("lr_too_high", "warning", (0, 10), {"sweep_best_run": "b"}, "lower it")
    assert Diagnosis([swept], skipped).diagnosed  # a sweep's verdict on a run that diverged at once


def test_a_straight_descent_needs_both_ends_of_the_run_to_fall_alike():
    """lr_too_low's straight line: a YOLO loss under a decaying LR that fell most in its first two
    thirds and is flattening (a PASCAL-flowers yolov5 run), and an MLP that sat at ln 5 for its first
    third and then fell (an MLflow run that overfit), were both told to raise the LR. A loss that
    falls alike from start to end still is."""
    steps = np.arange(1, 201)
    x = (steps - 1) / 199
    settling = 0.243 + 0.05 * (1 - x) ** 1.6  # most of the drop early, a tenth in the last third
    late_start = 1.61 - 0.46 * np.clip((x - 0.45) / 0.55, 0, 1) ** 0.9  # flat first third, then falls
    straight = 2.87 - 1.04 * x
    assert "lr_too_low" not in _fired(_windows("settling", settling, steps))
    assert "lr_too_low" not in _fired(_windows("late", late_start, steps))
    assert "lr_too_low" in _fired(_windows("straight", straight, steps))


def _lora_run(name, lr, level, groups=1):
    """An HF Trainer log at one peak LR under linear decay: 12 evaluations of a 4-class task."""
    idx = np.arange(100, 1201, 100)
    x = idx / 1200
    loss = level + (1.39 - level) * np.exp(-idx / 150) if level < 1.3 else 1.39 + 0.001 * np.sin(idx)
    sched = lr * (1.1 - x) / (1.1 - x[0])  # peak lr at the first log, linear decay
    series = {fmt.LOSS_RAW: pd.Series(loss, index=idx), fmt.VAL_LOSS: pd.Series(loss - 0.003, index=idx)}
    for g in range(groups):
        series[f"{fmt.LR_PREFIX}pg{g}"] = pd.Series(sched * (1 if g == 0 else 100), index=idx)
    return RunSeries.from_dict(name, series, {"source": "tensorboard"}, path=f"/lora/{name}")


def test_two_lrs_a_decade_apart_are_compared_when_each_run_has_one_lr():
    """A LoRA notebook's runs: four at peak LR 5e-6 that never learned (at ln 4 throughout) and one
    at 5e-5 that reached 0.29. The LRs were read from float32 logs (a ratio of 9.9999998), the four
    repeats differ in something the log does not say but all ended alike, and only two LRs were
    tried: each of these kept them from being compared before."""
    lrs = (4.583333520713495e-06,) * 4 + (4.583333429764025e-05,)
    runs = [_lora_run(f"run{i}", lr, 1.39 if i < 4 else 0.29) for i, lr in enumerate(lrs)]
    (sweep,) = find_sweeps(runs)
    assert len(sweep.members) == 5
    fired = [{f.rule for f in d.findings} for d in diagnose_runs(runs)]
    assert all("lr_too_low" in f for f in fired[:4]) and not fired[4]
    # two LRs where a run trains layers at different LRs: which LR was "the" LR is unclear
    per_layer = [_lora_run(f"run{i}", lr, 1.39 if i < 4 else 0.29, groups=2) for i, lr in enumerate(lrs)]
    assert not find_sweeps(per_layer)
    # repeats at one LR that ended far apart differ in something that mattered: no comparison
    split = runs[:2] + [_lora_run("run2", lrs[2], 0.6), _lora_run("run3", lrs[3], 0.6)] + runs[4:]
    assert not find_sweeps(split)


HF_CLM = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "corpus", "real", "scripts", "hf-clm")


def test_the_hf_trainer_runs_with_an_early_floor_a_sweep_and_small_data():
    """Hugging Face's run_clm.py with the collector's Trainer callback (corpus/real/scripts/hf-clm,
    labelled from the script's own trainer_state.json before traindoc read them): a schedule at
    its floor by a fifth and by a tenth of the run, four decades of LR, 24 training blocks. The
    small-data run's data flag is a script argument that the callback never sees, so its config
    equals the baseline's; it trains 2 steps an epoch against 85 and is no seed of the sweep."""
    from traindoc.discovery import find_runs

    paths = sorted(find_runs(HF_CLM))
    runs = [load(p)[0] for p in paths]
    fired = {r.name: {f.rule for f in d.findings} for r, d in zip(runs, diagnose_runs(runs))}
    assert "early_decay" in fired["floor20-wsd"] and "early_decay" in fired["floor10-wsd-linear"]
    assert "lr_too_low" in fired["lr1e-4"] and "lr_too_low" in fired["lr1e-5"] and "lr_too_high" in fired["lr1e-1"]
    assert fired["small24"] == {"overfitting"}
    (sweep,) = find_sweeps(runs)
    assert sorted(m.name for m in sweep.members) == ["lr1e-1", "lr1e-2", "lr1e-3-base", "lr1e-4", "lr1e-5"]


def test_a_run_with_other_steps_per_epoch_is_no_member_of_the_sweep():
    runs = []
    for name, lr, epochs in (("a", 1e-4, 10), ("b", 1e-3, 10), ("c", 1e-2, 10), ("d", 1e-3, 400)):
        idx = np.arange(10, 810, 10)
        loss = 2.0 + 3.0 * np.exp(-idx / (100 if lr > 1e-4 else 600))
        runs.append(RunSeries.from_dict(name, {fmt.LOSS_RAW: pd.Series(loss, index=idx),
                                               fmt.VAL_LOSS: pd.Series(loss + 0.1, index=idx)},
                                        {"config": {"learning_rate": lr, "seed": 1}, "steps": 800, "epochs": epochs},
                                        path=f"/hf/{name}"))
    assert sorted(m.name for m in find_sweeps(runs)[0].members) == ["a", "b", "c"]
    runs[3].meta["epochs"] = 9  # a last partial epoch counted or not: the same data
    assert len(find_sweeps(runs)[0].members) == 4
