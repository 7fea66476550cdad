"""A root with 500 runs: the runs page lists every one, cold and warm.

The times are printed, never asserted: these machines are shared and noisy (the cold
open measured 8.8 s on an idle machine and 24.2 s on a busy one).
"""

from __future__ import annotations

import os
import time

from streamlit.testing.v1 import AppTest

from benchmarks.synth import write_run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_runs_page_with_500_runs(tmp_path, monkeypatch):
    for i in range(500):
        write_run(str(tmp_path / f"run-{i:03d}"), 3000, seed=i)
    monkeypatch.setenv("TRAINDOC_ROOT", str(tmp_path))
    times = []
    for _ in range(2):
        at = AppTest.from_file(os.path.join(ROOT, "app", "main.py"), default_timeout=120)
        t0 = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - t0)
        assert not at.exception
        assert len(at.dataframe[0].value) == 500
    cold, warm = times
    print(f"500 runs: cold {cold:.2f} s, warm {warm:.2f} s")
