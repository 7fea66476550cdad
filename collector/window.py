"""The loss/accuracy window: what `log_train` collects between two window closes.

Values stay on the device. A window is turned into one statistics vector (see `stats`)
when it closes; an epoch is the merge of its windows' vectors.
"""

from __future__ import annotations

import torch

from . import accuracy, stats


class Window:
    """Per-batch losses and accuracy counts, by reference or as small device tensors."""

    #: output elements held by reference, per window and for the writer in all (16 MB of fp32)
    stash_limit = 1 << 22

    def __init__(self, warn, ignore_index: int | None = None, by_reference=("cpu",)):
        self.warn = warn
        self.ignore_index = ignore_index
        # Device types whose losses and logits are kept by reference until the window closes.
        # Elsewhere a loss is copied (one tiny op) and logits are scored at once, because
        # CUDA graphs (torch.compile's "reduce-overhead") overwrite their outputs in place.
        self.by_reference = by_reference
        self.device: torch.device | None = None
        self._reset()
        self._held: list = []  # (stats.Pending, output elements) of windows left to the writer
        self._carry: list = []  # parts already taken into the epoch, still owed to the window
        self.epoch_parts: list = []  # window parts of the current epoch, merged at end_epoch

    def _reset(self) -> None:
        self.losses: list = []
        self.corrects: list = []
        self.total = 0
        self.counted: list = []
        self.stash: list = []  # (output, target) kept by reference until the window closes
        self.stash_numel = 0

    @property
    def has_data(self) -> bool:
        return bool(self.losses or self.corrects or self.stash or self._carry)

    # ---- adding --------------------------------------------------------------------
    def add_loss(self, t: torch.Tensor) -> None:
        if self.device is None:
            self.device = t.device
        self.losses.append(t)

    def add_batch(self, output: torch.Tensor, target: torch.Tensor) -> None:
        """Small outputs are kept by reference and scored in one batched op when the window
        closes; large ones (LM logits), and those off the CPU, are scored now."""
        n = output.numel()
        if (self.stash_numel + n <= self.stash_limit and output.dim() == target.dim() + 1
                and output.device.type in self.by_reference):
            self.stash.append((output.detach(), target))
            self.stash_numel += n
            return
        c, total, counted = accuracy.count_correct(output.detach(), target, self.ignore_index)
        self.corrects.append(c)
        self.total += total
        if counted is not None:
            self.counted.append(counted)

    def add_fraction(self, a) -> None:
        """An accuracy the script computed itself: the window averages the batches."""
        a = a.detach() if isinstance(a, torch.Tensor) else torch.tensor(float(a))
        a = a.reshape(()).float()
        self.corrects.append(a if a.device.type in self.by_reference else a.clone())
        self.total += 1

    # ---- taking --------------------------------------------------------------------
    def take(self, deferrable: bool):
        """Statistics of what was added since the last take: a device vector, or, when
        `deferrable` (CPU, no collective, a writer), a `stats.Pending` for the writer thread."""
        dev = self.device or torch.device("cpu")
        parts = (self.losses, self.corrects, self.total, self.counted, self.stash, dev)
        numel = self.stash_numel
        self._reset()
        # Windows left to the writer keep their logits until it runs (up to flush_secs):
        # at most stash_limit elements in all; past that, the training thread scores them.
        if deferrable and dev.type == "cpu":
            self._held = [(p, n) for p, n in self._held if not p.done]  # the writer's progress
            if sum(n for _, n in self._held) + numel <= self.stash_limit:
                pending = stats.Pending(lambda: self._stats(*parts))
                self._held.append((pending, numel))
                return pending
        return self._stats(*parts)

    def _stats(self, losses, corrects, total, counted, stash, dev) -> torch.Tensor:
        if stash:
            try:
                c, n, m = accuracy.score_batches(stash, self.ignore_index)
                corrects, total, counted = corrects + c, total + n, counted + m
            except Exception as exc:  # e.g. logits on an unexpected device: lose accuracy, keep loss
                self.warn("accuracy:" + type(exc).__name__, f"traindoc: could not score accuracy: {exc!r}")
                corrects, total, counted = [], 0, []
        try:
            return stats.summarize(losses, corrects, total, counted, dev)
        except Exception as exc:
            self.warn("window:" + type(exc).__name__, f"traindoc: dropped odd values from a window: {exc!r}")
            return stats.summarize([t for t in losses if t.device == dev], [], 0, [], dev)

    def fold_into_epoch(self, deferrable: bool) -> None:
        """Take what the window holds into the epoch (the window still reports it later)."""
        part = self.take(deferrable)
        self._carry.append(part)
        self.epoch_parts.append(part)

    def close(self, deferrable: bool):
        """The window's statistics (also kept for the epoch)."""
        part = self.take(deferrable)
        self.epoch_parts.append(part)
        if len(self.epoch_parts) >= 64:
            self._compact_epoch()
        part = stats.merge_later(self._carry + [part])
        self._carry = []
        return part

    def close_epoch(self):
        """The epoch's statistics; the next epoch starts empty."""
        part = stats.merge_later(self.epoch_parts)
        self.epoch_parts = []
        return part

    def _compact_epoch(self) -> None:
        """Merge the epoch's finished window parts into one, so that a script that never
        calls end_epoch() does not keep one part per window for the whole run."""
        ready = [p for p in self.epoch_parts if not isinstance(p, stats.Pending) or p.done]
        if len(ready) > 1:
            waiting = [p for p in self.epoch_parts if isinstance(p, stats.Pending) and not p.done]
            values = []
            for p in ready:
                try:
                    values.append(stats.resolve(p))
                except Exception as exc:  # a window the writer could not compute: the epoch loses it
                    self.warn("epoch:" + type(exc).__name__, f"traindoc: an epoch lost a window: {exc!r}")
            self.epoch_parts = ([stats.merge(values)] if values else []) + waiting
