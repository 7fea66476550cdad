"""Which ranks take part in a run's statistics, decided without a collective that could hang.

Under DDP a script may attach the collector on every rank (statistics are all-reduced)
or on some ranks only, as nanoGPT's `if master_process:` does (then no rank may issue a
collective: the others would never match it). Each attaching rank adds itself to a
counter in the process group's store (the same key-value store the ranks met through);
the first rank that needs to know reads the counter and stores the verdict with
compare-and-set, so every rank follows the same one.

Every rank attached is not enough for a collective at each window: when the ranks take
different numbers of steps (uneven shards, DDP's `Join`), a rank that has run out of data
never reaches the others' next window, and an all_reduce issued there would wait forever,
or meet one of the collectives `Join` shadows DDP with. So before each window's all_reduce
the ranks meet through the store: when all of them arrived, they all_reduce; when one has
closed its run, or does not arrive within WINDOW_WAIT_SECS (it is shadowing DDP inside
`Join`), every rank switches to rank-local statistics for the rest of the run, and rank 0
notes in meta.json from which step and why.
"""

from __future__ import annotations

import itertools
import time

import torch

from . import stats

ALL, LOCAL, SINGLE = "all-reduced", "rank-local", "single process"
_GO = "go"
_attach_seq = itertools.count()  # the n-th attach of this process meets the n-th of the others
#: How long a rank waits at a window for a rank that has neither arrived nor closed its run.
#: Ranks under DDP are at most a step apart, so only a rank that stopped stepping (one that
#: ran out of data inside `Join`) makes the others wait this long, once.
WINDOW_WAIT_SECS = 10.0


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


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Ranks:
    """This process's part in a run: its rank, and whether statistics are all-reduced."""

    def __init__(self):
        self.rank, self.world = rank_world()
        self.mode = SINGLE if self.world == 1 else None
        self.local_from: str | None = None  # why statistics became rank-local mid-run, if they did
        self._store = None
        self._windows = 0  # windows reduced so far: the n-th of every rank meet
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
                self.mode = _text(got)
            except Exception:
                self.mode = LOCAL
        return self.mode == ALL

    def reduce(self, vec, step: int):
        """All-reduce a window's statistics when every rank reached this window; otherwise
        (from now on) this rank's own statistics, with `local_from` saying why."""
        if not self.collective():
            return vec
        window = self._windows
        self._windows += 1
        try:
            why = self._meet(window)
        except Exception as exc:  # the store failed: no collective is safe any more
            why = f"the ranks could not meet through the store ({exc!r})"
        if why is None:
            return stats.all_reduce(stats.resolve(vec))
        self.mode = LOCAL
        self.local_from = f"statistics are rank {self.rank}'s own from step {step} on: {why}"
        return vec

    def _meet(self, window: int) -> str | None:
        """Wait, through the store, until every rank reached `window` (None: all_reduce now),
        or a rank closed its run or stayed away WINDOW_WAIT_SECS (the reason: go rank-local).
        The verdict is stored with compare-and-set, so every rank follows the same one."""
        base = f"{self._key}/window/{window}"
        arrived = self._store.add(base + "/arrived", 1)
        deadline = time.monotonic() + WINDOW_WAIT_SECS
        pause = 0.0002
        why = None
        while True:
            if arrived >= self.world:
                want = _GO
            elif self._store.check([base + "/verdict"]):
                want = _GO  # another rank decided first; compare_set below returns its verdict
            else:
                closed = self.closed_ranks()
                if closed:
                    why = f"rank(s) {closed} closed their run at an earlier step (uneven step counts)"
                elif time.monotonic() >= deadline:
                    why = (f"only {arrived} of {self.world} ranks reached this window within "
                           f"{WINDOW_WAIT_SECS:g} s (a rank stopped stepping: uneven inputs, DDP Join)")
                else:
                    time.sleep(pause)
                    pause = min(pause * 2, 0.02)
                    arrived = self._store.add(base + "/arrived", 0)
                    continue
                want = why
            got = _text(self._store.compare_set(base + "/verdict", "", want))
            return None if got == _GO else got

    def closed_ranks(self) -> list[int]:
        """Ranks that closed their run (checked only while waiting at a window)."""
        if not self._store.add(self._key + "/closed", 0):
            return []
        return [r for r in range(self.world) if r != self.rank and self._store.check([f"{self._key}/closed/{r}"])]

    def mark_closed(self) -> None:
        """Tell ranks still training that this one will reach no further window."""
        if self._store is None or self.mode == SINGLE:
            return
        try:
            self._store.set(f"{self._key}/closed/{self.rank}", b"1")
            self._store.add(self._key + "/closed", 1)
        except Exception:
            pass

    def gather_final(self, vec, wait_secs: float):
        """Merge the ranks' last partial windows through the store, never a collective.

        Every rank posts its vector; rank 0 waits at most `wait_secs` for the others and
        merges those that came. Returns (vector, ranks merged, ranks missing): on rank 0,
        the ranks whose part is in the vector and those whose part did not come in time;
        elsewhere just this rank. Used at close(), which a script may call on one rank only,
        or from a signal handler (`wait_secs` 0)."""
        if self.mode != ALL or self._store is None:
            return vec, [self.rank], []
        try:
            values = stats.resolve(vec).to("cpu", torch.float64)  # close(): a sync is fine here
            if self.rank != 0:
                self._store.set(f"{self._key}/final/{self.rank}", values.numpy().tobytes())
                return values, [self.rank], []
            parts, deadline = {0: values}, time.monotonic() + wait_secs
            missing = list(range(1, self.world))
            while True:
                for r in list(missing):
                    key = f"{self._key}/final/{r}"
                    if self._store.check([key]):
                        parts[r] = torch.frombuffer(bytearray(self._store.get(key)), dtype=torch.float64)
                        missing.remove(r)
                if not missing or time.monotonic() >= deadline:
                    break
                time.sleep(0.02)
            return stats.merge([parts[r] for r in sorted(parts)]), sorted(parts), missing
        except Exception:
            return vec, [self.rank], []
