"""The collector under the faults real runs meet: metadata changed while it is written, both
threads dropping records, a writer stuck in a write at close() or at SIGTERM, an object store
that never answers, and DDP ranks that take different numbers of steps."""

from __future__ import annotations

import dis
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from traindoc import collector
from traindoc import format as fmt
from traindoc.reader import RunReader, read_run
from tests.conftest import ROOT, blobs, mlp, train_steps


def _meta(**extra) -> dict:
    return {"schema_version": fmt.SCHEMA_VERSION, "run_id": uuid.uuid4().hex, "status": "running", **extra}


def _read_meta(path: str) -> dict:
    with open(os.path.join(path, fmt.META_FILE)) as f:
        return json.load(f)


def _in_thread(fn, limit: float):
    """Run `fn` in a thread, waiting at most `limit` seconds: (seconds taken, finished, error)."""
    errors: list = []

    def call():
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)

    t = threading.Thread(target=call, daemon=True)
    start = time.monotonic()
    t.start()
    t.join(limit)
    return time.monotonic() - start, not t.is_alive(), errors


# ---- 1. metadata changed by the training thread while the writer writes it -------------
def test_meta_changed_by_the_training_thread_never_breaks_a_meta_write(tmp_path):
    """The training thread adds and removes metadata entries (as the run does for num_classes
    and the ranks' notes) while the writer thread rewrites meta.json every millisecond; a
    short thread switch interval makes the two interleave often."""
    from traindoc.collector.writer import RunWriter

    path = str(tmp_path / "run")
    writer = RunWriter(path, _meta(config={f"param_{i}": i for i in range(300)}), flush_secs=0.0005)
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        end, i = time.monotonic() + 2.0, 0
        while time.monotonic() < end:
            writer.meta[f"note_{i % 64}"] = i
            writer.meta.pop(f"note_{(i + 32) % 64}", None)
            i += 1
    finally:
        sys.setswitchinterval(before)
    writer.close({"status": "finished"})
    failed = [w for w in writer.stats.warnings if "meta.json" in w]
    assert not failed, failed  # was: "could not write meta.json: RuntimeError('dictionary ... changed during iteration')"
    meta = _read_meta(path)
    assert meta["status"] == "finished" and meta["config"]["param_299"] == 299


# ---- 2. records dropped by both threads are all counted ---------------------------------
def _switch_before_storing(attr: str, code_file: str):
    """A tracer that makes the thread sleep (releasing the GIL) just before it stores
    `<object>.<attr>`, in code from `code_file`: the other thread then runs between the read
    and the write of the counter, as it can at any time on a free-threaded Python."""
    stores: dict = {}

    def offsets(code):
        if code not in stores:
            stores[code] = {i.offset for i in dis.get_instructions(code)
                            if i.opname == "STORE_ATTR" and i.argval == attr}
        return stores[code]

    def local(frame, event, arg):
        if event == "opcode" and frame.f_lasti in offsets(frame.f_code):
            time.sleep(0.001)
        return local

    def tracer(frame, event, arg):
        if frame.f_code.co_filename == code_file and offsets(frame.f_code):
            frame.f_trace_opcodes = True
            return local
        return None

    return tracer


def test_records_dropped_by_both_threads_are_all_counted(tmp_path, monkeypatch):
    """The disk refuses every segment write, so the writer thread keeps at most `retry_limit`
    records and drops the rest, while the training thread drops records because the queue is
    full. Every record must end up on disk or counted in records_dropped."""
    from traindoc.collector import writer as writer_module

    path = str(tmp_path / "run")
    disk_full = threading.Event()
    real_write = os.write

    def write(fd, data):
        if disk_full.is_set() and threading.current_thread().name == "traindoc-writer":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    tracer = _switch_before_storing("dropped", writer_module.__file__)
    threading.settrace(tracer)  # the writer thread starts with it
    try:
        w = writer_module.RunWriter(path, _meta(), flush_secs=0.001, max_pending=20, retry_limit=10)
        w.put(("custom/x", 0, time.time(), 0.0))
        w.flush()  # the segment exists; from now on the disk is full
        monkeypatch.setattr(os, "write", write)
        disk_full.set()
        sys.settrace(tracer)
        n = 3000
        for i in range(1, n + 1):
            w.put(("custom/x", i, time.time(), float(i)))
    finally:
        sys.settrace(None)
        threading.settrace(None)
    disk_full.clear()  # space again: what was kept for retry is written at close
    w.close({"status": "finished"})
    reader = RunReader(path)
    reader.poll()
    on_disk = len(reader.series().get("custom/x"))
    meta = _read_meta(path)
    assert meta["write_errors"] > 0 and any("dropping records" in m for m in meta["warnings"])
    assert on_disk + meta["records_dropped"] == n + 1, (on_disk, meta["records_dropped"])


# ---- 4. a writer stuck in a write does not hold close() or SIGTERM -----------------------
def test_close_is_bounded_when_the_writer_is_stuck_in_a_write(root, monkeypatch):
    """A write that never returns (a hung disk): close() gives up on the writer after its
    bound (5 s) and still marks the run ended in meta.json; once the disk answers again, the
    writer finishes and nothing is lost."""
    stick, stuck, release = threading.Event(), threading.Event(), threading.Event()
    real_write = os.write

    def write(fd, data):
        if stick.is_set() and threading.current_thread().name == "traindoc-writer":
            stuck.set()
            release.wait(120)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    run = collector.attach(model, opt, root=root, name="stuck", log_every=1, ratio_every=0, flush_secs=0.05)
    x, y = blobs()
    try:
        train_steps(run, model, opt, x, y, 20)
        stick.set()
        train_steps(run, model, opt, x, y, 5)
        assert stuck.wait(30), "the writer never wrote"
        took, returned, errors = _in_thread(run.close, 20)
        assert returned, "close() was still blocked on the stuck writer after 20 s"
        assert not errors and took < 15, (took, errors)
        meta = _read_meta(run.path)
        assert meta["status"] == "finished" and meta["end_time"] and meta["steps"] == 25
        assert "stuck" in meta["end_note"]
    finally:
        release.set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the disk answers again: the writer finishes the run
        s = read_run(run.path)
        if "nothing is missing" in s.meta["end_note"]:
            break
        time.sleep(0.1)
    assert s.meta["status"] == "finished" and "nothing is missing" in s.meta["end_note"]
    assert s.get("train/loss/mean").index.tolist() == list(range(1, 26))


_STUCK_SIGTERM_SCRIPT = """
import os, sys, threading, time
sys.path.insert(0, {root!r})
import torch
from traindoc import collector
from tests.conftest import blobs, mlp, train_steps

stick, stuck = threading.Event(), threading.Event()
real_write = os.write

def write(fd, data):  # a hung disk: once stuck, the writer's write never returns
    if stick.is_set() and threading.current_thread().name == "traindoc-writer":
        stuck.set()
        threading.Event().wait()
    return real_write(fd, data)

os.write = write
model = mlp()
opt = torch.optim.SGD(model.parameters(), lr=0.05)
run = collector.attach(model, opt, root={runs!r}, name="term", log_every=1, ratio_every=0, flush_secs=0.05)
x, y = blobs()
train_steps(run, model, opt, x, y, 20)
stick.set()
while not stuck.is_set():
    train_steps(run, model, opt, x, y, 1)
print("stuck", flush=True)
for _ in range(100000):  # training goes on until the scheduler's SIGTERM
    train_steps(run, model, opt, x, y, 1)
    time.sleep(0.01)
"""


@pytest.mark.slow
def test_sigterm_with_a_stuck_writer_ends_within_the_bound_and_marks_the_run(tmp_path):
    script = tmp_path / "stuck.py"
    runs = tmp_path / "runs"
    script.write_text(_STUCK_SIGTERM_SCRIPT.format(root=ROOT, runs=str(runs)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "stuck", proc.stderr.read()[-2000:]
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail("the process was still running 20 s after SIGTERM (close() blocked on the stuck writer)")
        took = time.monotonic() - start
    finally:
        proc.kill()
        proc.wait()
    assert code == -signal.SIGTERM, proc.stderr.read()[-2000:]
    assert took < 15, took
    meta = _read_meta(str(runs / "term"))
    assert meta["status"] == "crashed" and meta["end_reason"] == "SIGTERM" and meta["end_time"]


# ---- 5. sinks: one bounded, idempotent finalize ------------------------------------------
def test_a_sink_finalizes_once_and_never_raises(tmp_path):
    from traindoc.collector import sinks

    path = str(tmp_path / "run")
    os.makedirs(path)
    sink = sinks.open_sink(path, _meta(), None, flush_secs=0.05, close_timeout=3)
    sink.put(("custom/x", 1, time.time(), 1.0))
    assert sink.finalize("finished", {"end_time": 1.0}) is True
    first = _read_meta(path)
    assert first["status"] == "finished"
    took, returned, errors = _in_thread(lambda: sink.finalize("crashed", {"end_reason": "again"}), 5)
    assert returned and not errors and took < 1
    assert _read_meta(path) == first  # the second call did nothing
    assert read_run(path).get("custom/x").tolist() == [1.0]

    broken = sinks.open_sink(str(tmp_path / "broken"), _meta(), None, flush_secs=0.05)

    def fails(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    broken.writer.close = fails  # the writer fails at the end: training must not see it
    with pytest.warns(RuntimeWarning, match="could not finish"):
        assert broken.finalize("finished") is False


def test_close_timeout_is_configurable(root, monkeypatch):
    stuck, release = threading.Event(), threading.Event()
    real_write = os.write

    def write(fd, data):
        if stuck.is_set() and threading.current_thread().name == "traindoc-writer":
            release.wait(60)
        return real_write(fd, data)

    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    run = collector.attach(model, opt, root=root, name="quick", log_every=1, ratio_every=0, flush_secs=0.05,
                           close_timeout=0.5)
    x, y = blobs()
    train_steps(run, model, opt, x, y, 5)
    monkeypatch.setattr(os, "write", write)
    stuck.set()
    try:
        time.sleep(0.3)
        took, returned, _ = _in_thread(run.close, 20)
        assert returned and took < 4, took  # the default bound is 5 s: this one is half a second
        assert _read_meta(run.path)["status"] == "finished"
    finally:
        release.set()


class _StoreThatNeverAnswers:
    """A TCP server that accepts connections and never answers, as a hung proxy in front of the
    object store would."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.conns: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self):
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.mark.slow
def test_an_s3_run_closes_within_its_upload_bound_when_the_store_never_answers(tmp_path, monkeypatch):
    from traindoc.collector import run as run_module

    store = _StoreThatNeverAnswers()
    monkeypatch.setenv("AWS_ENDPOINT_URL", store.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "traindoc")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "traindoc-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("TRAINDOC_SPOOL", str(tmp_path / "spool"))
    monkeypatch.setattr(run_module, "UPLOAD_WAIT_SECS", 2.0)
    try:
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        run = collector.attach(model, opt, root="s3://runs/hung", name="h", log_every=5, flush_secs=0.2)
        x, y = blobs()
        train_steps(run, model, opt, x, y, 50)
        time.sleep(1.0)  # the uploader is inside a request the store never answers
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            took, returned, errors = _in_thread(run.close, 40)
        assert returned, "close() was still waiting for the store after 40 s"
        assert not errors and took < 12, (took, errors)
        assert any("stays spooled" in str(w.message) for w in caught)
        s = read_run(run.path)  # the spool has the whole run, marked
        assert s.meta["status"] == "finished" and s.get("train/loss/mean").index[-1] == 50
    finally:
        store.close()


# ---- 6. DDP: ranks that take different numbers of steps -----------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(fn, args, nprocs=2, timeout=180):
    """mp spawn with a deadline: a rank stuck in an unmatched collective fails the test
    instead of hanging it."""
    ctx = mp.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"a rank hung for {timeout} s (an unmatched collective?)")


UNEVEN_STEPS = (23, 13)


def _uneven_worker(rank, world, port, root):
    """DDP with `Join` over uneven shards: rank 1 runs out of data after 13 steps and shadows
    rank 0's collectives until rank 0 finishes its 23."""
    from torch.distributed.algorithms.join import Join

    from traindoc.collector import ranks

    ranks.WINDOW_WAIT_SECS = 3.0  # how long rank 0 waits for rank 1 at its third window
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    x, y = blobs(n=1024, seed=rank)
    model = torch.nn.parallel.DistributedDataParallel(mlp())
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    run = collector.attach(model, opt, root=root, name="uneven", log_every=5, ratio_every=0)
    with Join([model]):
        for i in range(UNEVEN_STEPS[rank]):
            xb, yb = x[i * 16:(i + 1) * 16], y[i * 16:(i + 1) * 16]
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log_train(loss, output=out, target=yb)
    run.close()
    with open(os.path.join(root, f"done{rank}"), "w") as f:
        f.write(str(run.step))
    dist.destroy_process_group()
    os._exit(0)  # see tests/test_collector_ddp.py: gloo's teardown may abort at exit


@pytest.mark.slow
def test_ddp_join_with_uneven_steps_finishes_with_rank_local_statistics(tmp_path):
    root = str(tmp_path)
    _spawn(_uneven_worker, (2, _free_port(), root), timeout=150)
    assert [open(os.path.join(root, f"done{r}")).read() for r in range(2)] == [str(n) for n in UNEVEN_STEPS]
    reader = RunReader(os.path.join(root, "uneven"))
    reader.poll()
    s = reader.series()
    assert reader.problems == []
    assert s.meta["status"] == "finished" and s.meta["steps"] == 23
    count = s.get("train/loss/count")
    assert count[5] == count[10] == 10  # both ranks, all-reduced while both stepped
    assert count[15] == count[20] == 5 and count[23] == 3  # then rank 0's own
    assert s.meta["ranks"] == "rank-local" and "from step 15" in s.meta["ranks_note"]


def _late_rank_worker(rank, world, port, root):
    """Three ranks; rank 2 closes its run only after rank 0 has stopped waiting for it."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    x, y = blobs(n=1024, seed=rank)
    model = torch.nn.parallel.DistributedDataParallel(mlp())
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    run = collector.attach(model, opt, root=root, name="late", log_every=5, ratio_every=0)
    for i in range(12):
        xb, yb = x[i * 16:(i + 1) * 16], y[i * 16:(i + 1) * 16]
        out = model(xb)
        loss = F.cross_entropy(out, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.log_train(loss, output=out, target=yb)

    def wait_for(name):
        deadline = time.monotonic() + 60
        while not os.path.exists(os.path.join(root, name)) and time.monotonic() < deadline:
            time.sleep(0.05)

    if rank == 0:
        wait_for("closed1")  # rank 1's last part is posted before rank 0 looks
    if rank == 2:
        wait_for("closed0")
    run.close()
    open(os.path.join(root, f"closed{rank}"), "w").close()
    dist.destroy_process_group()
    os._exit(0)


@pytest.mark.slow
def test_the_last_window_merges_the_ranks_that_came_and_names_the_missing(tmp_path):
    root = str(tmp_path)
    _spawn(_late_rank_worker, (3, _free_port(), root), nprocs=3, timeout=150)
    s = read_run(os.path.join(root, "late"))
    count = s.get("train/loss/count")
    assert count[5] == count[10] == 15  # three ranks, five steps each
    assert count[12] == 4  # steps 11-12 of ranks 0 and 1; rank 2's came too late
    assert s.meta["last_window_ranks"] == 2 and s.meta["last_window_missing"] == [2]
