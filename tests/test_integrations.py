"""One-line attachment for Lightning and the Hugging Face Trainer, with real fits on CPU."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from traindoc.diagnose import diagnose_path
from traindoc.reader import read_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "sample_runs"))
import generate  # noqa: E402  (the sample runs' data sets and models)


def test_collector_imports_without_the_extras():
    code = ("import sys; [sys.modules.__setitem__(m, None) for m in ('lightning', 'pytorch_lightning', "
            "'transformers', 'accelerate')]; from traindoc import collector; print(collector.attach.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "attach"


# ---- Lightning ------------------------------------------------------------------------
def lightning_fit(root, name, lr, decay_epoch=None, epochs=10):
    import lightning as L

    import traindoc.collector.lightning

    class Module(L.LightningModule):
        def __init__(self, lr, momentum=0.9, decay_epoch=None):
            super().__init__()
            self.save_hyperparameters()
            torch.manual_seed(0)
            self.net = generate.mlp(128)

        def training_step(self, batch, _):
            x, y = batch
            out = self.net(x)
            self.log("train_acc", (out.argmax(-1) == y).float().mean(), on_step=True)
            return F.cross_entropy(out, y)

        def validation_step(self, batch, _):
            x, y = batch
            out = self.net(x)
            self.log("val_loss", F.cross_entropy(out, y))
            self.log("val_acc", (out.argmax(-1) == y).float().mean())
            self.log("val_top1_custom", (out.argmax(-1) == y).float().mean())

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum)
            if self.hparams.decay_epoch is None:
                return opt
            return [opt], [torch.optim.lr_scheduler.MultiStepLR(opt, [self.hparams.decay_epoch], 0.1)]

    (xt, yt), (xv, yv) = generate.cluster_data(4000)

    def loader(x, y, shuffle):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=shuffle,
                                           generator=torch.Generator().manual_seed(1) if shuffle else None)
    trainer = L.Trainer(max_epochs=epochs, callbacks=[traindoc.collector.lightning.Collector(root=root, name=name)],
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    trainer.fit(Module(lr, decay_epoch=decay_epoch), loader(xt, yt, True), loader(xv, yv, False))
    return os.path.join(root, name)


@pytest.mark.slow
def test_lightning_series_and_healthy_diagnosis(tmp_path):
    torch.set_num_threads(1)
    # the sample run healthy-mlp-sgd's recipe (24 epochs, LR cut at 16), through Lightning
    path = lightning_fit(str(tmp_path), "pl-healthy", lr=0.05, decay_epoch=16, epochs=24)
    s = read_run(path)
    assert s.meta["status"] == "finished" and s.meta["steps"] == 3000
    assert s.meta["config"]["lr"] == 0.05 and s.meta["config"]["decay_epoch"] == 16  # save_hyperparameters
    assert s.get("train/loss/count").sum() == 3000  # every batch's loss, once
    assert s.get("lr/pg0").tolist() == [0.05, pytest.approx(0.005)]  # the epoch-16 decay, exactly
    assert list(s.get("lr/pg0").index) == [1, 16 * 125 + 1]
    assert s.get("momentum/pg0").tolist() == [0.9]
    assert len(s.get("val/acc")) == 24 and s.get("val/acc").iloc[-1] > 0.85
    assert len(s.get("val/top1_custom")) == 24  # other validation metrics come along
    assert s.has("train/acc") and s.has("update_ratio/net.0.weight")
    (report,) = diagnose_path(path)
    assert report.findings == []


@pytest.mark.slow
def test_lightning_ten_times_the_lr_is_too_high(tmp_path):
    torch.set_num_threads(1)
    (report,) = diagnose_path(lightning_fit(str(tmp_path), "pl-high", lr=0.2))
    assert "lr_too_high" in {f.rule for f in report.findings}


def test_lightning_rejects_a_bad_root():
    import traindoc.collector.lightning

    with pytest.raises(ValueError, match="root"):
        traindoc.collector.lightning.Collector(root="")


# ---- Hugging Face Trainer -------------------------------------------------------------
class MarkerCounts(torch.utils.data.Dataset):
    """Token sequences; the label is the marker token (1, 2 or 3) that appears most often."""

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(5, 60, (n, 16), generator=g)
        self.y = torch.zeros(n, dtype=torch.long)
        for i in range(n):
            counts = torch.randint(1, 5, (3,), generator=g)
            pos = torch.randperm(16, generator=g)[:int(counts.sum())]
            self.x[i, pos] = torch.repeat_interleave(torch.arange(1, 4), counts)
            self.y[i] = int(torch.argmax(counts + 0.1 * torch.arange(3)))

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"input_ids": self.x[i], "attention_mask": torch.ones(16, dtype=torch.long), "labels": self.y[i]}


def hf_train(root, name, lr):
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    import traindoc.collector.hf

    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32, num_labels=3)
    args = TrainingArguments(output_dir=os.path.join(root, "hf-out"), num_train_epochs=6, learning_rate=lr,
                             per_device_train_batch_size=32, eval_strategy="epoch", logging_steps=10, report_to=[],
                             save_strategy="no", use_cpu=True, seed=0, disable_tqdm=True)

    def accuracy(p):
        return {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())}
    trainer = Trainer(model=BertForSequenceClassification(config), args=args, train_dataset=MarkerCounts(1600, 0),
                      eval_dataset=MarkerCounts(400, 1), compute_metrics=accuracy,
                      callbacks=[traindoc.collector.hf.Collector(root=root, name=name, log_every=10)])
    trainer.train()
    return os.path.join(root, name)


@pytest.mark.slow
def test_hf_trainer_series(tmp_path):
    torch.set_num_threads(2)
    path = hf_train(str(tmp_path), "hf-run", lr=1e-3)
    s = read_run(path)
    steps = 6 * 50
    assert s.meta["steps"] == steps and s.meta["num_classes"] == 3
    assert s.meta["config"]["learning_rate"] == 1e-3 and s.meta["config"]["num_train_epochs"] == 6
    assert s.get("train/loss/count").sum() == steps  # a per-batch loss from every forward in training
    assert (s.get("train/loss/var") > 0).all()  # real windows with a variance, not logged averages
    lr = s.get("lr/pg0")
    assert lr.iloc[0] == pytest.approx(1e-3) and lr.is_monotonic_decreasing and len(lr) == steps  # linear decay
    assert s.get("beta1/pg0").tolist() == [0.9]
    assert len(s.get("val/loss")) == 6 and len(s.get("val/acc")) == 6
    assert s.get("train/acc").between(0, 1).all()
    assert "update_ratio/classifier.weight" in s.keys
    assert s.get("epoch").tolist() == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_hf_ten_times_the_lr_is_too_high(tmp_path):
    torch.set_num_threads(2)
    (ok,) = diagnose_path(hf_train(str(tmp_path), "hf-ok", lr=1e-3))
    (high,) = diagnose_path(hf_train(str(tmp_path), "hf-high", lr=1e-2))
    assert "lr_too_high" not in {f.rule for f in ok.findings}
    assert "lr_too_high" in {f.rule for f in high.findings}


@pytest.mark.slow
def test_third_party_loop_gradient_accumulation(tmp_path):
    """The Trainer's own loop, with gradient accumulation and its own loss scaling, against the
    losses its forward passes really produced (read independently, with .item(), in the test).

    (Noticed on transformers 5.23: the loss the Trainer itself logs with 4 accumulation steps
    is 4x the per-batch mean; traindoc records the per-batch values.)"""
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    import traindoc.collector.hf

    torch.manual_seed(0)
    torch.set_num_threads(2)
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32, num_labels=3)
    model = BertForSequenceClassification(config)
    truth = []
    model.register_forward_hook(lambda m, a, out: truth.append(out.loss.item()) if m.training else None)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=40, learning_rate=1e-3,
                             per_device_train_batch_size=8, gradient_accumulation_steps=4, logging_steps=10,
                             report_to=[], save_strategy="no", use_cpu=True, seed=0, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=MarkerCounts(1600, 0),
                      callbacks=[traindoc.collector.hf.Collector(root=str(tmp_path), name="accum", log_every=10)])
    trainer.train()
    s = read_run(str(tmp_path / "accum"))
    assert s.meta["steps"] == 40  # optimizer steps, not micro-batches
    counts = s.get("train/loss/count")
    assert list(counts.index) == [10, 20, 30, 40] and (counts == 40).all()  # 10 steps x 4 micro-batches
    assert len(truth) == 160
    for k, step in enumerate(counts.index):
        window = torch.tensor(truth[40 * k:40 * (k + 1)], dtype=torch.float64)
        assert s.get("train/loss/mean")[step] == pytest.approx(window.mean().item(), rel=1e-5)
        assert s.get("train/loss/var")[step] == pytest.approx(window.var(unbiased=False).item(), rel=1e-4)


@pytest.mark.slow
def test_lightning_ddp_two_processes_rank_zero_writes(tmp_path):
    """Lightning's own DDP (two CPU processes on gloo): one run folder, loss statistics of both ranks."""
    script = f"""
import gc, os, sys
sys.path.insert(0, {ROOT!r}); sys.path.insert(0, {os.path.join(ROOT, "sample_runs")!r})
import torch, torch.nn.functional as F, lightning as L
import traindoc.collector.lightning, generate

class Module(L.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = generate.mlp(32)
    def training_step(self, batch, _):
        x, y = batch
        return F.cross_entropy(self.net(x), y)
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

class ReleaseGroup(L.Callback):
    # Without this, a spawned rank aborts at exit ("terminate called without an active
    # exception"), with or without traindoc: a gloo run-loop thread of a process group that
    # garbage still references wakes during interpreter shutdown, Python ends it with
    # pthread_exit, and libstdc++ terminates (seen in gdb). Measured here: 1 of 15 fits
    # without the collector and no release; 0 of 50 with the release and a collection.
    def teardown(self, trainer, pl_module, stage):
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        gc.collect()

if __name__ == "__main__":
    torch.set_num_threads(1)
    (x, y), _ = generate.cluster_data(512)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[ReleaseGroup(), traindoc.collector.lightning.Collector(root={str(tmp_path)!r}, name="ddp", log_every=4)])
    trainer.fit(Module(), data)
"""
    path = tmp_path / "fit_ddp.py"  # spawned ranks re-import __main__, so it must be a file
    path.write_text(script)
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(os.listdir(tmp_path)) == ["ddp", "fit_ddp.py"]  # one run folder: only rank 0 wrote
    s = read_run(str(tmp_path / "ddp"))
    assert s.meta["world_size"] == 2 and s.meta["steps"] == 16  # 512 samples / 32 / 2 ranks x 2 epochs
    assert (s.get("train/loss/count") == 8).all()  # each window: 4 steps x 2 ranks


# ---- gradient accumulation in both frameworks, against the loss each one reports -------------
@pytest.mark.slow
def test_lightning_accumulation_records_undivided_losses(tmp_path):
    """A tiny causal LM under accumulate_grad_batches=4: Lightning hands callbacks the loss
    divided by 4; the run must hold the losses the module itself reports with self.log
    (read back from the logger, and with .item() in the test), and the vocabulary as classes."""
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    import traindoc.collector.lightning

    truth = []

    class TinyLM(L.LightningModule):
        def __init__(self, vocab=64):
            super().__init__()
            torch.manual_seed(0)
            self.emb = torch.nn.Embedding(vocab, 32)
            self.head = torch.nn.Linear(32, vocab)

        def training_step(self, batch, _):
            (x,) = batch
            logits = self.head(torch.tanh(self.emb(x[:, :-1])))  # predict token i+1 from token i
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
            truth.append(loss.item())
            self.log("train_loss", loss, on_step=True, on_epoch=False)
            return loss

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=3e-3)

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    start = torch.randint(0, 64, (1024, 1), generator=g)
    tokens = (start + torch.arange(16) * 3) % 64
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tokens), batch_size=16)
    trainer = L.Trainer(max_epochs=1, accumulate_grad_batches=4, accelerator="cpu", log_every_n_steps=1,
                        logger=CSVLogger(str(tmp_path / "logs")), enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[traindoc.collector.lightning.Collector(root=str(tmp_path), name="acc",
                                                                          log_every=4, num_classes=64)])
    trainer.fit(TinyLM(), data)
    s = read_run(str(tmp_path / "acc"))
    assert s.meta["steps"] == 16 and len(truth) == 64 and s.meta["num_classes"] == 64
    mean = s.get("train/loss/mean")
    for k, step in enumerate(mean.index):
        window = torch.tensor(truth[16 * k:16 * (k + 1)], dtype=torch.float64)
        assert mean[step] == pytest.approx(window.mean().item(), rel=1e-5)
    logged = [float(r["train_loss"]) for r in csv.DictReader(open(tmp_path / "logs" / "lightning_logs" / "version_0"
                                                                  / "metrics.csv")) if r.get("train_loss")]
    # what Lightning itself reports: one value per optimizer step, the last micro-batch's, undivided
    assert len(logged) == 16 and logged == pytest.approx(truth[3::4], rel=1e-5)
    assert s.get("train/loss/first").iloc[0] == pytest.approx(truth[0], rel=1e-5)
    assert truth[0] == pytest.approx(np.log(64), rel=0.15)
    (report,) = diagnose_path(str(tmp_path / "acc"))
    assert "initial_loss" not in {f.rule for f in report.findings}


class Tokens(torch.utils.data.Dataset):
    """Fixed-length token sequences with a learnable pattern (each token predicts the next)."""

    def __init__(self, n, vocab=64, length=16, seed=0):
        g = torch.Generator().manual_seed(seed)
        start = torch.randint(0, vocab, (n, 1), generator=g)
        self.x = (start + torch.arange(length) * 3) % vocab

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input_ids": self.x[i], "labels": self.x[i]}


@pytest.mark.slow
def test_hf_causal_lm_accumulation_matches_the_trainers_loss(tmp_path):
    """A tiny GPT-2 under 4-step accumulation: the Trainer divides each forward's loss by the
    tokens of the whole accumulated batch (num_items_in_batch). The run must hold each
    micro-batch's own mean token loss (computed independently in the test from the logits),
    agree with the loss the Trainer logs, and take the vocabulary as the classes."""
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    import traindoc.collector.hf

    torch.manual_seed(0)
    torch.set_num_threads(2)
    config = GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2)
    model = GPT2LMHeadModel(config)
    truth = []

    def plain_mean(module, args, kwargs, out):
        if module.training:
            logits, labels = out.logits.detach(), kwargs["labels"]
            truth.append(F.cross_entropy(logits[:, :-1].reshape(-1, 64), labels[:, 1:].reshape(-1)).item())
    model.register_forward_hook(plain_mean, with_kwargs=True)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=20, learning_rate=3e-3,
                             per_device_train_batch_size=4, gradient_accumulation_steps=4, logging_steps=5,
                             report_to=[], save_strategy="no", use_cpu=True, seed=0, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=Tokens(640),
                      callbacks=[traindoc.collector.hf.Collector(root=str(tmp_path), name="lm", log_every=5,
                                                                 num_classes=64)])
    trainer.train()
    logged = {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}
    s = read_run(str(tmp_path / "lm"))
    mean = s.get("train/loss/mean")
    assert list(mean.index) == [5, 10, 15, 20] == sorted(logged) and len(truth) == 80
    # transformers 5.23 counts all 16 labels of a row in num_items_in_batch when the model's
    # `loss_type` is unset (GPT-2 here), while the shifted loss uses 15: its logged loss is
    # 15/16 of the mean token loss. traindoc counts the tokens the loss really used.
    for k, step in enumerate(mean.index):
        window = torch.tensor(truth[20 * k:20 * (k + 1)], dtype=torch.float64)
        assert mean[step] == pytest.approx(window.mean().item(), rel=1e-5)
        assert logged[step] == pytest.approx(mean[step] * 15 / 16, rel=2e-3)
    assert s.meta["num_classes"] == 64
    assert s.get("train/loss/first").iloc[0] == pytest.approx(np.log(64), rel=0.1)
    assert s.get("train/acc").between(0, 1).all()
    (report,) = diagnose_path(str(tmp_path / "lm"))
    assert "initial_loss" not in {f.rule for f in report.findings}


def test_hf_collector_does_not_take_num_labels_as_classes(tmp_path):
    """config.num_labels is 2 for every model that does not classify; the class count must come
    from the logits (here the vocabulary), and passing num_classes= must not end training."""
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    import traindoc.collector.hf

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=48, n_positions=32, n_embd=16, n_layer=1, n_head=2)
    assert config.num_labels == 2
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=3, per_device_train_batch_size=2,
                             report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True)
    Trainer(model=GPT2LMHeadModel(config), args=args, train_dataset=Tokens(12, vocab=48),
            callbacks=[traindoc.collector.hf.Collector(root=str(tmp_path), name="lm")]).train()
    assert read_run(str(tmp_path / "lm")).meta["num_classes"] == 48
