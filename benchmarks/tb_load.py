"""Load time of a 1,000,000-point TensorBoard logdir: traindoc vs EventAccumulator (all points kept).

Measured in one run: EventAccumulator(size_guidance={SCALARS: 0}).Reload(); traindoc's
reader without a cache (parse), with the cache (second open), and a native traindoc run
of the same points for reference. Target: traindoc's first open, with both CRC-32Cs of
every record checked, >= 5x faster than EventAccumulator; the cached open close to the
native run.
With --also DIR (another traindoc installed in DIR, e.g. an older commit), that install's first
open and this checkout's are timed again, each in a fresh process, taking turns twice.
usage: python benchmarks/tb_load.py [--points 1000000] [--also DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.also import seconds_in  # noqa: E402
from benchmarks.app_speed import write_tensorboard  # noqa: E402
from benchmarks.synth import write_run  # noqa: E402


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


OPEN = ("import sys, time; from traindoc.tb import TBRunReader; t0 = time.perf_counter(); "
        "r = TBRunReader(sys.argv[1], use_cache=False); r.poll(); r.series(); print(time.perf_counter() - t0)")


def open_in(code: str, logdir: str) -> float:
    """Seconds of a first open (no cache) by the traindoc imported from `code`, in a fresh process."""
    return seconds_in(code, OPEN, logdir)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--also", metavar="DIR", help="another traindoc installed in DIR: its first open too")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TRAINDOC_CACHE"] = os.path.join(tmp, "cache")
        from tensorboard.backend.event_processing import event_accumulator as ea

        from traindoc.reader import read_run
        from traindoc.tb import TBRunReader

        logdir = os.path.join(tmp, "tb")
        t_write, n = timed(lambda: write_tensorboard(logdir, args.points))
        write_run(os.path.join(tmp, "native"), args.points)

        def accumulate():
            acc = ea.EventAccumulator(logdir, size_guidance={ea.SCALARS: 0})
            acc.Reload()
            return sum(len(acc.Scalars(t)) for t in acc.Tags()["scalars"])

        def traindoc_open(use_cache):
            r = TBRunReader(logdir, use_cache=use_cache)
            r.poll()
            r.series()
            return r.records

        t_ea, n_ea = timed(accumulate)
        t_parse, n_parse = timed(lambda: traindoc_open(False))
        t_first, _ = timed(lambda: traindoc_open(True))  # parses and writes the cache
        t_cached, n_cached = timed(lambda: traindoc_open(True))
        t_native, _ = timed(lambda: read_run(os.path.join(tmp, "native")))
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        turns = [(open_in(os.path.abspath(args.also), logdir), open_in(here, logdir)) for _ in range(2)] \
            if args.also else []
    assert n_ea == n_parse == n_cached == n, (n_ea, n_parse, n_cached, n)
    print(f"points: {n} (event files written in {t_write:.1f} s, not timed)")
    print(f"EventAccumulator, all points kept: {t_ea:.2f} s")
    print(f"traindoc first open (parse, no cache): {t_parse:.2f} s   -> {t_ea / t_parse:.1f}x faster, CRCs checked (target >= 5x)")
    print(f"traindoc first open writing the cache: {t_first:.2f} s")
    print(f"traindoc second open (cache): {t_cached:.3f} s   -> {t_ea / t_cached:.0f}x faster")
    print(f"native traindoc run of the same points: {t_native:.3f} s   cached / native = {t_cached / t_native:.2f}")
    if turns:
        other, this = statistics.median(t[0] for t in turns), statistics.median(t[1] for t in turns)
        print(f"first open in a fresh process, taking turns: {args.also} {other:.2f} s, this checkout {this:.2f} s "
              f"({args.also} / this = {other / this:.2f}; each: "
              f"{', '.join(f'{a:.2f} / {b:.2f}' for a, b in turns)})")


if __name__ == "__main__":
    main()
