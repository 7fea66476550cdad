"""Faults in the training process, bad CLI input, and what the served app may touch."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch

from traindoc import collector
from traindoc import format as fmt
from traindoc.collector import writer as writer_mod
from traindoc.reader import read_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "sample_runs")


def test_sigterm_flushes_then_lets_the_process_end(root):
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "train_script.py"), root, "term",
                             "1000000", "60", "0.002"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "started"
    windows = []
    while len(windows) < 30:
        line = proc.stdout.readline().split()
        if line and line[0] == "window":
            windows.append(int(line[1]))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == -signal.SIGTERM  # the default action still happens after our flush
    s = read_run(os.path.join(root, "term"))
    assert s.meta["status"] == "crashed" and s.meta["end_reason"] == "SIGTERM"
    # flush_secs was 60: everything on disk was written by the SIGTERM handler
    assert set(windows) <= set(s.get("train/loss/mean").index)


def test_slow_storage_drops_counted_never_blocks(root, monkeypatch):
    real = writer_mod.RunWriter._write_records

    writes = []

    def slow(self, packed):  # a disk that takes half a second per write
        time.sleep(0.5)
        writes.append(1)
        return real(self, packed)
    monkeypatch.setattr(writer_mod.RunWriter, "_write_records", slow)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = collector.attach(model, opt, root=root, name="slow", flush_secs=0.05, max_pending=1000)
    longest_queue = 0
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for i in range(20000):
            run.log({"x": float(i)}, step=i)
            longest_queue = max(longest_queue, len(run._writer._queue))
        writes_during_loop = len(writes)
        run.close()
    s = read_run(run.path)
    dropped = s.meta["records_dropped"]
    assert dropped > 0 and len(s.get("custom/x")) + dropped == 20000  # every record written or counted
    assert longest_queue <= 1000  # memory stays bounded
    # 20,000 calls went through while the disk finished only a handful of writes: no call
    # waited for one (a count, not a clock: waiting would have meant 0.5 s per call)
    assert writes_during_loop <= 10, writes_during_loop
    assert sum("dropping records" in str(x.message) for x in w) == 1
    assert any("dropping" in m for m in s.meta["warnings"])


def _newer_schema_run(tmp_path):
    newer = tmp_path / "newer"
    shutil.copytree(os.path.join(SAMPLES, "healthy-cnn-sgd"), newer)
    meta = json.loads((newer / "meta.json").read_text())
    meta["schema_version"] = fmt.SCHEMA_VERSION + 1
    (newer / "meta.json").write_text(json.dumps(meta))
    return str(newer)


def bad_inputs(tmp_path):
    afile = tmp_path / "a-file.txt"
    afile.write_text("not a run")
    empty = tmp_path / "empty"
    empty.mkdir()
    odd = os.fsdecode(os.path.join(os.fsencode(str(tmp_path)), b"odd\xffname"))
    os.mkdir(odd)
    return {"missing": str(tmp_path / "missing"), "file": str(afile), "empty": str(empty),
            "newer": _newer_schema_run(tmp_path), "non_utf8": odd}


CASES = [(c, k) for c in ("diagnose", "export-tb") for k in ("missing", "file", "empty", "newer", "non_utf8")]
# serve takes a folder of runs: an empty one is fine (runs appear when training starts) and a
# newer-format run gets its message inside the app (test_app covers that); the rest is refused
CASES += [("serve", k) for k in ("missing", "file", "non_utf8")]


@pytest.mark.parametrize("command,case", CASES)
def test_every_command_rejects_bad_input_in_one_line(tmp_path, command, case):
    path = bad_inputs(tmp_path)[case]
    args = {"diagnose": ["diagnose", path], "export-tb": ["export-tb", path, "--out", str(tmp_path / "out")],
            "serve": ["serve", path, "--headless", "--port", "1"]}[command]
    r = subprocess.run([sys.executable, "-m", "traindoc.cli", *args], capture_output=True, timeout=60,
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    err = r.stderr.decode("utf-8")
    assert r.returncode == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("traindoc: "), err
    assert "Traceback" not in err
    if case == "newer":
        assert "upgrade traindoc" in err


def test_serve_accepts_an_empty_root(tmp_path):
    from tests.browser import Server

    server = Server(str(tmp_path), str(tmp_path / "serve.log"))  # waits for the health check
    try:
        assert server.proc.poll() is None
    finally:
        server.stop()


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


def _gone(pid: int) -> bool:
    """No such process, or a zombie (an orphan that no init reaps here is still 'gone')."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PR_SET_PDEATHSIG is Linux-only")
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_serve_takes_its_streamlit_server_down_with_it(tmp_path, how):
    """`kill` (or a supervisor) stopping `traindoc serve` must not leave the server running."""
    from tests.browser import Server

    server = Server(str(tmp_path), str(tmp_path / "serve.log"))
    (child,) = _children(server.proc.pid)
    assert not _gone(child)
    os.kill(server.proc.pid, how)
    code = server.proc.wait(15)
    deadline = time.time() + 15
    while not _gone(child) and time.time() < deadline:
        time.sleep(0.1)
    server.log.close()
    assert _gone(child), f"streamlit (pid {child}) outlived traindoc serve after {how.name}"
    if how == signal.SIGTERM:
        assert code == 0  # a requested stop is not an error


def test_serve_binds_loopback_and_warns_otherwise():
    from traindoc.serve import command, is_loopback

    cmd = command("runs", "127.0.0.1", 8501)
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--browser.gatherUsageStats") + 1] == "false"
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    r = subprocess.run([sys.executable, "-m", "traindoc.cli", "serve", "--help"], capture_output=True, text=True,
                       cwd=ROOT)
    assert "default: loopback only" in r.stdout


def test_non_loopback_host_prints_a_warning(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "traindoc.cli", "serve", str(tmp_path), "--headless",
                             "--host", "0.0.0.0", "--port", "1"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, cwd=ROOT)
    first = proc.stderr.readline()
    proc.kill()
    proc.wait()
    assert "warning" in first and "not loopback" in first


def test_no_pickle_or_torch_load_on_the_reading_side():
    """Run folders and caches are data: nothing that reads them may unpickle."""
    pattern = re.compile(r"\bpickle\b|torch\.load|allow_pickle\s*=\s*True|marshal\.loads|\beval\(")
    for folder in ("traindoc", "app"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
            for f in files:
                if f.endswith(".py"):
                    text = open(os.path.join(dirpath, f), encoding="utf-8").read()
                    assert not pattern.search(text), os.path.join(dirpath, f)
