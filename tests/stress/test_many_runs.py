"""A root with 500 runs: the runs page lists every one, cold (the run catalog indexes them)
and warm (nothing changed: nothing read).

The times are printed, never asserted: these machines are shared and noisy.
`benchmarks/many_runs.py` measures 10,000 runs against its targets.
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
        at = AppTest.from_file(os.path.join(ROOT, "app", "dashboard.py"), default_timeout=120)
        t0 = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - t0)
        assert not at.exception
        assert len(at.dataframe[0].value) == 50  # one page
        assert "500 runs" in at.number_input(key="runs_page").label
    from traindoc.catalog import Catalog

    rows, total = Catalog(str(tmp_path)).query(limit=1000)
    assert total == 500 and sorted(r["name"] for r in rows) == [f"run-{i:03d}" for i in range(500)]
    assert all(r["error"] is None and r["status"] == "finished" and r["steps"] == rows[0]["steps"] > 0
               and r["diagnosed"] for r in rows)
    cold, warm = times
    print(f"500 runs: cold {cold:.2f} s, warm {warm:.2f} s")
