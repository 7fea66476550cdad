"""The run catalog at scale: 10,000 generated runs of 3,000 points each.

Prints, for one root:
  - first indexing (read and diagnose every run, judge siblings together)   target <= 60 s
  - reopening with nothing changed (list the root, compare signatures, query the first page)
                                                                             target <= 1 s
  - reopening after 10 runs grew as live runs do (records appended, meta.json rewritten; those
    10 read again, siblings re-judged)                                       target <= 2 s
  - the runs page itself (Streamlit AppTest script run) with nothing changed
and, as the baseline measured in the same run, what the runs page did before the catalog:
read and diagnose every run on each open, timed on a sample of the runs and scaled.

With --also DIR (another traindoc installed in DIR, e.g. an older commit: pip install --no-deps
--target DIR), the first indexing is timed again for that install and for this checkout, each in
a fresh process on an empty cache, one after the other: a before/after from one run.

usage: python benchmarks/many_runs.py [--runs 10000] [--points 3000] [--workers N] [--keep DIR] [--also DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.also import seconds_in  # noqa: E402
from benchmarks.synth import grow_run, write_run  # noqa: E402
from traindoc.catalog import Catalog  # noqa: E402
from traindoc.discovery import load  # noqa: E402
from traindoc.rules import diagnose_run  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _page(cat: Catalog) -> int:
    rows, total = cat.query(limit=50)
    assert len(rows) == min(50, total)
    return total


FIRST_INDEX = ("import sys; from traindoc.catalog import Catalog; "
               "w = int(sys.argv[3]) if sys.argv[3] != '0' else None; "
               "print(Catalog(sys.argv[1], cache=sys.argv[2]).refresh(workers=w).seconds)")


def first_index_in(code: str, root: str, cache: str, workers: int | None) -> float:
    """Seconds of a first indexing by the traindoc imported from `code`, in a fresh process."""
    shutil.rmtree(cache, ignore_errors=True)
    return seconds_in(code, FIRST_INDEX, root, cache, str(workers or 0))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--points", type=int, default=3000)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--keep", help="write the runs here and keep them (default: a temporary folder)")
    ap.add_argument("--also", metavar="DIR", help="another traindoc installed in DIR: its first indexing too")
    args = ap.parse_args()
    base = args.keep or tempfile.mkdtemp(prefix="traindoc-many-")
    root, cache = os.path.join(base, "runs"), os.path.join(base, "cache")
    shutil.rmtree(cache, ignore_errors=True)
    t0 = time.perf_counter()
    for i in range(args.runs):
        path = os.path.join(root, f"run-{i:05d}")
        if not os.path.exists(os.path.join(path, "meta.json")) or args.keep:
            write_run(path, args.points, seed=i)  # (again where kept: earlier runs of this script grew some)
    print(f"{args.runs} runs x {args.points} points written in {time.perf_counter() - t0:.1f} s ({root})")

    cat = Catalog(root, cache=cache)
    first = cat.refresh(workers=args.workers)
    total = _page(cat)
    assert total == args.runs and first.read == args.runs, (total, first)

    t0 = time.perf_counter()
    again = Catalog(root, cache=cache).refresh()
    _page(cat)
    reopen = time.perf_counter() - t0
    assert again.read == 0

    grown = [os.path.join(root, f"run-{i:05d}") for i in range(0, args.runs, max(1, args.runs // 10))][:10]
    for path in grown:  # as live runs grow: records appended, meta.json rewritten
        grow_run(path)
    t0 = time.perf_counter()
    after = Catalog(root, cache=cache).refresh()
    _page(cat)
    grew = time.perf_counter() - t0
    assert after.read == len(grown), after

    os.environ["TRAINDOC_ROOT"], os.environ["TRAINDOC_CACHE"] = root, cache
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(os.path.join(ROOT, "app", "dashboard.py"), default_timeout=600)
    at.run()  # the app's first run in this process imports the pages
    at = AppTest.from_file(os.path.join(ROOT, "app", "dashboard.py"), default_timeout=600)
    t0 = time.perf_counter()
    at.run()
    page = time.perf_counter() - t0
    assert not at.exception, at.exception

    sample = [os.path.join(root, f"run-{i:05d}") for i in range(0, args.runs, max(1, args.runs // 200))]
    t0 = time.perf_counter()
    for path in sample:
        diagnose_run(load(path)[0])
    per_run = (time.perf_counter() - t0) / len(sample)
    before = per_run * args.runs

    print(f"\n| figure ({args.runs:,} runs x {args.points:,} points) | seconds | target | target / measured |")
    print("|---|---|---|---|")
    print(f"| first indexing ({first.read:,} runs read) | {first.seconds:.1f} | 60 | {60 / first.seconds:.2f} |")
    print(f"| reopen, nothing changed | {reopen:.2f} | 1 | {1 / reopen:.2f} |")
    print(f"| reopen after {len(grown)} runs grew | {grew:.2f} | 2 | {2 / grew:.2f} |")
    print(f"| runs page script run, nothing changed | {page:.2f} | - | - |")
    print(f"\nbaseline, the same run: reading and diagnosing every run on each open (before the catalog) "
          f"takes {per_run * 1000:.1f} ms a run on one core, {before:.0f} s for all; reopening with the catalog "
          f"is {before / reopen:.0f}x faster, and the first index {before / first.seconds:.1f}x faster "
          f"than one such open (worker processes: {args.workers or min(4, os.cpu_count() or 1)})")
    if args.also:
        other = first_index_in(os.path.abspath(args.also), root, os.path.join(base, "cache-also"), args.workers)
        this = first_index_in(ROOT, root, os.path.join(base, "cache-this"), args.workers)
        print(f"\nfirst indexing, each in a fresh process, one after the other: {args.also} {other:.1f} s, "
              f"this checkout {this:.1f} s ({args.also} / this = {other / this:.2f})")
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
