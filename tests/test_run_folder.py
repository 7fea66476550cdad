"""The run folder across processes: live reads, SIGKILL, torn records, round trips."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from traindoc import format as fmt
from traindoc.reader import RunFormatError, RunReader, read_run

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "train_script.py")


def _spawn(root, name, steps, flush=1.0, pause=0.0):
    return subprocess.Popen([sys.executable, SCRIPT, root, name, str(steps), str(flush), str(pause)],
                            stdout=subprocess.PIPE, text=True)


def test_reader_never_imports_torch():
    code = ("import sys; import traindoc.reader, traindoc.format; "
            "assert 'torch' not in sys.modules, 'reader pulled in torch'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(HERE))


def test_read_while_another_process_writes(root):
    proc = _spawn(root, "live", steps=400, flush=0.1, pause=0.005)
    assert proc.stdout.readline().strip() == "started"
    path = os.path.join(root, "live")
    reader = RunReader(path)
    seen_steps = []
    sizes = set()
    while proc.poll() is None:
        reader.poll()
        steps = reader.series().get("train/loss/mean").index.tolist()
        assert steps == sorted(set(steps))  # no duplicate or out-of-order record, ever
        assert steps[:len(seen_steps)] == seen_steps  # what was read stays read
        seen_steps = steps
        sizes.add(len(steps))
        time.sleep(0.05)
    reader.poll()
    final = reader.series()
    assert proc.returncode == 0
    assert len([n for n in sizes if 0 < n < 80]) >= 5  # we really saw it grow
    assert final.get("train/loss/mean").index.tolist() == list(range(5, 401, 5))
    assert final.meta["status"] == "finished"
    # incremental reads equal one full read
    full = read_run(path)
    assert full.get("train/loss/var").equals(final.get("train/loss/var"))
    assert reader.corrupt_records == 0


def test_sigkill_loses_at_most_the_flush_interval(root):
    flush = 0.3
    proc = _spawn(root, "killed", steps=100000, flush=flush, pause=0.002)
    assert proc.stdout.readline().strip() == "started"
    windows = []
    t_end = time.time() + 2.0
    while time.time() < t_end:
        line = proc.stdout.readline().split()
        if line and line[0] == "window":
            windows.append((int(line[1]), float(line[2])))
    t_kill = time.time()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    s = read_run(os.path.join(root, "killed"))
    got = set(s.get("train/loss/mean").index)
    must_have = [step for step, wall in windows if wall < t_kill - 2 * flush]
    assert must_have, "the test did not run long enough"
    assert set(must_have) <= got
    assert s.meta["status"] == "running"  # nobody marked it: the app calls it stale


def test_torn_last_record_is_ignored_then_completed(root):
    proc = _spawn(root, "torn", steps=50, flush=0.1)
    proc.wait()
    path = os.path.join(root, "torn")
    seg = os.path.join(path, fmt.segment_name(0))
    reader = RunReader(path)
    n0 = reader.poll()
    rec = fmt.pack_record(999, time.time(), 1.5, 0)
    with open(seg, "ab") as f:
        f.write(rec[:13])  # a writer died half-way through a record
    assert reader.poll() == 0
    with open(seg, "ab") as f:
        f.write(rec[13:])
    assert reader.poll() == 1
    assert reader.corrupt_records == 0 and n0 > 0


def test_corrupt_record_skipped_and_counted(root):
    proc = _spawn(root, "bitrot", steps=50, flush=0.1)
    proc.wait()
    path = os.path.join(root, "bitrot")
    seg = os.path.join(path, fmt.segment_name(0))
    clean = read_run(path)
    with open(seg, "r+b") as f:
        f.seek(fmt.HEADER_SIZE + 3 * fmt.RECORD_SIZE + 17)
        f.write(b"\xff\xfe")
    r = RunReader(path)
    r.poll()
    assert r.corrupt_records == 1
    assert len(r.frame) == sum(len(clean.get(k)) for k in clean.keys) - 1


def test_round_trip_values_exact(root):
    import torch
    from traindoc import collector

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = collector.attach(model, opt, root=root, name="rt")
    vals = {f"v{i}": v for i, v in enumerate([0.1, -1e300, 5e-324, float("nan"), float("-inf"), 123456789.125])}
    for step in range(3):
        run.log(vals, step=step)
    run.close()
    s = read_run(run.path)
    for i, v in enumerate(vals.values()):
        got = s.get(f"custom/v{i}").to_numpy()
        assert len(got) == 3
        np.testing.assert_array_equal(got, np.full(3, v))


def test_reader_errors_are_clear(tmp_path):
    with pytest.raises(RunFormatError, match="not a folder"):
        RunReader(str(tmp_path / "missing"))
    with pytest.raises(RunFormatError, match="not a traindoc run"):
        RunReader(str(tmp_path))
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / fmt.META_FILE).write_text('{"schema_version": 99}')
    with pytest.raises(RunFormatError, match="upgrade traindoc"):
        RunReader(str(tmp_path / "new")).poll()
