"""Property-based fuzzing of the run reader and the TensorBoard reader.

Whatever is done to the files (cut short, bytes flipped, garbage inserted, text files
mangled), reading gives either valid data or one RunFormatError: never another
exception, never a hang; 100 MB of garbage is read in bounded memory. Every value a
reader returns is compared with what was written: a damaged value is reported (counted
as corrupt), never returned as data.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from traindoc import format as fmt
from traindoc.reader import RunFormatError, RunReader

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE = os.path.join(ROOT, "sample_runs", "early-decay-mlp-sgd")

mutation = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), min_size=1, max_size=20)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("replace"), st.binary(max_size=256)),
)


def mutate(data: bytes, m) -> bytes:
    b = bytearray(data)
    if m[0] == "truncate":
        return bytes(b[:int(m[1] * len(b))])
    if m[0] == "flip":
        for pos, x in m[1]:
            if b:
                b[min(int(pos * len(b)), len(b) - 1)] ^= x
        return bytes(b)
    if m[0] == "insert":
        at = int(m[1] * len(b))
        return bytes(b[:at]) + m[2] + bytes(b[at:])
    return m[1]


def _written_run(path):
    """A version-2 run written by the collector: losses, accuracy, LR, ratios and custom values."""
    import torch

    from traindoc import collector

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 20, 0.5)
    run = collector.attach(model, opt, root=str(path.parent), name=path.name, log_every=5, ratio_every=10)
    x, y = torch.randn(512, 6), torch.randint(0, 3, (512,))
    for i in range(60):
        out = model(x[i * 8:(i + 1) * 8])
        loss = torch.nn.functional.cross_entropy(out, y[i * 8:(i + 1) * 8])
        opt.zero_grad(); loss.backward(); opt.step(); sched.step()
        run.log_train(loss, output=out, target=y[i * 8:(i + 1) * 8])
        run.log({"probe": i * 1.5 + 0.25})
    run.close()


def _rows(reader) -> set:
    f = reader.frame
    return set(zip(f["key"].astype(str), f["step"].tolist(), f["wall"].tolist(), f["value"].tolist()))


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    path = tmp_path_factory.mktemp("clean") / "run"
    _written_run(path)
    r = RunReader(str(path))
    r.poll()
    return path, _rows(r)


def check_run(path, written: set | None = None):
    try:
        r = RunReader(path)
        r.poll()
        s = r.series()
    except RunFormatError:
        return
    frame = r.frame
    assert frame["key"].isna().sum() == 0  # every record has a known name
    assert frame["step"].dtype == np.int64
    for k in s.keys:
        s.get(k)
    if written is not None:
        extra = _rows(r) - written
        assert not extra, sorted(extra)[:3]  # nothing returned that was not written as such
    return r


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.sampled_from([fmt.segment_name(0), fmt.KEYS_FILE, fmt.META_FILE]), m=mutation)
def test_run_reader_returns_only_what_was_written(tmp_path_factory, clean, target, m):
    src, written = clean
    path = tmp_path_factory.mktemp("run")
    shutil.rmtree(path)
    shutil.copytree(src, path)
    f = path / target
    f.write_bytes(mutate(f.read_bytes(), m))
    r = check_run(str(path), written)
    if r is not None and m[0] in ("flip", "insert") and target == fmt.segment_name(0) and len(r.frame) < len(written):
        assert r.problems  # what is missing was damaged (or its header names another run), and said so


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.sampled_from([fmt.segment_name(0), fmt.KEYS_FILE, fmt.META_FILE]), m=mutation)
def test_version_one_run_reader_survives_any_damage(tmp_path_factory, target, m):
    """Old runs (parity checks, which two equal flips defeat) are still read without a crash."""
    path = tmp_path_factory.mktemp("run")
    shutil.rmtree(path)
    shutil.copytree(SAMPLE, path)
    f = path / target
    f.write_bytes(mutate(f.read_bytes(), m))
    check_run(str(path))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=mutation)
def test_tensorboard_reader_survives_any_damage(tmp_path_factory, m):
    from torch.utils.tensorboard import SummaryWriter

    from traindoc.tb import TBRunReader

    path = tmp_path_factory.mktemp("tb")
    w = SummaryWriter(str(path))
    for i in range(50):
        w.add_scalar("train/loss", 1.0 / (i + 1), i)
        w.add_scalar("eval/accuracy", i / 50, i)
    w.close()
    (name,) = [f for f in os.listdir(path) if ".tfevents." in f]
    f = path / name
    f.write_bytes(mutate(f.read_bytes(), m))
    try:
        r = TBRunReader(str(path), use_cache=False)
        r.poll()
        s = r.series()
    except RunFormatError:
        return
    for k in s.keys:
        assert len(s.get(k)) <= 50
    assert all(isinstance(p, str) and "\n" not in p for p in r.problems)
    # every value returned is one that was written, at its step (float32, as the event stores it)
    for key, fn in (("train/loss", lambda i: 1.0 / (i + 1)), ("val/acc", lambda i: i / 50)):
        got = s.get(key)
        for step, value in got.items():
            assert 0 <= step < 50 and value == np.float32(fn(step)), (key, step, value)
        if len(got) < 50 and m[0] in ("flip", "insert"):
            assert r.problems  # what is missing was damaged, and said so


GARBAGE = r"""
import os, sys, time
sys.path.insert(0, {root!r})
path, kind = sys.argv[1], sys.argv[2]

def peak_kb():  # VmHWM starts afresh at exec, unlike ru_maxrss, which a child inherits
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

import numpy, pandas  # measured from after the imports: the growth is the reading itself
before = peak_kb()
t0 = time.time()
if kind == "run":
    from traindoc.reader import RunReader
    r = RunReader(path); r.poll(); r.series(); n = r.records
else:
    from traindoc.tb import TBRunReader
    r = TBRunReader(path, use_cache=False); r.poll(); r.series(); n = r.records
print(n, (peak_kb() - before) // 1024, round(time.time() - t0, 2), len(r.problems))
"""


def test_100mb_of_garbage_bounded(tmp_path):
    rng = np.random.default_rng(0)
    garbage = rng.integers(0, 256, 100 * 1024 * 1024, dtype=np.uint8).tobytes()
    run = tmp_path / "run"
    run.mkdir()
    (run / fmt.META_FILE).write_text('{"schema_version": 1, "name": "junk", "status": "running"}')
    (run / fmt.KEYS_FILE).write_text('{"id": 0, "key": "x"}\n')
    (run / fmt.segment_name(0)).write_bytes(fmt.header_bytes(bytes(16)) + garbage)
    tb = tmp_path / "tb"
    tb.mkdir()
    (tb / "events.out.tfevents.0.junk").write_bytes(garbage)
    script = GARBAGE.format(root=ROOT)
    for path, kind in ((run, "run"), (tb, "tb")):
        out = subprocess.run([sys.executable, "-c", script, str(path), kind], capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        records, grew_mb, secs, problems = out.stdout.split()
        print(f"100 MB garbage ({kind}): {records} records, memory +{grew_mb} MB, {secs} s")
        assert 100 <= int(grew_mb) < 400, (kind, grew_mb)  # the file itself is 100 MB
        assert int(problems) >= 1 and int(records) < 10  # time is printed, never asserted
