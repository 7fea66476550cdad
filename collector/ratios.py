"""Per-tensor update ratios ||W_after - W_before|| / ||W_before||, sampled every K steps.

A snapshot of the parameters is taken in the optimizer's pre-step hook only on sampled
steps and dropped in the post-step hook, so unsampled steps cost one integer test.
Because the ratio is measured on the weights themselves, it is the update the optimizer
really made (SGD, momentum, Adam, weight decay alike).

Memory stays bounded: a model of up to `EXACT_ELEMENTS` parameters is copied whole and
its ratios are exact. In a larger one, each big tensor is sampled with a prime stride
from a random offset (about 1 element in 17, 6% of the parameters), and the ratio is
that of the sampled elements, an unbiased estimate for the whole tensor. The difference
is taken in place in the snapshot, so no second copy is ever made.
"""

from __future__ import annotations

import math
import random

import torch

from traindoc import format as fmt

#: Models up to this many parameter elements (16 MB of fp32) are snapshotted whole.
EXACT_ELEMENTS = 1 << 22
#: Tensors up to this size are snapshotted whole even in a big model (biases, norms).
SMALL_TENSOR = 1 << 14
#: Smallest sampling stride: 1/17 of a large tensor, i.e. under 6% of the parameters.
MIN_STRIDE = 17


def _is_prime(n: int) -> bool:
    return n > 1 and all(n % d for d in range(2, int(math.isqrt(n)) + 1))


def stride_for(shape: torch.Size) -> int:
    """A prime stride >= MIN_STRIDE that does not divide the last dimension, so the sampled
    elements visit every column instead of one."""
    last = shape[-1] if len(shape) else 1
    s = MIN_STRIDE
    while not _is_prime(s) or last % s == 0:
        s += 1
    return s


class UpdateRatios:
    """Sampler of update ratios for a list of optimizers."""

    def __init__(self, optimizers: list, names: dict[int, str], every: int, seed: int = 0):
        self.every = every
        self.optimizers = optimizers
        self._names = names
        self._steps = [0] * len(optimizers)
        self._snap: dict[int, tuple] = {}
        self._cache: dict[int, tuple] = {}
        self._rng = random.Random(seed)

    def _params(self, index: int):
        groups = self.optimizers[index].param_groups
        sig = tuple(len(g["params"]) for g in groups)  # groups can be added mid-run
        cached = self._cache.get(index)
        if cached is not None and cached[0] == sig:
            return cached[1:]
        params, keys = [], []
        for g, group in enumerate(groups):
            for k, p in enumerate(group["params"]):
                if not p.is_floating_point():
                    continue
                params.append(p)
                keys.append(fmt.RATIO_PREFIX + (self._names.get(id(p)) or f"opt{index}.pg{g}.{k}"))
        exact = sum(p.numel() for p in params) <= EXACT_ELEMENTS
        strides = [1 if exact or p.numel() <= SMALL_TENSOR or not p.is_contiguous() else stride_for(p.shape)
                   for p in params]
        self._cache[index] = (sig, params, keys, strides)
        return params, keys, strides

    def sampled(self, index: int) -> bool:
        """Step 1 is always sampled (the first update says most about init/LR), then every K."""
        n = self._steps[index] + 1
        return n == 1 or n % self.every == 0

    def before_step(self, index: int) -> None:
        """Pre-step hook: snapshot the weights (or a strided sample of them) if this step is sampled."""
        if not self.sampled(index):
            return
        params, keys, strides = self._params(index)
        if not params:
            return
        views, weights = [], []
        for p, s in zip(params, strides):
            if s == 1:
                views.append(p.detach())
                weights.append(1.0)
            else:
                offset = self._rng.randrange(s)
                views.append(p.detach().view(-1)[offset::s])
                weights.append(p.numel() / len(range(offset, p.numel(), s)))
        with torch.no_grad():
            snaps = torch._foreach_mul(views, 1.0)  # copies of only the sampled elements
        self._snap[index] = (views, keys, snaps, weights)

    def skip(self, index: int) -> None:
        """The step did not happen (GradScaler found inf/NaN): drop the snapshot; the next
        step is sampled instead."""
        self._snap.pop(index, None)

    def after_step(self, index: int):
        """Post-step hook: return (keys, device vector of ratios) on sampled steps, else None."""
        self._steps[index] += 1
        snap = self._snap.pop(index, None)
        if snap is None:
            return None
        views, keys, snaps, weights = snap
        with torch.no_grad():
            wn = torch._foreach_norm(snaps)
            torch._foreach_sub_(snaps, views)  # the difference, in place: no second copy
            dn = torch._foreach_norm(snaps)
            del snaps
            dev = dn[0].device
            dn = torch.stack([d.to(dev, torch.float32) for d in dn])
            wn = torch.stack([w.to(dev, torch.float32) for w in wn])
            if all(w == 1.0 for w in weights):
                glob = (dn * dn).sum().sqrt() / (wn * wn).sum().sqrt()
            else:  # each tensor's sampled sums scaled up to its size
                scale = torch.tensor(weights, dtype=torch.float32).to(dev, non_blocking=True)
                glob = (dn * dn * scale).sum().sqrt() / (wn * wn * scale).sum().sqrt()
            # A weight that is exactly zero (a fresh bias) has no defined ratio: inf is recorded.
            vec = torch.cat([dn / wn, glob.reshape(1)])
        return keys + [fmt.RATIO_GLOBAL], vec
