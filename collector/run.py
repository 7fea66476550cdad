"""`attach()` and the `Run` it returns: the collector's whole public surface.

Hot-path rules (see STYLE.md): `log_train` and the optimizer hooks only queue
tensor ops and append references. Values are read back once per window, by an
asynchronous copy that the writer thread waits on, so the training thread
never synchronises with the device. On the CPU in one process, even the window's
ops are left to the writer thread (`stats.Pending`).
"""

from __future__ import annotations

import os
import re
import time
import warnings
from typing import Any, Iterable, Mapping

import torch

from traindoc import format as fmt

from . import lifecycle, stats
from .meta import initial_meta
from .ratios import UpdateRatios
from .writer import Deferred, RunWriter

_HPARAMS = (fmt.LR_PREFIX, fmt.MOMENTUM_PREFIX, fmt.BETA1_PREFIX, fmt.BETA2_PREFIX)
_NAME_OK = re.compile(r"[^A-Za-z0-9._+=@-]+")


def attach(model: torch.nn.Module | None, optimizer, root: str = "runs", name: str | None = None,
           config: Mapping[str, Any] | None = None, **options) -> "Run":
    """Start recording a run of `model` trained by `optimizer` (one or a list).

    Options: num_classes, log_every (steps per loss window, default 50),
    ratio_every (steps between update-ratio samples, default 100; 0 turns them
    off), flush_secs (default 1.0), ignore_index (target value that does not
    count towards accuracy), max_pending (records the writer may hold before it
    drops, counted, rather than slow the step; default 200,000).
    """
    return Run(model, optimizer, root=root, name=name, config=config, **options)


class Run:
    """One training run being recorded. Also a context manager."""

    def __init__(self, model, optimizer, root: str = "runs", name: str | None = None,
                 config: Mapping[str, Any] | None = None, num_classes: int | None = None,
                 log_every: int = 50, ratio_every: int = 100, flush_secs: float = 1.0,
                 ignore_index: int | None = None, max_pending: int = 200_000):
        optimizers = list(optimizer) if isinstance(optimizer, (list, tuple)) else [optimizer]
        if not optimizers or not all(isinstance(o, torch.optim.Optimizer) for o in optimizers):
            raise TypeError("traindoc: optimizer must be a torch.optim.Optimizer or a list of them")
        if int(log_every) < 1:
            raise ValueError(f"traindoc: log_every must be >= 1, got {log_every!r}")
        if int(ratio_every) < 0:
            raise ValueError(f"traindoc: ratio_every must be >= 0 (0 = off), got {ratio_every!r}")
        self.optimizers = optimizers
        self.log_every = int(log_every)
        self.ignore_index = ignore_index
        self.step = 0
        self.epoch = 0
        self.closed = False
        self._warned: set[str] = set()
        self._offset: int | None = None  # 1: losses logged before their step; 0: after it
        self._losses: list = []
        self._corrects: list = []
        self._total = 0
        self._masked_totals: list = []
        self._stash: list = []  # (output, target) kept by reference until the window closes
        self._stash_numel = 0
        self.stash_limit = 1 << 22  # output elements per window (16 MB of fp32 logits)
        # Device types whose losses and logits are kept by reference until the window closes.
        # Elsewhere a loss is copied (one tiny op) and logits are scored at once, because
        # CUDA graphs (torch.compile's "reduce-overhead") overwrite their outputs in place.
        self.by_reference = ("cpu",)
        self._held: list = []  # (stats.Pending, output elements) of windows left to the writer
        self._device: torch.device | None = None
        self._window_carry: list = []  # parts already taken into the epoch, still owed to the window
        self._epoch_parts: list = []  # window parts of the current epoch, merged at end_epoch
        self._last_hparams: dict[tuple, object] = {}
        self._rank, self._world = _dist_rank()
        self._num_classes = num_classes

        self.name = _safe_name(name) if name else time.strftime("run-%Y%m%d-%H%M%S") + f"-{os.getpid()}"
        self.path = os.path.join(root, self.name)
        self._writer = None
        if self._rank == 0:
            try:
                meta = initial_meta(self.name, config, model, optimizers, num_classes,
                                    self.log_every, ratio_every, self._world)
                self._writer = RunWriter(self.path, meta, flush_secs=flush_secs, max_pending=max_pending)
            except Exception as exc:  # cannot even create the folder: train on, record nothing
                self._warn("open", f"traindoc: cannot write run at {self.path!r}: {exc!r}; not recording")

        names = _param_names(model)
        self._ratios = UpdateRatios(optimizers, names, ratio_every) if (ratio_every and self._rank == 0) else None
        self._handles = []
        self._pre_handles: dict[int, Any] = {}  # armed only before sampled steps
        for i, opt in enumerate(optimizers):
            self._handles.append(opt.register_step_post_hook(self._make_post_hook(i)))
            self._arm_pre_hook(i)
        lifecycle.register(self)

    # ---- public API -----------------------------------------------------------------
    def log_train(self, loss, output=None, target=None, divided_by: float = 1.0, accuracy=None) -> None:
        """Record one batch's (or micro-batch's) training loss, and accuracy if given.

        `loss`: a 0-d tensor (or per-sample losses, which are averaged). If your
        script divides the loss by the accumulation steps, pass that factor as
        `divided_by` and the unscaled value is recorded. Accuracy comes from
        `output` (logits) and `target`, or, if you computed it already, `accuracy`
        (the batch's fraction correct; a window then averages the batches). No sync.
        """
        if self.closed:
            return
        try:
            if self._offset is None:
                self._offset = 1 if self.step == 0 else 0
            if isinstance(loss, torch.Tensor):
                t = loss.detach()
                if t.dim():
                    t = t.reshape(()) if t.numel() == 1 else t.float().mean()
            else:
                t = torch.tensor(float(loss))
            if divided_by != 1:
                t = t * divided_by
            elif t.device.type not in self.by_reference:
                t = t.clone()
            if self._device is None:  # the very first loss, for the initial-loss (ln C) check
                self._device = t.device
                self._defer(t.reshape(1), lambda vals: [(fmt.LOSS_FIRST, vals[0])])
            self._losses.append(t)
            if target is not None and output is not None:
                self._log_accuracy(output, target)
            elif accuracy is not None:
                a = accuracy.detach() if isinstance(accuracy, torch.Tensor) else torch.tensor(float(accuracy))
                a = a.reshape(()).float()
                self._corrects.append(a if a.device.type in self.by_reference else a.clone())
                self._total += 1
        except Exception as exc:
            self._warn("log_train:" + type(exc).__name__, f"traindoc: log_train failed: {exc!r}")

    def log_val(self, loss=None, accuracy=None, step: int | None = None, **metrics) -> None:
        """Record validation results at the current optimizer step (or `step`)."""
        values = dict(metrics)
        if loss is not None:
            values["loss"] = loss
        if accuracy is not None:
            values["acc"] = accuracy
        self._log_values({f"val/{k}": v for k, v in values.items()}, step)

    def log(self, values: Mapping[str, Any], step: int | None = None) -> None:
        """Record any other scalars, as custom series `custom/<name>`."""
        self._log_values({fmt.CUSTOM_PREFIX + str(k): v for k, v in values.items()}, step)

    def end_epoch(self) -> None:
        """Close the per-epoch loss/accuracy window and record the epoch number."""
        if self.closed:
            return
        try:
            self._fold_into_epoch()
            self._emit_stats(self._reduce(stats.merge_later(self._epoch_parts)), fmt.LOSS_EPOCH, fmt.TRAIN_ACC_EPOCH)
            self._epoch_parts = []
            self.epoch += 1
            self._put((fmt.EPOCH, self.step, time.time(), float(self.epoch)))
        except Exception as exc:
            self._warn("end_epoch:" + type(exc).__name__, f"traindoc: end_epoch failed: {exc!r}")

    def close(self, status: str = fmt.STATUS_FINISHED, reason: str | None = None) -> None:
        """Write the last window, mark the run `status`, and remove every hook."""
        if self.closed:
            return
        try:
            self._close_window()
        except Exception as exc:
            self._warn("close", f"traindoc: could not close the last window: {exc!r}")
        self.closed = True
        for h in self._handles + list(self._pre_handles.values()):
            h.remove()
        self._handles, self._pre_handles = [], {}
        lifecycle.unregister(self)
        if self._writer is not None:
            final = {"status": status, "end_time": time.time(), "steps": self.step, "epochs": self.epoch}
            if reason:
                final["end_reason"] = reason
            self._writer.close(final)

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(fmt.STATUS_CRASHED if exc_type else fmt.STATUS_FINISHED,
                   reason=None if exc_type is None else f"{exc_type.__name__}: {exc}")

    # ---- hooks ----------------------------------------------------------------------
    def _arm_pre_hook(self, index: int) -> None:
        """Register the snapshot hook if the next step of optimizer `index` is sampled, else drop it."""
        want = self._ratios is not None and self._ratios.sampled(index)
        handle = self._pre_handles.get(index)
        if want and handle is None:
            self._pre_handles[index] = self.optimizers[index].register_step_pre_hook(self._make_pre_hook(index))
        elif not want and handle is not None:
            handle.remove()  # from the post hook: the pre-hook dict is not being iterated now
            del self._pre_handles[index]

    def _make_pre_hook(self, index: int):
        def pre_hook(optimizer, args, kwargs):
            try:
                self._ratios.before_step(index)
            except Exception as exc:
                self._warn("pre_hook:" + type(exc).__name__, f"traindoc: step hook failed: {exc!r}")
        return pre_hook

    def _make_post_hook(self, index: int):
        def post_hook(optimizer, args, kwargs):
            try:
                if index == 0:
                    self.step += 1
                self._record_hparams(index, optimizer)
                if self._ratios is not None:
                    sampled = self._ratios.after_step(index)
                    if sampled is not None:
                        keys, vec = sampled
                        self._defer(vec, lambda vals, keys=keys: list(zip(keys, vals)))
                    self._arm_pre_hook(index)
                if index == 0:
                    if self._offset == 1 and self.step % self.log_every == 0:
                        self._close_window(self.step)  # logged before step(): this step's losses are in
                    elif self._offset == 0 and self.step > 1 and (self.step - 1) % self.log_every == 0:
                        self._close_window(self.step - 1)  # logged after step(): the previous step's are in
            except Exception as exc:
                self._warn("post_hook:" + type(exc).__name__, f"traindoc: step hook failed: {exc!r}")
        return post_hook

    def _record_hparams(self, index: int, optimizer) -> None:
        """LR, momentum and betas of every group, each written only when it changes."""
        prefix = "" if index == 0 else f"opt{index}/"
        last = self._last_hparams
        now = None
        for j, group in enumerate(optimizer.param_groups):
            fast = (group.get("lr"), group.get("momentum"), group.get("betas"))
            if not isinstance(fast[0], torch.Tensor) and last.get((index, j)) == fast:
                continue  # nothing changed since the last step: the usual case
            last[(index, j)] = fast
            betas = fast[2]
            values = (fast[0], fast[1], betas[0] if betas else None, betas[1] if betas else None)
            for name, value in zip(_HPARAMS, values):
                if value is None:
                    continue
                if isinstance(value, torch.Tensor):  # tensor LR (capturable/fused optimizers)
                    if value.device.type == "cpu":
                        value = float(value)
                    elif self.step % self.log_every == 0:  # comparing on device would sync
                        self._put_value(f"{name}{prefix}pg{j}", value, time.time())
                        continue
                    else:
                        continue
                key = (index, j, name)
                if key in last and last[key] == value:
                    continue
                last[key] = value
                now = now or time.time()
                self._put_value(f"{name}{prefix}pg{j}", value, now)

    # ---- windows --------------------------------------------------------------------
    def _log_accuracy(self, output: torch.Tensor, target: torch.Tensor) -> None:
        # Small outputs are kept by reference and scored in one batched op when the
        # window closes (a handful of ops per window instead of three per step);
        # large ones (LM logits) are scored now so that no window holds them.
        n = output.numel()
        if (self._stash_numel + n <= self.stash_limit and output.dim() == target.dim() + 1
                and output.device.type in self.by_reference):
            self._stash.append((output.detach(), target))
            self._stash_numel += n
        else:
            self._score(output, target)

    def _score(self, output: torch.Tensor, target: torch.Tensor) -> None:
        """Score one batch now; the counts stay on the device."""
        correct, total, masked = self._count_correct(output, target)
        self._corrects.append(correct)
        self._total += total
        if masked is not None:
            self._masked_totals.append(masked)

    def _count_correct(self, output: torch.Tensor, target: torch.Tensor):
        """(correct count as a device tensor, total as an int, masked total as a device tensor
        or None) for one batch; argmax carries no graph."""
        if output.dim() == target.dim() + 1 and not target.is_floating_point():
            pred = output.argmax(-1)  # the common case: class logits and class indices
            if self._num_classes is None:
                self._note_classes(output.shape[-1])
        elif target.is_floating_point() and target.shape == output.shape and output.shape[-1] > 1:
            pred, target = output.argmax(-1), target.argmax(-1)  # soft or one-hot labels
            self._note_classes(output.shape[-1])
        else:  # one logit per sample: binary classification
            pred = (output.reshape(target.shape) > 0).to(target.dtype)
        if self.ignore_index is None:
            return pred.eq(target).sum(), target.numel(), None
        # pred never equals ignore_index, so only the denominator needs the mask
        return pred.eq(target).sum(), 0, target.ne(self.ignore_index).sum()

    def _score_stash(self, stash: list):
        """Correct counts of stashed batches: one cat, one argmax and one compare for the
        usual window of same-shaped batches, batch by batch otherwise."""
        batches = stash
        if len(stash) > 1:
            try:
                batches = [(torch.cat([o for o, _ in stash]), torch.cat([t for _, t in stash]))]
            except RuntimeError:  # mixed class counts, devices or dtypes
                pass
        corrects, total, masked = [], 0, []
        for out, tgt in batches:
            c, n, m = self._count_correct(out, tgt)
            corrects.append(c)
            total += n
            if m is not None:
                masked.append(m)
        return corrects, total, masked

    def _note_classes(self, n: int) -> None:
        if self._num_classes is None and n > 1:
            self._num_classes = int(n)
            if self._writer is not None and self._writer.meta.get("num_classes") is None:
                self._writer.meta["num_classes"] = self._num_classes

    def _take_window(self):
        """Stats of the losses logged since the last take: a device vector, or, when training
        on the CPU in one process, a `stats.Pending` that the writer thread computes."""
        dev = self._device or torch.device("cpu")
        parts = (self._losses, self._corrects, self._total, self._masked_totals, self._stash, dev)
        numel = self._stash_numel
        self._losses, self._corrects, self._total, self._masked_totals = [], [], 0, []
        self._stash, self._stash_numel = [], 0
        # Windows left to the writer keep their logits until it runs (up to flush_secs):
        # at most stash_limit elements in all; past that, the training thread scores them.
        if dev.type == "cpu" and self._world == 1 and self._writer is not None:
            self._held = [(p, n) for p, n in self._held if not p.done]  # the writer's progress
            if sum(n for _, n in self._held) + numel <= self.stash_limit:
                pending = stats.Pending(lambda: self._window_stats(*parts))
                self._held.append((pending, numel))
                return pending
        return self._window_stats(*parts)

    def _window_stats(self, losses, corrects, total, masked, stash, dev) -> torch.Tensor:
        if stash:
            try:
                c, n, m = self._score_stash(stash)
                corrects, total, masked = corrects + c, total + n, masked + m
            except Exception as exc:  # e.g. logits on an unexpected device: lose accuracy, keep loss
                self._warn("accuracy:" + type(exc).__name__, f"traindoc: could not score accuracy: {exc!r}")
                corrects, total, masked = [], 0, []
        try:
            return stats.summarize(losses, corrects, total, masked, dev)
        except Exception as exc:
            self._warn("window:" + type(exc).__name__, f"traindoc: dropped odd values from a window: {exc!r}")
            return stats.summarize([t for t in losses if t.device == dev], [], 0, [], dev)

    def _fold_into_epoch(self) -> None:
        part = self._take_window()
        self._window_carry.append(part)
        self._epoch_parts.append(part)

    def _close_window(self, step: int | None = None) -> None:
        has_data = self._losses or self._corrects or self._stash or self._window_carry
        if not has_data and self._world == 1:
            return
        part = self._take_window()
        self._epoch_parts.append(part)
        if len(self._epoch_parts) >= 64:
            self._compact_epoch()
        part = stats.merge_later(self._window_carry + [part])
        self._window_carry = []
        self._emit_stats(self._reduce(part), fmt.LOSS_WINDOW, fmt.TRAIN_ACC, step)

    def _compact_epoch(self) -> None:
        """Merge the epoch's finished window parts into one, so that a script that never
        calls end_epoch() does not keep one part per window for the whole run."""
        ready = [p for p in self._epoch_parts if not isinstance(p, stats.Pending) or p.done]
        if len(ready) > 1:
            waiting = [p for p in self._epoch_parts if isinstance(p, stats.Pending) and not p.done]
            values = []
            for p in ready:
                try:
                    values.append(stats.resolve(p))
                except Exception as exc:  # a window the writer could not compute: the epoch loses it
                    self._warn("epoch:" + type(exc).__name__, f"traindoc: an epoch lost a window: {exc!r}")
            self._epoch_parts = ([stats.merge(values)] if values else []) + waiting

    def _reduce(self, v):
        return stats.all_reduce(v) if self._world > 1 else v

    def _emit_stats(self, v, loss_prefix: str, acc_key: str, step: int | None = None) -> None:
        self._defer(v, lambda vals: stats.expand(vals, loss_prefix, acc_key), step)

    # ---- output ---------------------------------------------------------------------
    def _log_values(self, values: Mapping[str, Any], step: int | None) -> None:
        if self.closed:
            return
        at = self.step if step is None else int(step)
        now = time.time()
        for key, value in values.items():
            try:
                self._put_value(key, value, now, at)
            except Exception as exc:
                self._warn("log:" + type(exc).__name__, f"traindoc: could not log {key!r}: {exc!r}")

    def _put_value(self, key: str, value, now: float, step: int | None = None) -> None:
        step = self.step if step is None else step
        if isinstance(value, torch.Tensor):
            v = value.detach()
            v = v.float().mean() if v.numel() != 1 else v.reshape(())
            self._defer(v.reshape(1), lambda vals, key=key: [(key, vals[0])], step)
        else:
            self._put((key, step, now, float(value)))

    def _defer(self, tensor: torch.Tensor, expand, step: int | None = None) -> None:
        """Hand a device tensor to the writer without waiting for it."""
        if self._writer is None:
            return
        step = self.step if step is None else step
        if isinstance(tensor, stats.Pending):  # computed by the writer thread
            self._writer.put(Deferred(step, time.time(), tensor, None, expand))
            return
        t = tensor.detach()
        if t.device.type == "cuda":
            # note: non_blocking copy + event: the writer thread waits, not us
            cpu = t.to("cpu", non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        else:
            cpu, event = (t.clone() if t.device.type == "cpu" else t.to("cpu")), None
        self._writer.put(Deferred(step, time.time(), cpu, event, expand))

    def _put(self, record: tuple) -> None:
        if self._writer is not None:
            self._writer.put(record)

    def _warn(self, kind: str, message: str) -> None:
        if self._writer is not None:
            self._writer.warn(kind, message)
        elif kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(message, RuntimeWarning, stacklevel=3)


def _dist_rank() -> tuple[int, int]:
    try:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except Exception:
        pass
    return 0, 1


def _param_names(model) -> dict[int, str]:
    """id(parameter) -> readable name, without DDP/compile wrapper prefixes."""
    names: dict[int, str] = {}
    models: Iterable = model if isinstance(model, (list, tuple)) else ([model] if model is not None else [])
    for m in models:
        for n, p in m.named_parameters():
            while n.startswith(("_orig_mod.", "module.")):
                n = n.split(".", 1)[1]
            names.setdefault(id(p), n)
    return names


def _safe_name(name: str) -> str:
    cleaned = _NAME_OK.sub("_", str(name)).strip("._")
    if not cleaned:
        raise ValueError(f"traindoc: run name {name!r} has no usable characters")
    return cleaned
