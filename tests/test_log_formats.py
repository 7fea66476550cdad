"""Logs people already have, written by the real libraries: Hugging Face trainer_state.json,
Lightning's CSVLogger, MLflow's file store, Keras' CSVLogger; and nothing under a root
skipped without a word."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from traindoc.diagnose import diagnose_path
from traindoc.discovery import open_reader, scan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "sample_runs"))
import generate  # noqa: E402


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "traindoc.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": ROOT})


@pytest.mark.slow
def test_hugging_face_trainer_state_with_checkpoints(tmp_path):
    """The Trainer's output_dir with checkpoint-N folders: the newest trainer_state.json is read,
    and every logged loss, LR and eval metric equals the Trainer's own log_history."""
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    from tests.test_integrations import MarkerCounts

    torch.manual_seed(0)
    torch.set_num_threads(2)
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32, num_labels=3)
    out = tmp_path / "hf-out"
    args = TrainingArguments(output_dir=str(out), max_steps=60, learning_rate=1e-3, per_device_train_batch_size=16,
                             logging_steps=5, eval_strategy="steps", eval_steps=20, save_strategy="steps",
                             save_steps=20, save_only_model=True, report_to=["tensorboard"], use_cpu=True, seed=0,
                             disable_tqdm=True)

    def accuracy(p):
        return {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())}
    trainer = Trainer(model=BertForSequenceClassification(config), args=args, train_dataset=MarkerCounts(960, 0),
                      eval_dataset=MarkerCounts(200, 1), compute_metrics=accuracy)
    trainer.train()
    assert {"checkpoint-20", "checkpoint-40", "checkpoint-60"} <= set(os.listdir(out))
    runs, not_runs = scan(str(tmp_path))
    # the trainer_state.json view and the TensorBoard logs nested under output_dir (runs/<date_host>/)
    (tb_run,) = [r for r in runs if r != str(out)]
    assert str(out) in runs and tb_run.startswith(str(out) + os.sep) and not_runs == []
    r = open_reader(str(out))
    r.poll()
    s = r.series()
    history = trainer.state.log_history
    losses = {h["step"]: h["loss"] for h in history if "loss" in h}
    assert s.get("train/loss").to_dict() == pytest.approx(losses)
    assert s.get("lr/pg0").to_dict() == pytest.approx({h["step"]: h["learning_rate"] for h in history
                                                       if "learning_rate" in h})
    assert s.get("val/loss").to_dict() == pytest.approx({h["step"]: h["eval_loss"] for h in history
                                                         if "eval_loss" in h})
    assert list(s.get("val/acc").index) == [20, 40, 60]
    tb = open_reader(tb_run)
    tb.poll()
    assert tb.series().get("train/loss").to_dict() == pytest.approx(losses, rel=1e-5)  # the same losses, as events
    assert s.meta["source"] == "hf" and s.meta["config"]["max_steps"] == 60
    (report,) = diagnose_path(str(out))
    assert report.diagnosed and report.error is None


@pytest.mark.slow
def test_lightning_csv_logger(tmp_path):
    """metrics.csv and hparams.yaml as CSVLogger writes them, against the module's own losses."""
    import lightning as L
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.loggers import CSVLogger

    truth = {}

    class Module(L.LightningModule):
        def __init__(self, lr=0.05):
            super().__init__()
            self.save_hyperparameters()
            torch.manual_seed(0)
            self.net = generate.mlp(32)

        def training_step(self, batch, _):
            x, y = batch
            out = self.net(x)
            loss = F.cross_entropy(out, y)
            truth[self.global_step] = loss.item()
            self.log("train_loss", loss, on_step=True, on_epoch=True)
            self.log("train_acc", (out.argmax(-1) == y).float().mean(), on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch, _):
            x, y = batch
            out = self.net(x)
            self.log("val_loss", F.cross_entropy(out, y))
            self.log("val_acc", (out.argmax(-1) == y).float().mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    torch.set_num_threads(1)
    (xt, yt), (xv, yv) = generate.cluster_data(1024)
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xt, yt), batch_size=32)
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xv, yv), batch_size=256)
    trainer = L.Trainer(max_epochs=4, accelerator="cpu", logger=CSVLogger(str(tmp_path)), log_every_n_steps=1,
                        callbacks=[LearningRateMonitor()], enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(Module(), train, val)
    run = tmp_path / "lightning_logs" / "version_0"
    assert scan(str(tmp_path))[0] == [str(run)]
    r = open_reader(str(run))
    r.poll()
    s = r.series()
    loss = s.get("train/loss")
    assert len(loss) == len(truth) == 4 * (len(xt) // 32)
    assert sorted(loss.tolist()) == pytest.approx(sorted(truth.values()), rel=1e-6)  # the values, every one
    assert len(s.get("val/loss")) == 4 and len(s.get("val/acc")) == 4
    assert len(s.get("train_epoch/acc")) == 4 or len(s.get("train/acc")) == 4
    assert s.get("lr/pg0").iloc[0] == pytest.approx(0.05)
    assert s.meta["config"]["lr"] == 0.05 and s.meta["source"] == "lightning"
    (report,) = diagnose_path(str(run))
    assert report.diagnosed


def test_mlflow_file_store(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(f"file:{tmp_path / 'mlruns'}")
    values = {}
    with mlflow.start_run(run_name="sgd-0.1"):
        mlflow.log_param("lr", 0.1)
        mlflow.log_param("optimizer", "sgd")
        for step in range(1, 41):
            values[step] = 2.3 * 0.97 ** step
            mlflow.log_metric("train_loss", values[step], step=step)
            if step % 10 == 0:
                mlflow.log_metric("val_accuracy", step / 50, step=step)
    mlflow.set_tracking_uri(None)
    runs, not_runs = scan(str(tmp_path))
    assert len(runs) == 1 and "/mlruns/" in runs[0]
    r = open_reader(runs[0])
    r.poll()
    s = r.series()
    assert s.name == "sgd-0.1" and s.meta["config"] == {"lr": 0.1, "optimizer": "sgd"}
    assert s.get("train/loss").to_dict() == pytest.approx(values)
    assert s.get("val/acc").to_dict() == pytest.approx({10: 0.2, 20: 0.4, 30: 0.6, 40: 0.8})
    assert all(os.path.basename(p) in ("models", "0", ".trash") or p.endswith("meta.yaml") for p in not_runs), not_runs


KERAS = """
import os, sys
os.environ["KERAS_BACKEND"] = "torch"
import numpy as np, keras
rng = np.random.default_rng(0)
x = rng.normal(size=(512, 8)).astype("float32"); y = (x[:, 0] + x[:, 1] > 0).astype("int64")
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)])
model.compile(optimizer=keras.optimizers.SGD(0.05),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
h = model.fit(x[:400], y[:400], validation_data=(x[400:], y[400:]), epochs=12, batch_size=32, verbose=0,
              callbacks=[keras.callbacks.CSVLogger(sys.argv[1])])
import json; print(json.dumps(h.history))
"""


@pytest.mark.slow
def test_keras_csv_logger(tmp_path):
    log = tmp_path / "training.log"
    out = subprocess.run([sys.executable, "-c", KERAS, str(log)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    history = json.loads(out.stdout.strip().splitlines()[-1])
    assert scan(str(tmp_path))[0] == [str(log)]
    r = open_reader(str(log))
    r.poll()
    s = r.series()
    steps = list(range(1, 13))  # epochs, counted from 1
    assert s.get("train/loss").tolist() == pytest.approx(history["loss"], rel=1e-5)
    assert list(s.get("train/loss").index) == steps
    assert s.get("val/loss").tolist() == pytest.approx(history["val_loss"], rel=1e-5)
    assert s.get("val/acc").tolist() == pytest.approx(history["val_accuracy"], rel=1e-5)
    assert s.get("train/acc").tolist() == pytest.approx(history["accuracy"], rel=1e-5)  # beside val_accuracy
    (report,) = diagnose_path(str(log))
    assert report.diagnosed


def test_nothing_under_a_root_is_skipped_without_a_word(tmp_path):
    import shutil

    shutil.copytree(os.path.join(ROOT, "sample_runs", "healthy-mlp-sgd"), tmp_path / "good")
    (tmp_path / "notes.txt").write_text("not a run")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "weights.bin").write_bytes(b"\0" * 10)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "trainer_state.json").write_text("{ not json")
    r = _cli("diagnose", str(tmp_path), "--json")
    assert r.returncode == 2  # the broken one is a bad input ...
    data = json.loads(r.stdout)
    assert [os.path.basename(x["path"]) for x in data["runs"]] == ["good"]  # ... and the rest is still read
    assert sorted(os.path.basename(p) for p in data["not_runs"]) == ["junk", "notes.txt"]
    lines = r.stderr.strip().splitlines()
    assert sum("not a run" in line for line in lines) == 2
    assert sum("broken" in line and "trainer_state.json" in line for line in lines) == 1
