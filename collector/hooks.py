"""The optimizer step hooks: count steps, notice skipped ones, read hyperparameters, sample ratios.

Only public, removable hooks (`register_step_pre_hook`, `register_step_post_hook`). The
pre-hook is armed only before a sampled step, so an ordinary step costs one post-hook.
"""

from __future__ import annotations

import time

import torch

from traindoc import format as fmt

_HPARAMS = (fmt.LR_PREFIX, fmt.MOMENTUM_PREFIX, fmt.BETA1_PREFIX, fmt.BETA2_PREFIX)


def found_inf(optimizer, kwargs):
    """GradScaler's inf/NaN flag when it let a fused optimizer run the step itself (it passes
    the flag as an attribute or a keyword; for other optimizers it skips step() instead)."""
    flag = kwargs.get("found_inf") if kwargs else None
    return flag if flag is not None else getattr(optimizer, "found_inf", None)


class StepHooks:
    """Hooks on every optimizer; `on_step(index, optimizer, skipped)` runs after each step.

    `skipped` is True, False, or a device tensor: on the CPU the flag is read directly
    (no device to wait for); on a GPU reading it would wait for the step, so the caller
    gets the tensor and keeps it on the device."""

    def __init__(self, optimizers: list, ratios, on_step, on_ratios, warn):
        self.optimizers = optimizers
        self.ratios = ratios
        self._on_step, self._on_ratios, self._warn = on_step, on_ratios, warn
        self._handles = [opt.register_step_post_hook(self._make_post_hook(i)) for i, opt in enumerate(optimizers)]
        self._pre: dict[int, object] = {}
        for i in range(len(optimizers)):
            self._arm(i)

    def remove(self) -> None:
        for h in self._handles + list(self._pre.values()):
            h.remove()
        self._handles, self._pre = [], {}

    def _arm(self, index: int) -> None:
        """Register the snapshot hook if the next step of optimizer `index` is sampled, else drop it."""
        want = self.ratios is not None and self.ratios.sampled(index)
        handle = self._pre.get(index)
        if want and handle is None:
            self._pre[index] = self.optimizers[index].register_step_pre_hook(self._make_pre_hook(index))
        elif not want and handle is not None:
            handle.remove()  # from the post hook: the pre-hook dict is not being iterated now
            del self._pre[index]

    def _make_pre_hook(self, index: int):
        def pre_hook(optimizer, args, kwargs):
            try:
                self.ratios.before_step(index)
            except Exception as exc:
                self._warn("pre_hook:" + type(exc).__name__, f"traindoc: step hook failed: {exc!r}")
        return pre_hook

    def _make_post_hook(self, index: int):
        def post_hook(optimizer, args, kwargs):
            try:
                skipped = False
                flag = found_inf(optimizer, kwargs)
                if flag is not None:
                    skipped = bool(flag.item()) if flag.device.type == "cpu" else flag
                if skipped is True:  # the fused kernel left the weights alone
                    if self.ratios is not None:
                        self.ratios.skip(index)
                    return
                self._on_step(index, optimizer, skipped)
                if self.ratios is not None:
                    sampled = self.ratios.after_step(index)
                    if sampled is not None:
                        keys, vec = sampled
                        if isinstance(skipped, torch.Tensor):  # unknown until the GPU says: NaN = none
                            vec = torch.where(skipped > 0, torch.full_like(vec, float("nan")), vec)
                        self._on_ratios(keys, vec)
                    self._arm(index)
            except Exception as exc:
                self._warn("post_hook:" + type(exc).__name__, f"traindoc: step hook failed: {exc!r}")
        return post_hook


class HparamRecorder:
    """LR, momentum and betas of every group, each written only when it changes."""

    def __init__(self, put_value, log_every: int):
        self._put_value = put_value
        self.log_every = log_every
        self._last: dict[tuple, object] = {}

    def record(self, index: int, optimizer, step: int) -> None:
        prefix = "" if index == 0 else f"opt{index}/"
        last = self._last
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
                    elif step % self.log_every == 0:  # comparing on device would sync
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
