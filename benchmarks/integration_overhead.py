"""Overhead of the Lightning and Hugging Face callbacks, as ratios against the same fit without them.

Each framework trains a small MLP on generated data for --steps optimizer steps, with and
without `collector.<framework>.Collector` at its defaults, interleaved over --rounds rounds.
Only the training loop is timed (first batch to the end of training, by a timing callback
present in both variants), not the framework's start-up; the median per-round ratio is printed.
usage: python benchmarks/integration_overhead.py [--steps 1500] [--rounds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sample_runs"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import generate  # noqa: E402


def data(n: int):
    (x, y), _ = generate.cluster_data(n, n_val=10)
    return x, y


def lightning_fit(with_collector: bool, steps: int, tmp: str) -> float:
    import lightning as L

    import traindoc.collector.lightning

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = generate.mlp(128)

        def training_step(self, batch, _):
            x, y = batch
            return F.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)

    class Clock(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                self.t0 = time.perf_counter()

        def on_train_end(self, trainer, pl_module):
            self.elapsed = time.perf_counter() - self.t0

    x, y = data(128 * steps)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=128)
    clock = Clock()
    callbacks = [clock]
    if with_collector:
        callbacks.append(traindoc.collector.lightning.Collector(root=tmp, name=f"l{time.time_ns()}"))
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks)
    trainer.fit(Module(), loader)
    return clock.elapsed


def hf_fit(with_collector: bool, steps: int, tmp: str) -> float:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    import traindoc.collector.hf

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = generate.mlp(128)

        def forward(self, x, labels=None):
            logits = self.net(x)
            return {"loss": F.cross_entropy(logits, labels), "logits": logits}

    class Rows(torch.utils.data.Dataset):
        def __init__(self, x, y):
            self.x, self.y = x, y

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            return {"x": self.x[i], "labels": self.y[i]}

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 0:
                self.t0 = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            self.elapsed = time.perf_counter() - self.t0

    x, y = data(128 * steps)
    clock = Clock()
    callbacks = [clock]
    if with_collector:
        callbacks.append(traindoc.collector.hf.Collector(root=tmp, name=f"h{time.time_ns()}"))
    args = TrainingArguments(output_dir=os.path.join(tmp, "hf"), max_steps=steps, per_device_train_batch_size=128,
                             learning_rate=0.05, optim="sgd", lr_scheduler_type="constant", logging_steps=50,
                             report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True,
                             dataloader_num_workers=0)
    with contextlib.redirect_stdout(io.StringIO()):  # the Trainer prints its logs
        Trainer(model=Net(), args=args, train_dataset=Rows(x, y), callbacks=callbacks).train()
    return clock.elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    import lightning  # noqa: F401  (so that its loggers exist to be quietened)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("lightning", "transformers")):
            logging.getLogger(name).setLevel(logging.ERROR)
    for name, fit in (("lightning", lightning_fit), ("hugging face", hf_fit)):
        with tempfile.TemporaryDirectory() as tmp:
            fit(False, 50, tmp), fit(True, 50, tmp)  # warm-up
            ratios, bare = [], []
            for _ in range(args.rounds):
                b = fit(False, args.steps, tmp)
                ratios.append(fit(True, args.steps, tmp) / b)
                bare.append(b)
        ratios.sort()
        print(f"{name:>13}: step {1000 * statistics.median(bare) / args.steps:.3f} ms without; "
              f"with traindoc / without = {statistics.median(ratios):.3f} (rounds {ratios[0]:.3f}-{ratios[-1]:.3f})",
              flush=True)


if __name__ == "__main__":
    main()
