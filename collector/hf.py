"""Hugging Face Trainer: `Trainer(..., callbacks=[collector.hf.Collector(root="runs")])`.

Per-batch training losses (and accuracy, when the batch has `labels` and the model
returns `logits`) are taken from the model's outputs by a forward hook, so windows have
a real variance; eval loss and metrics come from `on_evaluate`; the LR the scheduler set,
momentum/betas and update ratios from the optimizer's step hooks; TrainingArguments
are the config. Models whose loss is computed outside `forward` fall back to the
averaged `loss` that the Trainer logs.
"""

from __future__ import annotations

import torch
from transformers import TrainerCallback

from .run import Run, attach


def _inner(optimizer):
    """The torch optimizer inside accelerate's AcceleratedOptimizer (or the optimizer itself):
    the wrapper's own step may not run the step hooks; the wrapped optimizer's does."""
    while isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    return optimizer


class Collector(TrainerCallback):
    """Records a Trainer run into a traindoc run folder."""

    def __init__(self, root: str = "runs", name: str | None = None, **options):
        if not isinstance(root, str) or not root:
            raise ValueError("traindoc: Collector(root=...) must be a folder path")
        self.root, self.name, self.options = root, name, options
        self.run: Run | None = None
        self._hook = None
        self._seen_forward_loss = False

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        config = {k: v for k, v in args.to_dict().items() if isinstance(v, (int, float, str, bool)) or v is None}
        num_labels = getattr(getattr(model, "config", None), "num_labels", None)
        self.run = attach(model, _inner(optimizer), root=self.root, name=self.name or None, config=config,
                          num_classes=num_labels if (num_labels or 0) >= 2 else None, **self.options)
        self._hook = model.register_forward_hook(self._on_forward, with_kwargs=True)

    def _on_forward(self, module, args, kwargs, output):
        if not module.training or self.run is None:
            return
        loss = getattr(output, "loss", None) if not isinstance(output, dict) else output.get("loss")
        if loss is None:
            return
        self._seen_forward_loss = True
        logits = getattr(output, "logits", None) if not isinstance(output, dict) else output.get("logits")
        labels = kwargs.get("labels")
        if logits is not None and labels is not None and labels.dtype.is_floating_point is False:
            self.run.log_train(loss, output=logits, target=labels)
        else:
            self.run.log_train(loss)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.run is None or not logs or self._seen_forward_loss:
            return
        if "loss" in logs:  # the model computes its loss elsewhere: use the Trainer's average
            self.run.log_train(float(logs["loss"]))

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.run is not None:
            self.run.end_epoch()

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.run is None or not metrics:
            return
        vals = {k.removeprefix("eval_"): v for k, v in metrics.items()
                if k.startswith("eval_") and isinstance(v, (int, float))
                and k not in ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")}
        self.run.log_val(loss=vals.pop("loss", None), accuracy=vals.pop("accuracy", None), **vals)

    def on_train_end(self, args, state, control, **kwargs):
        if self._hook is not None:
            self._hook.remove()
        if self.run is not None:
            self.run.close()
