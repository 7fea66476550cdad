"""PyTorch Lightning: `Trainer(callbacks=[collector.lightning.Collector(root="runs")])`.

Only public hooks are used (on_train_start, on_before_backward, on_train_batch_end, on_train_epoch_end,
on_validation_epoch_end, on_train_end, on_exception) and public trainer properties
(optimizers, callback_metrics, sanity_checking, current_epoch). LR, momentum and update
ratios come from the optimizers' own step hooks, as in a plain loop; under DDP every
rank takes part in the loss all-reduce and only rank 0 writes.
"""

from __future__ import annotations

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the older package name
    from pytorch_lightning.callbacks import Callback

from .run import Run, attach

#: Names a LightningModule commonly logs, and the series they feed. Pass `metric_map`
#: to add your own: {"my_val_top1": "val_acc"}.
DEFAULT_MAP = {"train_acc": "train_acc", "train_acc_step": "train_acc", "train_accuracy": "train_acc",
               "val_loss": "val_loss", "val_acc": "val_acc", "val_accuracy": "val_acc",
               "valid_loss": "val_loss", "valid_acc": "val_acc"}


class Collector(Callback):
    """Records a Lightning run into a traindoc run folder."""

    def __init__(self, root: str = "runs", name: str | None = None, metric_map: dict | None = None, **options):
        if not isinstance(root, str) or not root:
            raise ValueError("traindoc: Collector(root=...) must be a folder path")
        self.root, self.name, self.options = root, name, options
        self.metric_map = {**DEFAULT_MAP, **(metric_map or {})}
        self.run: Run | None = None

    def _metric(self, trainer, role: str):
        metrics = trainer.callback_metrics  # a property that Lightning builds on each access
        for key, target in self.metric_map.items():
            if target == role and key in metrics:
                return metrics[key]
        return None

    def on_train_start(self, trainer, pl_module) -> None:
        config = dict(pl_module.hparams) if getattr(pl_module, "hparams", None) else {}
        config.setdefault("max_epochs", trainer.max_epochs)
        config.setdefault("accumulate_grad_batches", trainer.accumulate_grad_batches)
        self.run = attach(pl_module, list(trainer.optimizers), root=self.root, name=self.name, config=config,
                          **self.options)

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        # Here, not at batch end: with accumulate_grad_batches the last micro-batch's end
        # comes after its optimizer step, which would put it in the next window.
        if self.run is None or loss is None:
            return
        # Automatic optimization hands on the loss divided by accumulate_grad_batches.
        accum = trainer.accumulate_grad_batches if pl_module.automatic_optimization else 1
        self.run.log_train(loss, divided_by=accum)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.run is not None and self.run.should_stop:  # live diagnosis found an error
            trainer.should_stop = True
        if self.run is not None:
            acc = self._metric(trainer, "train_acc")  # Lightning publishes it at batch end
            if acc is not None:
                self.run.log_train_accuracy(acc)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.run is not None:
            self.run.end_epoch()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self.run is None or trainer.sanity_checking:
            return
        extra = {k.removeprefix("val_").removeprefix("valid_"): v for k, v in trainer.callback_metrics.items()
                 if k.startswith(("val_", "valid_")) and self.metric_map.get(k) not in ("val_loss", "val_acc")}
        self.run.log_val(loss=self._metric(trainer, "val_loss"), accuracy=self._metric(trainer, "val_acc"), **extra)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.run is not None:
            self.run.close()

    def on_exception(self, trainer, pl_module, exception) -> None:
        if self.run is not None:
            self.run.close("crashed", reason=f"{type(exception).__name__}: {exception}")
