"""Per-tensor update ratios ||W_after - W_before|| / ||W_before||, sampled every K steps.

A snapshot of the parameters is taken in the optimizer's pre-step hook only on
sampled steps and dropped in the post-step hook, so unsampled steps cost one
integer test. Because the ratio is measured on the weights themselves, it is the
update the optimizer really made (SGD, momentum, Adam, weight decay alike).
"""

from __future__ import annotations

import torch

from traindoc import format as fmt


class UpdateRatios:
    """Sampler of update ratios for a list of optimizers."""

    def __init__(self, optimizers: list, names: dict[int, str], every: int):
        self.every = every
        self.optimizers = optimizers
        self._names = names
        self._steps = [0] * len(optimizers)
        self._snap: dict[int, tuple] = {}
        self._cache: dict[int, tuple] = {}

    def _params(self, index: int) -> tuple[list, list[str]]:
        groups = self.optimizers[index].param_groups
        sig = tuple(len(g["params"]) for g in groups)  # groups can be added mid-run
        cached = self._cache.get(index)
        if cached is not None and cached[0] == sig:
            return cached[1], cached[2]
        params, keys = [], []
        for g, group in enumerate(self.optimizers[index].param_groups):
            for k, p in enumerate(group["params"]):
                if not p.is_floating_point():
                    continue
                params.append(p)
                name = self._names.get(id(p)) or f"opt{index}.pg{g}.{k}"
                keys.append(fmt.RATIO_PREFIX + name)
        self._cache[index] = (sig, params, keys)
        return params, keys

    def sampled(self, index: int) -> bool:
        """Step 1 is always sampled (the first update says most about init/LR), then every K."""
        n = self._steps[index] + 1
        return n == 1 or n % self.every == 0

    def before_step(self, index: int) -> None:
        """Pre-step hook: snapshot the weights if this step is sampled."""
        if not self.sampled(index):
            return
        params, keys = self._params(index)
        if params:
            with torch.no_grad():
                self._snap[index] = (params, keys, torch._foreach_mul(params, 1.0))

    def after_step(self, index: int):
        """Post-step hook: return (keys, device vector of ratios) on sampled steps, else None."""
        self._steps[index] += 1
        snap = self._snap.pop(index, None)
        if snap is None:
            return None
        params, keys, before = snap
        with torch.no_grad():
            diff = torch._foreach_sub(params, before)
            dn = torch._foreach_norm(diff)
            wn = torch._foreach_norm(before)
            dev = dn[0].device
            dn = torch.stack([d.to(dev, torch.float32) for d in dn])
            wn = torch.stack([w.to(dev, torch.float32) for w in wn])
            glob = (dn * dn).sum().sqrt() / (wn * wn).sum().sqrt()
            # A weight that is exactly zero (a fresh bias) has no defined ratio: inf is recorded.
            vec = torch.cat([dn / wn, glob.reshape(1)])
        return keys + [fmt.RATIO_GLOBAL], vec
