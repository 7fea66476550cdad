"""Scoring a batch's outputs against its targets, on the device, without reading anything back."""

from __future__ import annotations

import torch

#: What `F.cross_entropy` ignores by default, and what Hugging Face pads labels with.
DEFAULT_IGNORE_INDEX = -100


def classes_of(output: torch.Tensor, target: torch.Tensor) -> int | None:
    """The class count the outputs imply (their last dimension), or None for one logit per sample."""
    if output.dim() == target.dim() + 1 and not target.is_floating_point():
        return int(output.shape[-1]) if output.shape[-1] > 1 else None
    if target.is_floating_point() and target.shape == output.shape and output.shape[-1] > 1:
        return int(output.shape[-1])
    return None


def count_correct(output: torch.Tensor, target: torch.Tensor, ignore_index: int | None):
    """(correct count, total as an int, counted total as a device tensor or None) for one batch.

    Class-index targets never count where they are negative (no class is) or equal
    `ignore_index`, even when that index is a real class id such as a pad token 0: the
    mask applies to the correct count as well as to the total. argmax carries no graph."""
    if output.dim() == target.dim() + 1 and not target.is_floating_point():
        pred = output.argmax(-1)  # the common case: class logits and class indices
        valid = target >= 0
        if ignore_index is not None and ignore_index >= 0:
            valid = valid & target.ne(ignore_index)
        return (pred.eq(target) & valid).sum(), 0, valid.sum()
    if target.is_floating_point() and target.shape == output.shape and output.shape[-1] > 1:
        return output.argmax(-1).eq(target.argmax(-1)).sum(), target.shape[:-1].numel(), None  # soft labels
    pred = (output.reshape(target.shape) > 0).to(target.dtype)  # one logit per sample: binary
    return pred.eq(target).sum(), target.numel(), None


def score_batches(batches: list, ignore_index: int | None):
    """Correct counts of several (output, target) batches: one cat, one argmax and one
    compare for the usual window of same-shaped batches, batch by batch otherwise."""
    if len(batches) > 1:
        try:
            batches = [(torch.cat([o for o, _ in batches]), torch.cat([t for _, t in batches]))]
        except RuntimeError:  # mixed class counts, devices or dtypes
            pass
    corrects, total, counted = [], 0, []
    for out, tgt in batches:
        c, n, m = count_correct(out, tgt, ignore_index)
        corrects.append(c)
        total += n
        if m is not None:
            counted.append(m)
    return corrects, total, counted


class LabelPrior:
    """The targets of the first window, kept until it closes: the entropy of their class
    frequencies is the loss of a model that predicts only the class prior, a level a stuck
    run sits at. Counted once, so it costs nothing after the first window."""

    def __init__(self, limit: int = 1 << 24):
        self.targets: list = []
        self.numel = 0
        self.limit = limit  # target elements kept at most (128 MB of int64 would be absurd)

    def add(self, target: torch.Tensor) -> None:
        if self.numel < self.limit:
            t = target.detach().reshape(-1)
            self.targets.append(t if t.device.type == "cpu" else t.clone())
            self.numel += t.numel()

    def entropy(self, classes: int | None, ignore_index: int | None) -> torch.Tensor | None:
        """Entropy (nats) of the class frequencies seen, as a 1-element device tensor.

        A scatter-add into classes + 1 bins (the last one takes ignored targets), never
        boolean indexing or bincount, which size their output on the host: no sync."""
        if not self.targets or not classes:
            return None
        t = torch.cat(self.targets).long()
        keep = t >= 0
        if ignore_index is not None and ignore_index >= 0:
            keep = keep & t.ne(ignore_index)
        t = torch.where(keep, t.clamp(max=classes), torch.full_like(t, classes))
        counts = torch.zeros(classes + 1, dtype=torch.float64, device=t.device)
        counts.scatter_add_(0, t, torch.ones_like(t, dtype=torch.float64))
        p = counts[:classes] / counts[:classes].sum().clamp(min=1)
        return -(p * torch.log(p.clamp(min=1e-300))).sum().reshape(1)
