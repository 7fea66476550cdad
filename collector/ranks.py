"""Which ranks take part in a run's statistics, decided without a collective that could hang.

Under DDP a script may attach the collector on every rank (statistics are all-reduced)
or on some ranks only, as nanoGPT's `if master_process:` does (then no rank may issue a
collective: the others would never match it). Each attaching rank adds itself to a
counter in the process group's store (the same key-value store the ranks met through);
the first rank that needs to know reads the counter and stores the verdict with
compare-and-set, so every rank follows the same one.
"""

from __future__ import annotations

import itertools
import time

import torch

from . import stats

ALL, LOCAL, SINGLE = "all-reduced", "rank-local", "single process"
_attach_seq = itertools.count()  # the n-th attach of this process meets the n-th of the others


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the default process group, or (0, 1)."""
    try:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except Exception:
        pass
    return 0, 1


def _default_store():
    from torch.distributed import distributed_c10d
    return distributed_c10d._get_default_store()


class Ranks:
    """This process's part in a run: its rank, and whether statistics are all-reduced."""

    def __init__(self):
        self.rank, self.world = rank_world()
        self.mode = SINGLE if self.world == 1 else None
        self._store = None
        if self.world > 1:
            try:
                self._store = _default_store()
                self._key = f"traindoc/attach/{next(_attach_seq)}"
                self._store.add(self._key + "/count", 1)
            except Exception:  # no store to agree through: never risk a collective
                self.mode = LOCAL

    @property
    def writes(self) -> bool:
        """Rank 0 writes the run folder; other ranks only contribute statistics."""
        return self.rank == 0

    def collective(self) -> bool:
        """True when every rank attached, so window statistics are all-reduced. Decided once,
        on first use (every rank has attached by then: it is after the first steps), and the
        same on every rank."""
        if self.mode is None:
            try:
                attached = self._store.add(self._key + "/count", 0)
                want = ALL if attached >= self.world else LOCAL
                got = self._store.compare_set(self._key + "/mode", "", want)
                self.mode = got.decode() if isinstance(got, bytes) else str(got)
            except Exception:
                self.mode = LOCAL
        return self.mode == ALL

    def gather_final(self, vec, wait_secs: float):
        """Merge the ranks' last partial windows through the store, never a collective.

        Every rank posts its vector; rank 0 waits at most `wait_secs` for the others and
        merges what came. Returns (vector, number of ranks merged). Used at close(), which
        a script may call on one rank only, or from a signal handler (`wait_secs` 0)."""
        if self.mode != ALL or self._store is None:
            return vec, 1
        try:
            values = stats.resolve(vec).to("cpu", torch.float64)  # close(): a sync is fine here
            if self.rank != 0:
                self._store.set(f"{self._key}/final/{self.rank}", values.numpy().tobytes())
                return values, 1
            parts, deadline = [values], time.monotonic() + wait_secs
            missing = list(range(1, self.world))
            while missing:
                keys = [f"{self._key}/final/{r}" for r in missing]
                if self._store.check(keys):
                    parts += [torch.frombuffer(bytearray(self._store.get(k)), dtype=torch.float64) for k in keys]
                    missing = []
                elif time.monotonic() >= deadline:
                    break
                else:
                    time.sleep(0.02)
            return stats.merge(parts), len(parts)
        except Exception:
            return vec, 1
