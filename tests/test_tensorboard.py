"""TensorBoard interop with real writers: every tag convention, the same findings as the
native run, export read back by TensorBoard's own loader, growing and broken files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing import event_accumulator as ea

from tests.conftest import blobs, mlp
from traindoc.diagnose import diagnose_path
from traindoc.reader import read_run
from traindoc.tb import TBRunReader, find_tb_runs, read_tb_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "sample_runs")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINDOC_CACHE", str(tmp_path / "cache"))


def writer_class(kind: str):
    if kind == "torch":
        from torch.utils.tensorboard import SummaryWriter
    else:
        from tensorboardX import SummaryWriter
    return SummaryWriter


def train_logging(log, epochs=3, steps_per_epoch=100, lr=0.05):
    """A real small training loop; `log(kind, step, epoch, value)` writes in some convention.

    Returns what was logged, per kind, as {step: value}."""
    x, y = blobs(n=1280)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, steps_per_epoch, 0.5)
    n_train = 1200
    logged: dict = {}
    step = 0
    for epoch in range(epochs):
        for i in range(steps_per_epoch):
            b = (step * 32) % (n_train - 32)
            out = model(x[b:b + 32])
            loss = F.cross_entropy(out, y[b:b + 32])
            opt.zero_grad()
            loss.backward()
            lr_now = opt.param_groups[0]["lr"]
            opt.step()
            sched.step()
            step += 1
            for kind, v in (("loss", loss.item()), ("acc", (out.argmax(-1) == y[b:b + 32]).float().mean().item()),
                            ("lr", lr_now)):
                log(kind, step, epoch, v)
                logged.setdefault(kind, {})[step] = v
        with torch.no_grad():
            out = model(x[1200:])
            for kind, v in (("val_loss", F.cross_entropy(out, y[1200:]).item()),
                            ("val_acc", (out.argmax(-1) == y[1200:]).float().mean().item())):
                log(kind, step, epoch, v)
                logged.setdefault(kind, {})[epoch if kind.startswith("epoch") else step] = v
    return logged


def _check(series, key, expected: dict):
    got = series.get(key)
    assert list(got.index) == sorted(expected), key
    np.testing.assert_allclose(got.to_numpy(), [expected[k] for k in sorted(expected)], rtol=1e-6)


@pytest.mark.parametrize("kind", ["torch", "tensorboardX"])
def test_huggingface_trainer_tags(tmp_path, kind):
    w = writer_class(kind)(str(tmp_path / "hf"))
    tags = {"loss": "train/loss", "lr": "train/learning_rate", "acc": "train/accuracy_not_mapped",
            "val_loss": "eval/loss", "val_acc": "eval/accuracy"}
    logged = train_logging(lambda k, s, e, v: w.add_scalar(tags[k], v, s))
    w.add_scalar("eval/f1", 0.5, 60)
    w.add_scalar("train/epoch", 3.0, 60)
    w.close()
    s = read_tb_run(str(tmp_path / "hf"))
    _check(s, "train/loss", logged["loss"])
    _check(s, "lr/pg0", logged["lr"])
    _check(s, "val/loss", logged["val_loss"])
    _check(s, "val/acc", logged["val_acc"])
    assert s.get("val/f1").tolist() == [0.5] and s.get("epoch").tolist() == [3.0]
    assert "custom/train/accuracy_not_mapped" in s.keys  # unmapped tags stay visible
    # 300 per-step losses: rolling windows give the rules and the band a mean and variance
    assert len(s.get("train/loss/mean")) == 150 and s.get("train/loss/count").tolist() == [2.0] * 150
    assert s.get("train/loss/var").iloc[0] == pytest.approx(np.var([logged["loss"][1], logged["loss"][2]]))


@pytest.mark.parametrize("kind", ["torch", "tensorboardX"])
def test_lightning_tags(tmp_path, kind):
    w = writer_class(kind)(str(tmp_path / "lightning_logs" / "version_0"))
    tags = {"loss": "train_loss_step", "acc": "train_acc_step", "lr": "lr-SGD", "val_loss": "val_loss",
            "val_acc": "val_acc"}
    logged = train_logging(lambda k, s, e, v: w.add_scalar(tags[k], v, s))
    for e in range(3):
        w.add_scalar("train_loss_epoch", 1.0 / (e + 1), 100 * (e + 1))
        w.add_scalar("epoch", float(e), 100 * (e + 1))
    w.add_scalar("lr-SGD-momentum", 0.9, 1)
    w.add_scalar("lr-Adam", 1e-3, 1)
    w.close()
    (path,) = find_tb_runs(str(tmp_path))
    s = read_tb_run(path)
    _check(s, "train/loss", logged["loss"])
    _check(s, "lr/pg0", logged["lr"])
    _check(s, "val/acc", logged["val_acc"])
    assert s.get("train_epoch/loss/mean").tolist() == [1.0, 0.5, pytest.approx(1 / 3)]
    assert s.get("momentum/pg0").tolist() == [pytest.approx(0.9)]
    assert s.get("lr/opt1/pg0").tolist() == [pytest.approx(1e-3)]  # a second optimizer


@pytest.mark.parametrize("kind", ["torch", "tensorboardX"])
@pytest.mark.parametrize("style", ["slash_suffix", "underscore_prefix", "dash_prefix"])
def test_plain_names(tmp_path, kind, style):
    names = {
        "slash_suffix": {"loss": "Loss/train", "acc": "Accuracy/train", "lr": "lr", "val_loss": "Loss/valid",
                         "val_acc": "Accuracy/valid"},
        "underscore_prefix": {"loss": "train_loss", "acc": "train_acc", "lr": "learning_rate",
                              "val_loss": "val_loss", "val_acc": "val_accuracy"},
        "dash_prefix": {"loss": "loss", "acc": "acc", "lr": "lr", "val_loss": "validation-loss",
                        "val_acc": "eval-acc"},
    }[style]
    w = writer_class(kind)(str(tmp_path / "run"))
    logged = train_logging(lambda k, s, e, v: w.add_scalar(names[k], v, s))
    w.close()
    s = read_tb_run(str(tmp_path / "run"))
    _check(s, "train/loss", logged["loss"])
    _check(s, "lr/pg0", logged["lr"])
    _check(s, "val/loss", logged["val_loss"])
    _check(s, "val/acc", logged["val_acc"])
    assert s.has("train/acc")


def test_keras_layout_written_by_a_writer_is_one_run(tmp_path):
    """The Keras callback's layout (train/ and validation/ of one run, epoch_* and batch_*)."""
    from torch.utils.tensorboard import SummaryWriter

    run = tmp_path / "logs" / "fit"
    wt, wv = SummaryWriter(str(run / "train")), SummaryWriter(str(run / "validation"))
    tags = {"loss": (wt, "batch_loss"), "acc": (wt, "batch_accuracy"), "val_loss": (wv, "epoch_loss"),
            "val_acc": (wv, "epoch_accuracy")}

    def log(kind, step, epoch, v):
        if kind in tags:
            writer, tag = tags[kind]
            writer.add_scalar(tag, v, epoch if tag.startswith("epoch") else step - 1)
        if kind == "lr" and step % 20 == 0:
            wt.add_scalar("epoch_learning_rate", v, epoch)
            wt.add_scalar("epoch_loss", v * 10, epoch)
    logged = train_logging(log, steps_per_epoch=20)
    wt.close()
    wv.close()
    assert find_tb_runs(str(tmp_path)) == [str(run)]
    (report,) = diagnose_path(str(tmp_path))
    s = read_tb_run(str(run))
    assert s.meta["keras"] is True
    assert len(s.get("train/loss")) == 60 and len(s.get("val/acc")) == 3
    # epoch-level points sit at the last batch of their epoch, on the batch axis
    assert list(s.get("val/acc").index) == [20, 40, 60]
    np.testing.assert_allclose(s.get("val/acc").to_numpy(), [logged["val_acc"][k] for k in (20, 40, 60)])
    assert s.has("lr/pg0") and s.has("train_epoch/loss/mean")


def test_keras_logdir_written_by_tensorflow(tmp_path):
    """Event files written by TensorFlow's own Keras TensorBoard callback (a committed fixture;
    tests/fixtures/make_keras_logdir.py made it with tensorflow-cpu, which the tests do not need)."""
    src = os.path.join(FIXTURES, "keras_logdir")
    shutil.copytree(src, tmp_path / "keras")
    runs = find_tb_runs(str(tmp_path / "keras"))
    assert len(runs) == 1
    s = read_tb_run(runs[0])
    expected = json.load(open(os.path.join(src, "expected.json")))
    for key, values in expected["series"].items():
        np.testing.assert_allclose(s.get(key).to_numpy(), values, rtol=1e-5, err_msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["early-decay-mlp-sgd", "lr-high-cnn-adam", "underfit-linear-sgd",
                                  "train-longer-cnn-sgd"])
def test_same_findings_from_tensorboard_copy(tmp_path, name):
    """One training, logged both ways: the collector's run and a plain SummaryWriter logdir."""
    sys.path.insert(0, SAMPLES)
    import generate

    torch.set_num_threads(1)
    (sc,) = [s for s in generate.SCENARIOS if s.name == name]
    generate.train(sc, str(tmp_path / "native"), tb_dir=str(tmp_path / "tb" / name))
    (native,) = diagnose_path(str(tmp_path / "native" / name))
    (tb,) = diagnose_path(str(tmp_path / "tb" / name))
    assert native.findings, "the scenario must give a finding for this test to mean something"
    assert sorted(f.rule for f in tb.findings) == sorted(f.rule for f in native.findings)


def test_export_read_back_by_tensorboard(tmp_path):
    run_path = os.path.join(SAMPLES, "early-decay-mlp-sgd")
    out = tmp_path / "tb"
    r = subprocess.run([sys.executable, "-m", "traindoc.cli", "export-tb", run_path, "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    acc = ea.EventAccumulator(str(out), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    native = read_run(run_path)
    assert {"train/loss/mean", "train/loss/std", "train/loss/lower", "train/loss/upper", "lr/pg0",
            "update_ratio/0.weight", "update_ratio/_global", "val/acc", "train/acc"} <= tags
    mean = {e.step: e.value for e in acc.Scalars("train/loss/mean")}
    np.testing.assert_allclose([mean[k] for k in native.get("train/loss/mean").index],
                               native.get("train/loss/mean").to_numpy(), rtol=1e-6)
    std = {e.step: e.value for e in acc.Scalars("train/loss/std")}
    np.testing.assert_allclose([std[k] for k in native.get("train/loss/var").index],
                               np.sqrt(native.get("train/loss/var").to_numpy()), rtol=1e-5)
    ratio = {e.step: e.value for e in acc.Scalars("update_ratio/2.weight")}
    assert set(native.get("update_ratio/2.weight").index) <= set(ratio)
    lr = {e.step: e.value for e in acc.Scalars("lr/pg0")}
    assert lr[250] == pytest.approx(0.02) and lr[251] == pytest.approx(0.0002)  # a step, not a ramp
    assert "custom_scalars__config__" in acc.Tags()["tensors"]
    # and traindoc reads its own export back to the same findings
    (report,) = diagnose_path(str(out))
    assert [f.rule for f in report.findings] == ["early_decay"]


def test_growing_file_read_incrementally_and_cached(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(tmp_path / "live"))
    for i in range(100):
        w.add_scalar("train/loss", 1.0 / (i + 1), i)
    w.flush()
    r = TBRunReader(str(tmp_path / "live"))
    assert r.poll() == 100
    for i in range(100, 150):
        w.add_scalar("train/loss", 1.0 / (i + 1), i)
    w.flush()
    assert r.poll() == 50  # only the new points
    assert r.poll() == 0
    assert len(r.series().get("train/loss")) == 150
    w.close()
    r2 = TBRunReader(str(tmp_path / "live"))
    r2.poll()
    assert r2.records == 150
    from traindoc.paths import tb_cache_dir

    cached = [f for f in os.listdir(tb_cache_dir()) if f.endswith(".npz")]
    assert cached  # the second reader started from the cache
    assert r2.series().get("train/loss").equals(r.series().get("train/loss"))


def _event_file(folder):
    (name,) = [f for f in os.listdir(folder) if ".tfevents." in f]
    return os.path.join(folder, name)


def test_truncated_and_corrupt_files(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    for name in ("cut", "garbage"):
        w = SummaryWriter(str(tmp_path / "logs" / name))
        for i in range(200):
            w.add_scalar("loss", 2.0 - i / 200, i)
        w.close()
    cut = _event_file(tmp_path / "logs" / "cut")
    with open(cut, "r+b") as f:
        f.truncate(os.path.getsize(cut) - 7)  # the writer died inside the last record
    old = time.time() - 3600
    os.utime(cut, (old, old))
    bad = _event_file(tmp_path / "logs" / "garbage")
    data = bytearray(open(bad, "rb").read())
    starts, pos = [], 0
    while pos < len(data):
        starts.append(pos)
        pos += 16 + int.from_bytes(data[pos:pos + 8], "little")
    data[starts[60] + 12:starts[60] + 16] = b"\xff\xfe\xfd\xfc"  # a record's bytes garbled: skipped
    data[starts[120]:starts[120] + 8] = b"\xff" * 8  # an impossible record length: the rest is unreadable
    open(bad, "wb").write(bytes(data))
    r = TBRunReader(str(tmp_path / "logs" / "cut"))
    r.poll()
    assert len(r.series().get("train/loss")) == 199
    (problem,) = r.problems
    assert "incomplete record" in problem
    g = TBRunReader(str(tmp_path / "logs" / "garbage"))
    g.poll()
    assert len(g.series().get("train/loss")) == 118  # records 1..119 less the garbled one (0 is the header)
    (problem,) = g.problems
    assert "1 corrupt record(s) skipped" in problem and "unreadable from byte" in problem
    out = subprocess.run([sys.executable, "-m", "traindoc.cli", "diagnose", str(tmp_path / "logs"), "--json"],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ})
    assert out.returncode == 2
    assert len(json.loads(out.stdout)["runs"]) == 2  # both still diagnosed
    assert len(out.stderr.strip().splitlines()) == 2  # one line per damaged file


def test_folder_without_event_files(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hello")
    r = subprocess.run([sys.executable, "-m", "traindoc.cli", "diagnose", str(tmp_path / "empty")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "no runs under" in r.stderr and "found notes.txt" in r.stderr
    assert "events.out.tfevents" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_user_mapping_file(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(tmp_path / "run"))
    for i in range(10):
        w.add_scalar("holdout/top1", 0.1 * i, i)
        w.add_scalar("timing/sec", 1.0, i)
        w.add_scalar("objective", 2.0 - 0.1 * i, i)
    w.close()
    (tmp_path / "run" / "traindoc-tb.toml").write_text(
        '[map]\n"holdout/top1" = "val/acc"\n"objective" = "train/loss"\nignore = ["^timing/"]\n'
        '[run]\nnum_classes = 7\n')
    s = read_tb_run(str(tmp_path / "run"))
    assert s.get("val/acc").tolist() == pytest.approx([0.1 * i for i in range(10)])
    assert s.has("train/loss") and not any(k.startswith("custom/timing") for k in s.keys)
    assert s.meta["num_classes"] == 7


def test_a_flipped_bit_in_an_event_is_reported_never_read(tmp_path):
    """One flipped bit turned 1.0 into 0.25 and nobody noticed; both CRC-32Cs are checked now."""
    import struct

    from torch.utils.tensorboard import SummaryWriter

    from traindoc.tb import TBRunReader

    w = SummaryWriter(str(tmp_path))
    for i in range(10):
        w.add_scalar("train/loss", 1.0, i)
    w.close()
    (name,) = [f for f in os.listdir(tmp_path) if ".tfevents." in f]
    data = bytearray((tmp_path / name).read_bytes())
    at = data.rfind(struct.pack("<f", 1.0))  # the last event's value
    data[at + 3] ^= 0x01  # 1.0 -> 0.25... in the float's exponent
    assert struct.unpack_from("<f", data, at)[0] != 1.0
    (tmp_path / name).write_bytes(bytes(data))
    r = TBRunReader(str(tmp_path), use_cache=False)
    r.poll()
    got = r.series().get("train/loss")
    assert (got == 1.0).all() and len(got) == 9
    assert r.problems == [f"{name}: 1 corrupt record(s) skipped"]


# ---- layouts -------------------------------------------------------------------------------
def test_add_scalars_children_join_their_parent(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from traindoc.discovery import find_runs

    w = SummaryWriter(str(tmp_path / "run"))
    for step in range(1, 61):
        w.add_scalars("Loss", {"train": 2.0 / step, "val": 1.0 + 1.0 / step}, step)
        w.add_scalar("lr", 0.1, step)
    w.close()
    assert sorted(os.listdir(tmp_path / "run")) != []  # Loss_train/, Loss_val/ and the run's own file
    assert find_runs(str(tmp_path)) == [str(tmp_path / "run")]  # one run, not three
    s = read_tb_run(str(tmp_path / "run"))
    assert s.get("train/loss").tolist() == pytest.approx([2.0 / k for k in range(1, 61)])
    assert s.get("val/loss").tolist() == pytest.approx([1.0 + 1.0 / k for k in range(1, 61)])
    assert s.has("lr/pg0")


def test_tf2_train_and_test_siblings_are_one_run(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from traindoc.discovery import find_runs

    for split, offset in (("train", 0.0), ("test", 0.2)):
        w = SummaryWriter(str(tmp_path / "exp" / split))
        for epoch in range(1, 21):
            w.add_scalar("loss", 1.0 / epoch + offset, epoch)
            w.add_scalar("accuracy", 0.5 + epoch / 50 - offset, epoch)
        w.close()
    assert find_runs(str(tmp_path)) == [str(tmp_path / "exp")]
    s = read_tb_run(str(tmp_path / "exp"))
    assert s.get("train/loss").tolist() == pytest.approx([1.0 / e for e in range(1, 21)])
    assert s.get("val/loss").tolist() == pytest.approx([1.0 / e + 0.2 for e in range(1, 21)])  # test as validation
    assert s.get("val/acc").tolist() == pytest.approx([0.3 + e / 50 for e in range(1, 21)])
    assert s.get("train/acc").tolist() == pytest.approx([0.5 + e / 50 for e in range(1, 21)])


def test_a_resumed_run_keeps_the_newest_value_per_step(tmp_path):
    """A run logged steps 0..399, was restarted from its step-200 checkpoint and got to 299:
    TensorBoard drops the first attempt's steps from 200 on (300..399 are orphans of an
    abandoned attempt); so does traindoc, whose windows averaged both attempts before."""
    from torch.utils.tensorboard import SummaryWriter

    for attempt, (first, last, value) in enumerate(((0, 400, 9.0), (200, 300, 1.0))):
        w = SummaryWriter(str(tmp_path / f"w{attempt}"))
        for step in range(first, last):
            w.add_scalar("train/loss", value, step)
        w.close()
        (src,) = [f for f in os.listdir(tmp_path / f"w{attempt}") if ".tfevents." in f]
        (tmp_path / "run").mkdir(exist_ok=True)
        os.replace(tmp_path / f"w{attempt}" / src, tmp_path / "run" / f"events.out.tfevents.{attempt + 1}.host")
    s = read_tb_run(str(tmp_path / "run"))
    loss = s.get("train/loss")
    assert list(loss.index) == list(range(300))
    assert (loss.loc[:199] == 9.0).all() and (loss.loc[200:] == 1.0).all()
    assert s.get("train/loss/count").sum() == 300  # windows over the kept points only
    assert set(s.get("train/loss/mean").loc[200:]) == {1.0}
