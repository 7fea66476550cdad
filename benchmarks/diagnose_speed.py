"""Time to diagnose a run of 1,000,000 points, beyond the time to load it.

Target: diagnosis adds at most 0.5 s to loading. Both are measured here, median of 5.
usage: python benchmarks/diagnose_speed.py [--points 1000000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.synth import write_run  # noqa: E402
from traindoc.reader import read_run  # noqa: E402
from traindoc.rules import run_rules  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "big")
        n = write_run(path, args.points)
        loads, rules = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            run = read_run(path)
            t1 = time.perf_counter()
            findings = run_rules(run)
            t2 = time.perf_counter()
            loads.append(t1 - t0)
            rules.append(t2 - t1)
    load, diag = statistics.median(loads), statistics.median(rules)
    print(f"points: {n}  series: {len(run.keys)}  findings: {sorted({f.rule for f in findings})}")
    print(f"load: {load:.3f} s   diagnose beyond load: {diag:.3f} s   (target <= 0.5 s)")
    print(f"diagnose / load = {diag / load:.2f}")


if __name__ == "__main__":
    main()
