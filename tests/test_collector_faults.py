"""A logging failure never ends a training run (real ENOSPC and read-only filesystems)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import warnings

import pytest
import torch
import torch.nn.functional as F

from traindoc import collector
from traindoc import format as fmt
from traindoc.reader import RunReader, read_run
from tests.conftest import blobs, mlp


@contextlib.contextmanager
def tmpfs(path, size="256k"):
    """A real, small filesystem (needs root, which CI has)."""
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], capture_output=True)
    if r.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount tmpfs in CI: {r.stderr!r}")
        pytest.skip("needs root to mount a small tmpfs")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path])


def fill_disk(path):
    """Take every remaining byte of the filesystem."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 4096, 512, 32, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def read_only_bind(path):
    """Make `path` read-only for every new open, as a remounted filesystem would be."""
    subprocess.run(["mount", "--bind", path, path], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", path], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", path])


def _loop(run, model, opt, steps, on_step=None):
    x, y = blobs(n=4096)
    for i in range(steps):
        b = (i * 32) % 4000
        out = model(x[b:b + 32])
        loss = F.cross_entropy(out, y[b:b + 32])
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.log_train(loss, output=out, target=y[b:b + 32])
        if on_step:
            on_step(i)
        if i % 10 == 0:
            run.writer_flush_for_test()
    return i + 1


@pytest.fixture(autouse=True)
def _flush_helper(monkeypatch):
    def flush(self):
        if self._writer is not None:
            self._writer.flush()
    monkeypatch.setattr(collector.Run, "writer_flush_for_test", flush, raising=False)


def test_disk_full_training_goes_on_and_flushed_data_survives(tmp_path):
    mnt = str(tmp_path / "small")
    with tmpfs(mnt, size="64k"):
        model, = [mlp()]
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        run = collector.attach(model, opt, root=mnt, name="full", log_every=1, ratio_every=1, flush_secs=3600)
        filler = os.path.join(mnt, "filler")
        seen = {}

        def fill(i):
            if i == 20:
                run.writer_flush_for_test()
                seen["before"] = read_run(run.path).get("train/loss/mean").copy()
                fill_disk(filler)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            steps = _loop(run, model, opt, 200, on_step=fill)
            run.close()
        assert steps == 200  # training was never interrupted
        msgs = [str(x.message) for x in w if "traindoc" in str(x.message)]
        assert any("could not write" in m for m in msgs)
        assert len(msgs) == len(set(msgs))  # each problem warned about once
        after = read_run(run.path).get("train/loss/mean")
        assert len(seen["before"]) >= 20
        assert after.loc[seen["before"].index].equals(seen["before"])  # nothing flushed was lost


def test_space_freed_again_writes_resume_without_loss(tmp_path):
    mnt = str(tmp_path / "small")
    with tmpfs(mnt, size="128k"):
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        run = collector.attach(model, opt, root=mnt, name="resume", log_every=1, ratio_every=0, flush_secs=3600)
        filler = os.path.join(mnt, "filler")

        def fill(i):
            if i == 10:
                fill_disk(filler)
            if i == 40:
                os.remove(filler)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _loop(run, model, opt, 60, on_step=fill)
            run.close()
        s = read_run(run.path)
        # the records that could not be written while the disk was full were kept and written later
        assert s.get("train/loss/mean").index.tolist() == list(range(1, 61))
        assert s.meta["write_errors"] > 0 and s.meta["records_dropped"] == 0


def test_read_only_mid_run(tmp_path):
    mnt = str(tmp_path / "ro")
    with tmpfs(mnt):
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        run = collector.attach(model, opt, root=mnt, name="ro", log_every=1, ratio_every=5, flush_secs=3600)
        seen = {}

        def make_ro(i):
            if i == 15:
                run.writer_flush_for_test()
                seen["before"] = read_run(run.path).get("train/loss/mean").copy()
                seen["ro"] = read_only_bind(run.path)
                seen["ro"].__enter__()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # even warnings-as-errors must not stop training
            steps = _loop(run, model, opt, 50, on_step=make_ro)
            run.close()
        seen["ro"].__exit__(None, None, None)
        assert steps == 50
        after = read_run(run.path).get("train/loss/mean")
        assert after.loc[seen["before"].index].equals(seen["before"])


def test_root_not_writable_at_start(tmp_path):
    mnt = str(tmp_path / "ro0")
    with tmpfs(mnt):
        subprocess.run(["mount", "-o", "remount,ro", mnt], check=True)
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        with pytest.warns(RuntimeWarning, match="not recording"):
            run = collector.attach(model, opt, root=mnt, name="x")
        assert _loop(run, model, opt, 20) == 20
        run.close()


def test_folder_deleted_mid_run(root):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    run = collector.attach(model, opt, root=root, name="del", log_every=1, ratio_every=0, flush_secs=3600)

    def delete(i):
        if i == 10:
            run.writer_flush_for_test()
            shutil.rmtree(run.path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _loop(run, model, opt, 30, on_step=delete) == 30
        run.close()
    s = read_run(run.path)  # recreated: the steps after the deletion are all there
    idx = s.get("train/loss/mean").index.tolist()
    assert idx[-1] == 30 and set(range(12, 31)) <= set(idx)
    assert s.meta["status"] == "finished"


def test_bad_values_and_devices_warn_once(root):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    run = collector.attach(model, opt, root=root, name="odd", log_every=2)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for _ in range(4):
            opt.step()
            run.log_train("not a loss")
            run.log_train(torch.ones(()), output=torch.zeros(4, 3, device="meta"), target=torch.zeros(4).long())
            run.log_train(torch.tensor(2.0, dtype=torch.bfloat16))
            run.log({"weird": object()})
        run.close()
    msgs = [str(x.message) for x in w if "traindoc" in str(x.message)]
    assert msgs and len(msgs) == len(set(msgs))
    s = read_run(run.path)
    assert s.get("train/loss/mean").tolist() == [1.5, 1.5]  # the good values were recorded


def test_disk_full_mid_key_line_then_freed_every_key_reads_back(tmp_path):
    """The disk fills up while a new key's line is being appended to keys.jsonl: only the part
    that fits in the file's last block is written. Once space is freed, the writer must cut that
    half line before appending again, or the key can never be named and every record of it
    counts as corrupt."""
    mnt = str(tmp_path / "small")
    block = 4096
    with tmpfs(mnt, size="128k"):
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        run = collector.attach(model, opt, root=mnt, name="keys", log_every=1, ratio_every=0, flush_secs=3600)
        keys_path = os.path.join(run.path, "keys.jsonl")
        filler = os.path.join(mnt, "filler")
        x, y = blobs(n=4096)
        step = {"n": 0}

        def train(steps, extra=()):
            for _ in range(steps):
                b = (step["n"] * 32) % 4000
                out = model(x[b:b + 32])
                loss = F.cross_entropy(out, y[b:b + 32])
                opt.zero_grad()
                loss.backward()
                opt.step()
                run.log_train(loss, output=out, target=y[b:b + 32])
                run.log({k: float(step["n"]) for k in extra})
                step["n"] += 1
            run.writer_flush_for_test()

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            train(3)
            metrics = []  # more keys, until the next key's line no longer fits in keys.jsonl's last block
            while True:
                late = f"metric_{len(metrics):03d}"
                with open(keys_path, "rb") as f:
                    data = f.read()
                room = -len(data) % block or block
                if room < len(fmt.key_line(data.count(b"\n"), f"custom/{late}", run.run_id)):
                    break
                metrics.append(late)
                train(1, extra=metrics)
            train(2, extra=metrics)
            fill_disk(filler)
            train(5, extra=metrics + [late])  # its line is written only in part: the disk is full
            assert run._writer.stats.write_errors > 0
            os.remove(filler)  # space again
            train(5, extra=metrics + [late])
            run.close()
        reader = RunReader(run.path)
        reader.poll()
        reader.poll()  # records whose key was unknown on the first poll are counted as corrupt on the second
        s = reader.series()
        assert reader.problems == [], reader.problems
        assert s.get("train/loss/mean").index.tolist() == list(range(1, step["n"] + 1))
        assert len(s.get(f"custom/{late}")) == 10  # all of the late key's records, the full-disk ones too
        for m in metrics:
            assert f"custom/{m}" in s.keys
