"""Window statistics kept on the training device.

A window's statistics are one small device tensor, so that windows can be merged
(step window + epoch window, rank + rank) with tensor ops and read back in one
asynchronous copy. Layout of that vector:
"""

from __future__ import annotations

import math

import torch

COUNT, SUM, SUMSQ, MIN, MAX, NONFINITE, CORRECT, TOTAL = range(8)
WIDTH = 8


def stat_dtype(device: torch.device) -> torch.dtype:
    """float64 keeps sum-of-squares variance exact enough; MPS has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


def empty(device: torch.device) -> torch.Tensor:
    """Statistics of no samples: zeros, with min=+inf and max=-inf."""
    v = torch.zeros(WIDTH, dtype=stat_dtype(device), device=device)
    v[MIN] = math.inf  # in-place fill of a device tensor from a Python float: no sync
    v[MAX] = -math.inf
    return v


def _stack(tensors: list, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """One stack for the usual window (one device, one dtype); converting each tensor
    first only when they differ (counts and fractions, bf16 and fp32, two devices)."""
    try:
        return torch.stack(tensors).to(dtype)
    except RuntimeError:
        return torch.stack([t.to(device=device, dtype=dtype) for t in tensors])


def summarize(losses: list, corrects: list, total: int, device_totals: list,
              device: torch.device) -> torch.Tensor:
    """Reduce per-batch loss tensors and correct counts to one statistics vector.

    No host-device sync: every value stays on `device` until the caller copies it.
    """
    dtype = stat_dtype(device)
    if losses:
        x = _stack(losses, device, dtype)
        n = x.numel()
        lo, hi = torch.aminmax(x)
        finite = torch.isfinite(x).sum()
        parts = [torch.full((), n, dtype=dtype, device=device), x.sum(), x.pow(2).sum(), lo, hi,
                 (n - finite).to(dtype)]
    else:
        e = empty(device)
        parts = [e[COUNT], e[SUM], e[SUMSQ], e[MIN], e[MAX], e[NONFINITE]]
    if corrects:
        correct = _stack(corrects, device, dtype).sum()
    else:
        correct = torch.zeros((), dtype=dtype, device=device)
    total_t = torch.full((), total, dtype=dtype, device=device)
    if device_totals:
        total_t = total_t + torch.stack([t.to(device) for t in device_totals]).sum().to(dtype)
    parts += [correct, total_t]
    return torch.stack(parts)


class Pending:
    """Statistics still to be computed, by the writer thread, the first time they are needed.

    Used for CPU training in one process: computing a window (a stack, a cat, an argmax and
    a dozen reductions) then costs the training thread nothing, because torch releases the
    GIL inside each op and the writer runs on another core. The writer calls `value()`
    under its flush lock, so it runs once, never on two threads at a time."""

    __slots__ = ("_compute", "_value")

    def __init__(self, compute):
        self._compute, self._value = compute, None

    @property
    def done(self) -> bool:
        return self._compute is None

    def value(self) -> torch.Tensor:
        compute = self._compute
        if compute is not None:
            try:
                self._value = compute()
            finally:
                self._compute = None  # done, even if it failed: a failure is not retried
        if self._value is None:
            raise RuntimeError("traindoc: these window statistics could not be computed")
        return self._value


def resolve(v) -> torch.Tensor:
    return v.value() if isinstance(v, Pending) else v


def merge_later(parts: list):
    """`merge`, postponed to the writer thread when any part is still pending."""
    if len(parts) == 1 or not any(isinstance(p, Pending) for p in parts):
        return merge(parts)
    return Pending(lambda: merge([resolve(p) for p in parts]))


def merge(parts: list) -> torch.Tensor:
    """Statistics of the union of several windows (one stack, four reductions)."""
    if len(parts) == 1:
        return parts[0]
    m = torch.stack(parts)
    return torch.cat([m[:, COUNT:MIN].sum(0), m[:, MIN].min().reshape(1), m[:, MAX].max().reshape(1),
                      m[:, NONFINITE:].sum(0)])


def all_reduce(v: torch.Tensor) -> torch.Tensor:
    """Merge the statistics of every rank: sums are summed, min and max reduced."""
    import torch.distributed as dist

    sums = torch.cat([v[COUNT:MIN], v[NONFINITE:]]).contiguous()
    extremes = torch.stack([-v[MIN], v[MAX]]).contiguous()
    dist.all_reduce(sums, op=dist.ReduceOp.SUM)
    dist.all_reduce(extremes, op=dist.ReduceOp.MAX)
    return torch.cat([sums[:3], -extremes[:1], extremes[1:], sums[3:]])


def expand(values: list, loss_prefix: str, acc_key: str) -> list:
    """Turn a read-back statistics vector into (key, value) records."""
    n = values[COUNT]
    out = []
    if n > 0:
        mean = values[SUM] / n
        # Population variance (ddof=0); count is recorded too, so ddof=1 is derivable.
        var = values[SUMSQ] / n - mean * mean
        var = max(var, 0.0) if math.isfinite(var) else var
        out += [
            (f"{loss_prefix}/mean", mean), (f"{loss_prefix}/var", var),
            (f"{loss_prefix}/min", values[MIN]), (f"{loss_prefix}/max", values[MAX]),
            (f"{loss_prefix}/count", n), (f"{loss_prefix}/nonfinite", values[NONFINITE]),
        ]
    if values[TOTAL] > 0:
        out.append((acc_key, values[CORRECT] / values[TOTAL]))
    return out
