"""Live diagnosis inside training (attach(..., on_finding=...)): real training loops that reach
the condition, in a plain loop, under Lightning and under the Hugging Face Trainer."""

from __future__ import annotations

import json
import os
import time
import warnings

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import blobs, logged_step, mlp
from traindoc import collector
from traindoc.reader import read_run


def _loop(run, model, opt, x, y, steps, pause=0.002):
    """A plain loop that honours `run.should_stop`; `pause` stands in for a real step's time."""
    done = 0
    for _ in range(steps):
        i = torch.randint(0, len(y), (64,))
        logged_step(run, model, opt, x[i], y[i])
        done += 1
        if run.should_stop:
            break
        time.sleep(pause)
    return done


def test_a_diverging_run_stops_within_a_few_windows_and_is_marked(tmp_path, monkeypatch):
    torch.manual_seed(0)
    x, y = blobs(2048)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=60.0)
    seen = []
    run = collector.attach(model, opt, root=str(tmp_path), name="diverge", log_every=20, flush_secs=0.05,
                           on_finding="stop")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        done = _loop(run, model, opt, x, y, 5000)
        time.sleep(0.2)
        seen = [str(w.message) for w in caught if "traindoc" in str(w.message)]
    assert run.should_stop and done < 5000
    reason = run.stop_reason
    assert reason["rule"] == "lr_too_high" and reason["severity"] == "error"
    assert done - reason["steps"][0] <= 20 * 10  # within ten windows of where the blow-up began
    with pytest.raises(collector.TrainingStopped, match="lr_too_high"):
        run.check()
    run.close()
    assert any("lr_too_high" in m for m in seen)
    meta = json.load(open(os.path.join(run.path, "meta.json")))
    assert meta["stopped_by"]["rule"] == "lr_too_high" and meta["end_reason"] == "stopped by traindoc: lr_too_high"
    assert [f["rule"] for f in meta["live_findings"]] == ["lr_too_high"]  # raised once, not every window
    assert meta["live_findings"][0]["raised_at_step"] <= done
    from traindoc.app.runview import build  # the run page says when it was first raised

    monkeypatch.setenv("TRAINDOC_ROOT", str(tmp_path))
    monkeypatch.setenv("TRAINDOC_CACHE", str(tmp_path / "cache"))
    shown = json.loads(build.view("diverge")[0])["findings"]
    (f,) = [f for f in shown if f["rule"] == "lr_too_high"]
    assert f["raised"]["step"] == meta["live_findings"][0]["raised_at_step"]


def test_a_healthy_run_is_never_stopped_and_raises_nothing(tmp_path):
    torch.manual_seed(0)
    x, y = blobs(2048)
    xv, yv = blobs(512, seed=1)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    raised = []
    run = collector.attach(model, opt, root=str(tmp_path), name="healthy", log_every=20, flush_secs=0.05,
                           on_finding=raised.append)
    for epoch in range(6):
        _loop(run, model, opt, x, y, 100, pause=0.0)
        with torch.no_grad():
            out = model(xv)
            run.log_val(loss=F.cross_entropy(out, yv), accuracy=(out.argmax(-1) == yv).float().mean())
        time.sleep(0.15)
    assert not run.should_stop
    run.check()  # does not raise
    run.close()
    assert raised == [] and run.live.checks > 5  # it did look, several times
    assert "live_findings" not in read_run(run.path).meta


def test_a_failing_handler_never_reaches_training(tmp_path):
    torch.manual_seed(0)
    x, y = blobs(1024)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=60.0)

    def broken(finding):
        raise RuntimeError("the Slack webhook is down")
    run = collector.attach(model, opt, root=str(tmp_path), name="handler", log_every=20, flush_secs=0.05,
                           on_finding=broken)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _loop(run, model, opt, x, y, 600) == 600
    run.close()
    assert read_run(run.path).meta["status"] == "finished"


def test_on_finding_rejects_what_it_cannot_do(tmp_path):
    with pytest.raises(ValueError, match="on_finding"):
        collector.attach(mlp(), torch.optim.SGD(mlp().parameters(), lr=0.1), root=str(tmp_path), on_finding="email")


@pytest.mark.slow
def test_lightning_stops_its_trainer(tmp_path):
    import lightning as L

    import traindoc.collector.lightning

    x, y = blobs(4096)

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = mlp()

        def training_step(self, batch, _):
            xb, yb = batch
            time.sleep(0.002)
            return F.cross_entropy(self.net(xb), yb)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=60.0)

    torch.manual_seed(0)
    cb = traindoc.collector.lightning.Collector(root=str(tmp_path), name="pl", log_every=20, flush_secs=0.05,
                                                on_finding="stop")
    trainer = L.Trainer(max_epochs=30, callbacks=[cb], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Module(), loader)
    assert trainer.global_step < 30 * 128  # stopped long before its 3,840 steps
    meta = read_run(os.path.join(str(tmp_path), "pl")).meta
    assert meta["stopped_by"]["rule"] == "lr_too_high" and meta["status"] == "finished"


@pytest.mark.slow
def test_hugging_face_trainer_stops(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    import traindoc.collector.hf
    from tests.test_integrations import MarkerCounts

    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32, num_labels=3)
    args = TrainingArguments(output_dir=str(tmp_path / "hf-out"), num_train_epochs=20, learning_rate=5.0,
                             per_device_train_batch_size=32, logging_steps=10, report_to=[], save_strategy="no",
                             use_cpu=True, seed=0, disable_tqdm=True, lr_scheduler_type="constant", max_grad_norm=0)
    cb = traindoc.collector.hf.Collector(root=str(tmp_path), name="hf", log_every=10, flush_secs=0.05,
                                         on_finding="stop")
    trainer = Trainer(model=BertForSequenceClassification(config), args=args, train_dataset=MarkerCounts(1600, 0),
                      callbacks=[cb])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    assert trainer.state.global_step < 20 * 50
    meta = read_run(os.path.join(str(tmp_path), "hf")).meta
    assert meta["stopped_by"]["severity"] == "error"


def test_live_diagnosis_takes_at_most_its_share_of_a_core(tmp_path):
    """Checks are spaced by their own cost: after a check that took d seconds, none runs for
    d / LIVE_SHARE seconds, however often the writer flushes (here every 10 ms)."""
    from collector.live import LIVE_SHARE

    torch.manual_seed(0)
    x, y = blobs(2048)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = collector.attach(model, opt, root=str(tmp_path), name="share", log_every=5, flush_secs=0.01,
                           on_finding=lambda f: None)
    spans = []
    inner = run.live._check

    def timed():
        began = time.monotonic()
        inner()
        spans.append((began, time.monotonic() - began))

    run.live._check = timed
    _loop(run, model, opt, x, y, 1500, pause=0.001)
    run.close()
    assert len(spans) >= 5
    for (a, took), (b, _) in zip(spans, spans[1:]):
        assert b - a >= took / LIVE_SHARE * 0.99
    busy = sum(took for _, took in spans)
    assert busy <= LIVE_SHARE * (spans[-1][0] + spans[-1][1] - spans[0][0]) * 1.05 + spans[-1][1]
