"""`attach()` and the `Run` it returns: the collector's public surface.

Hot-path rules (see STYLE.md): `log_train` and the optimizer hooks only queue tensor ops
and append references. Values are read back once per window, by an asynchronous copy
that the writer thread waits on, so the training thread never synchronises with the
device. On the CPU in one process, even the window's ops are left to the writer thread
(`stats.Pending`). The pieces: `window` (what log_train collects), `accuracy` (scoring),
`hooks` (optimizer step hooks), `ranks` (DDP), `identity` (folder, id, resume), `sinks`
(where the run goes: a local folder, or a spool uploaded to an object store) and `writer`.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any, Iterable, Mapping

import torch

from traindoc import format as fmt

from . import identity, lifecycle, sinks, stats
from .accuracy import DEFAULT_IGNORE_INDEX, LabelPrior, classes_of
from .hooks import HparamRecorder, StepHooks
from .meta import initial_meta
from .ranks import Ranks
from .ratios import UpdateRatios
from .window import Window
from .writer import CLOSE_TIMEOUT_SECS, Deferred

#: How long rank 0's close() waits for the other ranks' last partial window (at most half
#: of the close timeout).
FINAL_WAIT_SECS = 5.0
#: How long close() tries to finish uploading a run written to an s3:// root.
UPLOAD_WAIT_SECS = sinks.UPLOAD_WAIT_SECS


class TrainingStopped(RuntimeError):
    """Raised by `Run.check()` after live diagnosis (`on_finding="stop"`) asked training to stop."""


def attach(model: torch.nn.Module | None, optimizer, root: str = "runs", name: str | None = None,
           config: Mapping[str, Any] | None = None, **options) -> "Run":
    """Start recording a run of `model` trained by `optimizer` (one or a list).

    Options: num_classes, log_every (steps per loss window, default 50),
    ratio_every (steps between update-ratio samples, default 100; 0 turns them
    off), flush_secs (default 1.0), ignore_index (target value that does not count
    towards accuracy; default -100, as in F.cross_entropy), loss_fn (a loss module
    whose `ignore_index` is used), resume (continue the run already in root/name
    instead of starting `name-2`), max_pending (records the writer may hold before it
    drops, counted, rather than slow the step; default 200,000), close_timeout (the most
    seconds close() takes to write the rest and mark the run ended, even when the disk
    hangs; default 5), on_finding (live diagnosis on the writer's thread: "warn" for a
    warning per new finding, "stop" to also stop at an error such as divergence (see
    `Run.should_stop`), or a callable given each new Finding; default off), live_every
    (diagnose after every N-th flush that wrote data; default 1).

    `root` may be an `s3://bucket/prefix` URL: the run is written to a local spool
    (`$TRAINDOC_SPOOL`, default ~/.cache/traindoc/spool) and a background thread uploads
    it as immutable objects every few seconds (`traindoc.remote`); the store being down
    never stops training, and what it could not take is sent later (`traindoc push`);
    close() waits up to UPLOAD_WAIT_SECS more for the last upload.
    """
    return Run(model, optimizer, root=root, name=name, config=config, **options)


class Run:
    """One training run being recorded. Also a context manager."""

    def __init__(self, model, optimizer, root: str = "runs", name: str | None = None,
                 config: Mapping[str, Any] | None = None, num_classes: int | None = None,
                 log_every: int = 50, ratio_every: int = 100, flush_secs: float = 1.0,
                 ignore_index: int | None = None, loss_fn=None, resume: bool = False,
                 max_pending: int = 200_000, close_timeout: float = CLOSE_TIMEOUT_SECS,
                 on_finding=None, live_every: int = 1):
        optimizers = list(optimizer) if isinstance(optimizer, (list, tuple)) else [optimizer]
        if not optimizers or not all(isinstance(o, torch.optim.Optimizer) for o in optimizers):
            raise TypeError("traindoc: optimizer must be a torch.optim.Optimizer or a list of them")
        if int(log_every) < 1:
            raise ValueError(f"traindoc: log_every must be >= 1, got {log_every!r}")
        if int(ratio_every) < 0:
            raise ValueError(f"traindoc: ratio_every must be >= 0 (0 = off), got {ratio_every!r}")
        if num_classes is not None and int(num_classes) < 2:
            raise ValueError(f"traindoc: num_classes must be >= 2, got {num_classes!r}")
        if not float(close_timeout) >= 0:
            raise ValueError(f"traindoc: close_timeout must be >= 0 seconds, got {close_timeout!r}")
        if ignore_index is None:
            ignore_index = getattr(loss_fn, "ignore_index", DEFAULT_IGNORE_INDEX)
        self.optimizers = optimizers
        self.log_every = int(log_every)
        self.ignore_index = int(ignore_index)
        self.close_timeout = float(close_timeout)
        self.step = 0
        self.epoch = 0
        self.closed = False
        self._session_steps = 0  # steps taken by this process (a resumed run starts above 0)
        self._warned: set[str] = set()
        self._offset: int | None = None  # 1: losses logged before their step; 0: after it
        self._num_classes = int(num_classes) if num_classes is not None else None
        self._window = Window(self._warn, self.ignore_index)
        self._first_logged = False
        self._resumed = False
        self._skipped_dev = None  # GPU + fused optimizer: skipped steps, counted on the device
        self._prior: LabelPrior | None = LabelPrior()  # until the first window closes
        self.ranks = Ranks()

        self.name = identity.safe_name(name) if name else time.strftime("run-%Y%m%d-%H%M%S") + f"-{os.getpid()}"
        # an s3:// root: the run is spooled locally, and its sink uploads it in the background
        root, self.url = sinks.local_root(root)
        self.path = os.path.join(root, self.name)
        self.run_id = None
        self._sink: sinks.LocalSink | None = None
        if self.ranks.writes:
            self._open(root, model, config, optimizers, ratio_every, flush_secs, max_pending, resume)

        self.stop_reason: dict | None = None  # set when live diagnosis asked training to stop
        self.live = None
        if on_finding is not None and self._sink is not None:
            from .live import LiveDiagnosis  # loads the rules: only when asked for

            self.live = LiveDiagnosis(self, on_finding, live_every)
            self._sink.writer.after_flush = self.live.check

        names = _param_names(model)
        ratios = UpdateRatios(optimizers, names, ratio_every) if (ratio_every and self._sink) else None
        self._hparams = HparamRecorder(self._put_value, self.log_every)
        self._hooks = StepHooks(optimizers, ratios, self._after_step, self._on_ratios, self._warn)
        lifecycle.register(self)

    def _open(self, root, model, config, optimizers, ratio_every, flush_secs, max_pending, resume) -> None:
        try:
            c = identity.claim(root, self.name, resume)
            self.name, self.path, self.run_id = c.name, c.path, c.run_id
            meta = initial_meta(self.name, config, model, optimizers, self._num_classes,
                                self.log_every, ratio_every, self.ranks.world)
            meta["run_id"] = c.run_id
            if c.resumed is not None:
                meta = identity.resumed_meta(c.resumed, meta, c.step)
                self.step, self.epoch, self._resumed = c.step, c.epoch, True
                if self._num_classes is None and c.resumed.get("num_classes"):
                    self._num_classes = int(c.resumed["num_classes"])
            self._sink = sinks.open_sink(self.path, meta, self.url, flush_secs=flush_secs, max_pending=max_pending,
                                         keys=c.keys, close_timeout=self.close_timeout,
                                         upload_wait=UPLOAD_WAIT_SECS)
        except Exception as exc:  # cannot even create the folder: train on, record nothing
            self._warn("open", f"traindoc: cannot write run at {self.path!r}: {exc!r}; not recording")

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
                self._offset = 1 if self._session_steps == 0 else 0
            if isinstance(loss, torch.Tensor):
                t = loss.detach()
                if t.dim():
                    t = t.reshape(()) if t.numel() == 1 else t.float().mean()
            else:
                t = torch.tensor(float(loss))
            if not (isinstance(divided_by, (int, float)) and divided_by == 1):
                t = t * divided_by  # a number or a device tensor (HF's token counts): no sync
            elif t.device.type not in self._window.by_reference:
                t = t.clone()
            if not self._first_logged:  # the very first loss, for the initial-loss (ln C) check
                self._first_logged = True
                if not self._resumed:  # a resumed run has its first loss already
                    self._defer(t.reshape(1), lambda vals: [(fmt.LOSS_FIRST, vals[0])])
            self._window.add_loss(t)
            if target is not None and output is not None:
                if self._num_classes is None:
                    self._note_classes(classes_of(output, target))
                self._window.add_batch(output, target)
                if self._prior is not None and output.dim() == target.dim() + 1 and not target.is_floating_point():
                    self._prior.add(target)
            elif accuracy is not None:
                self._window.add_fraction(accuracy)
        except Exception as exc:
            self._warn("log_train:" + type(exc).__name__, f"traindoc: log_train failed: {exc!r}")

    def log_train_accuracy(self, accuracy) -> None:
        """Record a batch's accuracy (fraction correct) apart from its loss, for frameworks
        that publish it later than the loss; it joins the current window."""
        if self.closed:
            return
        try:
            self._window.add_fraction(accuracy)
        except Exception as exc:
            self._warn("log_train:" + type(exc).__name__, f"traindoc: log_train_accuracy failed: {exc!r}")

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
            self._window.fold_into_epoch(self._deferrable())
            self._emit_stats(self._reduce(self._window.close_epoch()), fmt.LOSS_EPOCH, fmt.TRAIN_ACC_EPOCH)
            self.epoch += 1
            self._put((fmt.EPOCH, self.step, time.time(), float(self.epoch)))
        except Exception as exc:
            self._warn("end_epoch:" + type(exc).__name__, f"traindoc: end_epoch failed: {exc!r}")

    @property
    def remote(self) -> str | None:
        """For an s3:// root, where the run goes on the store: `<root>/<name>`, or `<name>-N` when
        another machine's run already owned the name (known once the uploader reached the store)."""
        if self._sink is not None:
            return self._sink.remote
        return f"{self.url}/{self.name}" if self.url else None  # a rank that does not write

    @property
    def _writer(self):
        """The sink's background writer (tests flush it directly)."""
        return self._sink.writer if self._sink is not None else None

    @property
    def _uploader(self):
        """The sink's uploader, for an s3:// root (tests look at its state)."""
        return getattr(self._sink, "uploader", None)

    # ---- live diagnosis -------------------------------------------------------------
    @property
    def should_stop(self) -> bool:
        """True once live diagnosis (`on_finding="stop"`) found an error such as divergence:
        a plain loop checks it (or calls `check()`); the Lightning and Hugging Face
        callbacks stop their trainers on it."""
        return self.stop_reason is not None

    def check(self) -> None:
        """Raise `TrainingStopped`, saying why, if live diagnosis asked training to stop."""
        if self.stop_reason is not None:
            r = self.stop_reason
            raise TrainingStopped(f"traindoc stopped {self.name!r} at step {r['raised_at_step']}: {r['rule']} "
                                  f"({r['severity']}): {r['advice']}")

    def request_stop(self, finding: dict) -> None:
        """Ask training to stop (from the writer thread) and mark the run with why."""
        if self.stop_reason is None:
            self.stop_reason = finding
            if self._sink is not None:
                self._sink.meta["stopped_by"] = {k: finding[k] for k in ("rule", "severity", "steps", "advice",
                                                                           "raised_at_step")}

    def close(self, status: str = fmt.STATUS_FINISHED, reason: str | None = None, wait: bool = True) -> None:
        """Write the last window, mark the run `status`, and remove every hook.

        Takes at most `close_timeout` seconds (default 5), even when the writer is stuck in a
        write: the run is then still marked in meta.json. An s3:// run waits up to
        UPLOAD_WAIT_SECS more for its last upload (not with `wait=False`).
        Never a collective: under DDP the ranks' last partial windows meet through the
        process group's store, rank 0 waiting at most FINAL_WAIT_SECS, or half the close
        timeout (not at all with `wait=False`, as from a signal handler or at exit)."""
        if self.closed:
            return
        deadline = time.monotonic() + self.close_timeout
        try:
            collective = self.ranks.collective()  # a store lookup at most, never a collective
            if self._window.has_data or collective:
                part = self._window.close(deferrable=self._deferrable())
                wait_ranks = min(FINAL_WAIT_SECS, self.close_timeout / 2) if wait else 0.0
                part, merged, missing = self.ranks.gather_final(part, wait_ranks)
                if missing and self._sink is not None:
                    self._sink.meta.update(last_window_ranks=len(merged), last_window_missing=missing)
                self._emit_stats(part, fmt.LOSS_WINDOW, fmt.TRAIN_ACC)
            self._emit_prior()
        except Exception as exc:
            self._warn("close", f"traindoc: could not close the last window: {exc!r}")
        self.closed = True
        self.ranks.mark_closed()
        self._hooks.remove()
        lifecycle.unregister(self)
        if self._sink is not None:
            details = {"end_time": time.time(), "steps": self.step, "epochs": self.epoch,
                       "ranks": self.ranks.mode or "rank-local"}
            if reason:
                details["end_reason"] = reason
            elif self.stop_reason is not None:
                details["end_reason"] = f"stopped by traindoc: {self.stop_reason['rule']}"
            self._sink.finalize(status, details, wait=wait, timeout=max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(fmt.STATUS_CRASHED if exc_type else fmt.STATUS_FINISHED,
                   reason=None if exc_type is None else f"{exc_type.__name__}: {exc}")

    # ---- steps ----------------------------------------------------------------------
    def _after_step(self, index: int, optimizer, skipped) -> None:
        """After every real optimizer step (steps GradScaler skipped do not get here)."""
        if index == 0:
            self.step += 1
            self._session_steps += 1
            if isinstance(skipped, torch.Tensor):  # a GPU flag: counted there, read with the window
                self._skipped_dev = skipped.float() if self._skipped_dev is None else self._skipped_dev + skipped
        self._hparams.record(index, optimizer, self.step)
        if index == 0:
            n = self._session_steps
            if self._offset == 1 and n % self.log_every == 0:
                self._close_window(self.step)  # logged before step(): this step's losses are in
            elif self._offset == 0 and n > 1 and (n - 1) % self.log_every == 0:
                self._close_window(self.step - 1)  # logged after step(): the previous step's are in

    def _on_ratios(self, keys: list, vec) -> None:
        # NaN marks a sampled step that GradScaler skipped on a GPU: no ratio for it
        self._defer(vec, lambda vals, keys=keys: [(k, v) for k, v in zip(keys, vals) if v == v])

    def _close_window(self, step: int) -> None:
        collective = self.ranks.collective()
        if not self._window.has_data and not collective:
            return
        self._emit_stats(self._reduce(self._window.close(self._deferrable()), step), fmt.LOSS_WINDOW,
                         fmt.TRAIN_ACC, step)
        self._emit_prior(step)
        if self._skipped_dev is not None:
            self._defer(self._skipped_dev.reshape(1), lambda vals: [(fmt.SKIPPED_STEPS, vals[0])], step)

    def _emit_prior(self, step: int | None = None) -> None:
        """Once, with the first window: the entropy of the class frequencies its targets had."""
        prior, self._prior = self._prior, None
        if prior is not None:
            h = prior.entropy(self._num_classes, self.ignore_index)
            if h is not None:
                self._defer(h, lambda vals: [(fmt.LABEL_ENTROPY, vals[0])], step)

    def _deferrable(self) -> bool:
        """Window statistics may be left to the writer thread: a writer, and no collective."""
        return self._sink is not None and not self.ranks.collective()

    def _reduce(self, v, step: int | None = None):
        """Every rank's statistics of the window, or this rank's when the ranks no longer meet
        (uneven step counts: noted in meta.json once)."""
        if not self.ranks.collective():
            return v
        out = self.ranks.reduce(v, self.step if step is None else step)
        if self.ranks.local_from and self._sink is not None and "ranks_note" not in self._sink.meta:
            self._sink.meta["ranks_note"] = self.ranks.local_from
            self._warn("ranks", f"traindoc: {self.ranks.local_from}")
        return out

    def _note_classes(self, n: int | None) -> None:
        if n is not None and self._num_classes is None:
            self._num_classes = n
            if self._sink is not None and self._sink.meta.get("num_classes") is None:
                self._sink.meta["num_classes"] = n

    # ---- output ---------------------------------------------------------------------
    def _emit_stats(self, v, loss_prefix: str, acc_key: str, step: int | None = None) -> None:
        self._defer(v, lambda vals: stats.expand(vals, loss_prefix, acc_key), step)

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

    def _defer(self, tensor, expand, step: int | None = None) -> None:
        """Hand a device tensor to the writer without waiting for it."""
        if self._sink is None:
            return
        step = self.step if step is None else step
        if isinstance(tensor, stats.Pending):  # computed by the writer thread
            self._sink.put(Deferred(step, time.time(), tensor, None, expand))
            return
        t = tensor.detach()
        if t.device.type == "cuda":
            # note: non_blocking copy + event: the writer thread waits, not us
            cpu = t.to("cpu", non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        else:
            cpu, event = (t.clone() if t.device.type == "cpu" else t.to("cpu")), None
        self._sink.put(Deferred(step, time.time(), cpu, event, expand))

    def _put(self, record: tuple) -> None:
        if self._sink is not None:
            self._sink.put(record)

    def _warn(self, kind: str, message: str) -> None:
        if self._sink is not None:
            self._sink.warn(kind, message)
        elif kind not in self._warned:
            self._warned.add(kind)
            try:
                warnings.warn(message, RuntimeWarning, stacklevel=3)
            except Exception:  # warnings turned into errors must not end training
                pass


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
