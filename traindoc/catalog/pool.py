"""Reading many runs at once: in this process for a few, in worker processes for many (a
refresh of thousands of runs uses every core; spawned, never forked from a threaded server)."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os

from .summary import index_one

PARALLEL_FROM = 64  # with this many runs to read, read them in worker processes
CHUNK = 32  # runs per task sent to a worker


def _index_chunk(paths: list) -> list[dict]:
    return [index_one(p) for p in paths]


def read_all(paths: list[str], progress=None, workers: int | None = None,
             parallel_from: int | None = None) -> list[dict]:
    """A catalog row (`index_one`) per path, in order. `progress(done, total)` is told as rows come."""
    total = len(paths)
    if progress:
        progress(0, total)
    if not total:
        return []
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    out: list = [None] * total
    if total < (PARALLEL_FROM if parallel_from is None else parallel_from) or workers <= 1:
        for i, path in enumerate(paths):
            out[i] = index_one(path)
            if progress:
                progress(i + 1, total)
        return out
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {pool.submit(_index_chunk, paths[a:a + CHUNK]): a for a in range(0, total, CHUNK)}
        done = 0
        for fut in cf.as_completed(futures):
            rows = fut.result()
            out[futures[fut]:futures[fut] + len(rows)] = rows
            done += len(rows)
            if progress:
                progress(done, total)
    return out
