"""Hugging Face Trainer: `Trainer(..., callbacks=[collector.hf.Collector(root="runs")])`.

Per-batch training losses (and accuracy, when the batch has `labels` and the model
returns `logits`) are taken from the model's outputs by a forward hook, so windows have
a real variance; eval loss and metrics come from `on_evaluate`; the LR the scheduler set,
momentum/betas and update ratios from the optimizer's step hooks; TrainingArguments
are the config. Models whose loss is computed outside `forward` fall back to the
averaged `loss` that the Trainer logs.

When the model takes the Trainer's `num_items_in_batch` (causal LMs under gradient
accumulation), each forward's loss is its token-loss sum divided by the tokens of the
whole accumulated batch; it is scaled back to the micro-batch's own mean, on the device.
The class count comes from the logits' width (the vocabulary for an LM), never from
`config.num_labels`, which is 2 for any model that does not classify.
"""

from __future__ import annotations

import torch
from transformers import TrainerCallback

from .run import Run, attach


def _loss_kind(model) -> tuple[bool, bool]:
    """(shifts labels, divides by num_items_in_batch) for the model's own loss function.

    A causal LM predicts label i+1 at position i (the Trainer counts its tokens the same
    way). Only the token-level losses divide by the Trainer's item count; a sequence
    classifier takes the keyword and ignores it, so its loss is already a plain mean."""
    try:
        from transformers.loss import loss_utils as lu
    except ImportError:
        return False, False
    try:
        fn = model.loss_function  # what the model's forward calls
    except Exception:
        fn = lu.LOSS_MAPPING.get(getattr(model, "loss_type", None))
    per_item = fn is not None and fn in (getattr(lu, "ForCausalLMLoss", None), getattr(lu, "ForMaskedLMLoss", None),
                                         getattr(lu, "ForTokenClassification", None))
    shifts = fn is lu.ForCausalLMLoss and not getattr(getattr(model, "config", None), "is_encoder_decoder", False)
    return shifts, per_item


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
        self._shifts = self._per_item = False

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        config = {k: v for k, v in args.to_dict().items() if isinstance(v, (int, float, str, bool)) or v is None}
        self.run = attach(model, _inner(optimizer), root=self.root, name=self.name or None, config=config,
                          **self.options)
        self._shifts, self._per_item = _loss_kind(model)
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
        if labels is not None and labels.dtype.is_floating_point:
            labels = None
        targets = kwargs.get("shift_labels")
        if targets is None and labels is not None:
            targets = labels[..., 1:] if self._shifts else labels
        divided_by = 1.0
        items = kwargs.get("num_items_in_batch")
        if items is not None and targets is not None and self._per_item:
            # loss = sum over this micro-batch / items of the whole accumulated batch
            here = targets.ne(-100).sum().clamp(min=1)
            divided_by = items / here if isinstance(items, torch.Tensor) else here.new_tensor(float(items)) / here
        if logits is not None and targets is not None:
            out = logits[..., :-1, :] if self._shifts and kwargs.get("shift_labels") is None else logits
            self.run.log_train(loss, output=out, target=targets, divided_by=divided_by)
        else:
            self.run.log_train(loss, divided_by=divided_by)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.run is None or not logs or self._seen_forward_loss:
            return
        if "loss" in logs:  # the model computes its loss elsewhere: use the Trainer's average
            self.run.log_train(float(logs["loss"]))

    def on_step_end(self, args, state, control, **kwargs):
        if self.run is not None and self.run.should_stop:  # live diagnosis found an error
            control.should_training_stop = True

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
