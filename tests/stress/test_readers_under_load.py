"""One writer at 1,000 records/s, three readers polling every 100 ms, for 30 s
(TRAINDOC_STRESS_SECS to change): no reader error, no partial or duplicate record,
and the last read equals what was written."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np

from traindoc.reader import RunReader

HERE = os.path.dirname(os.path.abspath(__file__))
SECS = float(os.environ.get("TRAINDOC_STRESS_SECS", "30"))


def test_three_readers_one_writer(tmp_path):
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "writer_1k.py"), str(tmp_path), str(SECS)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "started"
    path = tmp_path / "load"
    while not (path / "meta.json").exists():
        time.sleep(0.01)
    errors, polls, done = [], [0, 0, 0], threading.Event()
    finals = [None, None, None]

    def reader(k):
        r = RunReader(str(path))
        seen = 0
        while True:
            last_round = done.is_set()
            try:
                r.poll()
                x = r.series().get("custom/x")
                steps = x.index.to_numpy()
                if not (np.array_equal(steps, np.arange(len(steps))) and np.array_equal(x.to_numpy(), steps)):
                    errors.append(f"reader {k}: not the exact prefix 0..{len(steps) - 1}")
                if len(steps) < seen:
                    errors.append(f"reader {k}: went back from {seen} to {len(steps)}")
                seen = len(steps)
                polls[k] += 1
            except Exception as exc:  # any reader error fails the test
                errors.append(f"reader {k}: {exc!r}")
            if last_round:
                finals[k] = seen
                return
            time.sleep(0.1)
    threads = [threading.Thread(target=reader, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    written = int(proc.stdout.readline())
    proc.wait(60)
    done.set()
    for t in threads:
        t.join(60)
    print(f"{written} records in {SECS:.0f} s, polls per reader: {polls}")
    assert errors == []
    assert written >= SECS * 1000 * 0.99
    assert finals == [written] * 3
    assert min(polls) >= SECS * 5  # they really polled all along (every 100 ms, slowed by the load)
