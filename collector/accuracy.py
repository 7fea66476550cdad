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
