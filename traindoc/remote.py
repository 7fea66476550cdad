"""Runs on S3-compatible object storage (`s3://bucket/prefix`), through fsspec and s3fs.

Object stores cannot append, so a run on a bucket is a set of immutable objects:

    <prefix>/<run>/meta.json, keys.jsonl, ...      small files: the whole file, replaced when it changes
    <prefix>/<run>/<segment>.bin.chunks/<offset>   the bytes of an append-only segment from <offset> on
                                                   (16 digits), never rewritten
    <prefix>/<run>/.claim-<run id>                 an empty object: which run the name belongs to

Two machines may start a run of the same name under one prefix. Before its first upload, an
uploader writes its claim, waits CLAIM_SETTLE_SECS and lists the claims: the oldest (ties: the
smaller run id) owns the name, and a run that lost takes `<run>-2`, `-3`, ... the same way
(it warns, and its meta.json on the bucket names where it went). A name with objects but no
claim (written before claims existed) belongs to the run id in its meta.json.

The writer side (`Uploader`) runs in a background thread of the training process: the collector
writes its run folder to a local spool exactly as on a local disk, and every few seconds the
uploader ships what is new (the new bytes of each segment that grew, as chunks of at most
MAX_CHUNK_BYTES each; small files that changed; meta.json last, so a reader never sees a status
ahead of its data). What it has shipped is noted in the
spool (`.traindoc-upload.json`), so an upload that failed (the store is down, the network is
cut) is simply sent on a later tick, or by `traindoc push` after the process is gone. Nothing
here ever raises into the training loop.

The reader side (`sync`) mirrors a prefix into the cache folder: small files whose ETag changed
are fetched again, and each segment is rebuilt from its chunks in offset order, each chunk
written at its own offset (so writing one twice is harmless, and a chunk torn by a crash is
simply written again). The mirror state notes, per segment, where the chunks written whole and
without a gap end; the file's size is never trusted. One sync of a URL at a time, across
processes (the dashboard and the CLI): a lock file beside the mirror. Data is written before
meta.json (keys.jsonl and other small files, then the segments, then meta.json), so the mirror
never shows a status ahead of its records, and the last write of a sync that changed a run is a
rename in its folder, which tells the catalog the run changed. Everything that reads local runs
(the readers, the catalog, the dashboard) then reads the mirror. Endpoint and credentials come
from the standard variables (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_DEFAULT_REGION`).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time

from . import paths
from .paths import mirror_path, spool_root

SCHEME = "s3://"
CHUNKS = ".chunks"
UPLOAD_STATE = ".traindoc-upload.json"
CLAIM = ".claim-"
#: How long a claim is left to become visible to another machine's listing before the
#: claims are compared (in the uploader's thread; training never waits for it).
CLAIM_SETTLE_SECS = 2.0
MIRROR_STATE = ".traindoc-mirror.json"
#: The mirror state's layout: {"version", "small": {path: ETag}, "segments": {path: end written}}.
#: A mirror with another layout (the flat {path: ETag} of before) is fetched again whole once.
MIRROR_STATE_VERSION = 2
#: How long a sync waits for another process's sync of the same URL before it gives up.
MIRROR_LOCK_TIMEOUT = 600.0
#: The most bytes of a segment that one chunk object holds (S3 takes at most 5 GB in one PUT,
#: and a chunk is read into memory whole): a backlog after a long outage goes as several
#: chunks. `$TRAINDOC_MAX_CHUNK_BYTES` overrides it; so does an uploader's `max_chunk_bytes`.
MAX_CHUNK_BYTES = 64 << 20


def is_remote(path) -> bool:
    """True for an `s3://` URL."""
    return isinstance(path, str) and path.startswith(SCHEME)


def filesystem(for_uploads: bool = False):
    """An s3fs filesystem from the environment. Uploads use short timeouts and no retries of
    their own: a failed tick is retried by the next one, and a store that is down must never
    hold a training step."""
    import s3fs

    kwargs = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    return s3fs.S3FileSystem(client_kwargs=kwargs, config_kwargs={
        "connect_timeout": 3, "read_timeout": 15, "retries": {"max_attempts": 1 if for_uploads else 3}},
        skip_instance_cache=True, use_listings_cache=False)


def _bare(url: str) -> str:
    return url[len(SCHEME):].rstrip("/")


# ---- writing -------------------------------------------------------------------------------
class Uploader:
    """Ships one spooled run folder to `<url>/<run>` in the background; see the module docstring."""

    def __init__(self, run_dir: str, url: str, interval: float = 2.0, warn=None):
        self.run_dir, self.url, self.interval = run_dir, url.rstrip("/"), interval
        self._warn = warn  # warn(message): where a run that had to take another name says so
        self.last_error: str | None = None
        self.uploads = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._fs = None
        self._thread: threading.Thread | None = None
        self.max_chunk_bytes = _chunk_cap()
        state_path = os.path.join(run_dir, UPLOAD_STATE)
        self._state = {"url": self.url, "bin": {}, "small": {}}
        try:
            with open(state_path) as f:
                old = json.load(f)
            if old.get("url") == self.url:
                self._state = old
                if "target" not in old and (old.get("bin") or old.get("small")):
                    self._state["target"] = self.url  # shipped before names were claimed
        except (OSError, ValueError):
            pass
        self._save()

    @property
    def target(self) -> str | None:
        """Where the run goes on the store: `url`, or `url-N` if another run owned the name;
        None until the name is claimed (on the first tick that reaches the store)."""
        return self._state.get("target")

    def _run_id(self) -> str:
        try:
            with open(os.path.join(self.run_dir, "meta.json")) as f:
                return str(json.load(f)["run_id"])
        except (OSError, ValueError, KeyError, TypeError):
            return hashlib.sha1(os.path.abspath(self.run_dir).encode()).hexdigest()  # stable per spool folder

    def _owner(self, base: str) -> str | None:
        """The run id that owns `base` on the store (None: nobody)."""
        try:
            objects = self._fs.ls(base, detail=True, refresh=True)
        except FileNotFoundError:
            return None
        claims = sorted((str(o.get("LastModified", "")), o["name"].rsplit("/", 1)[-1][len(CLAIM):])
                        for o in objects if o["name"].rsplit("/", 1)[-1].startswith(CLAIM))
        if claims:
            return claims[0][1]
        if not objects:
            return None
        try:
            return str(json.loads(self._fs.cat_file(f"{base}/meta.json"))["run_id"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return "?"  # objects without a readable owner: not ours to write into

    def _claim(self) -> str:
        run_id = self._run_id()
        for n in range(1, 10_000):
            url = self.url if n == 1 else f"{self.url}-{n}"
            base = _bare(url)
            owner = self._owner(base)
            if owner not in (None, run_id):
                continue
            if owner is None:
                self._fs.pipe_file(f"{base}/{CLAIM}{run_id}", b"")
                time.sleep(CLAIM_SETTLE_SECS)
                if self._owner(base) != run_id:
                    self._fs.rm_file(f"{base}/{CLAIM}{run_id}")
                    continue
            if url != self.url and self._warn is not None:
                self._warn(f"traindoc: {self.url} belongs to another run; this run is uploaded to {url}")
            return url
        raise RuntimeError(f"no free name left beside {self.url}")

    def start(self) -> "Uploader":
        self._thread = threading.Thread(target=self._loop, name="traindoc-uploader", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()

    def pending(self) -> int:
        """Bytes of segments not uploaded yet (small files aside)."""
        n = 0
        for name, done in self._segments():
            n += max(0, done[1] - done[0])
        return n

    def _segments(self):
        try:
            names = sorted(os.listdir(self.run_dir))
        except OSError:
            return
        for name in names:
            if name.endswith(".bin"):
                try:
                    size = os.path.getsize(os.path.join(self.run_dir, name))
                except OSError:
                    continue
                yield name, (self._state["bin"].get(name, 0), size)

    def tick(self) -> bool:
        """Upload what is new; True when everything is on the store. Never raises."""
        with self._lock:
            try:
                if self._fs is None:
                    self._fs = filesystem(for_uploads=True)
                    bucket = _bare(self.url).split("/", 1)[0]
                    if not self._fs.exists(bucket):
                        try:
                            self._fs.mkdir(bucket)  # a fresh store: make the bucket rather than fail every tick
                        except FileExistsError:
                            pass  # made meanwhile by another uploader (or a listing cache was behind)
                if self.target is None:
                    self._state["target"] = self._claim()
                    self._save()
                base = _bare(self.target)
                cap = max(1, int(self.max_chunk_bytes))
                for name, (done, size) in list(self._segments()):
                    if size <= done:
                        continue
                    with open(os.path.join(self.run_dir, name), "rb") as f:
                        while done < size:  # at most `cap` bytes in memory and in one PUT
                            f.seek(done)
                            data = f.read(min(cap, size - done))
                            if not data:
                                break  # the file is shorter than it was a moment ago
                            self._fs.pipe_file(f"{base}/{name}{CHUNKS}/{done:016d}", data)
                            done += len(data)
                            self._state["bin"][name] = done  # a failure later resumes from here
                            self.uploads += 1
                            self._save()
                small = [n for n in sorted(os.listdir(self.run_dir))
                         if not n.endswith(".bin") and not n.startswith(".") and
                         os.path.isfile(os.path.join(self.run_dir, n))]
                small.sort(key=lambda n: n == "meta.json")  # meta.json last: never ahead of its data
                for name in small:
                    st = os.stat(os.path.join(self.run_dir, name))
                    stamp = [st.st_size, st.st_mtime_ns]
                    if self._state["small"].get(name) != stamp:
                        with open(os.path.join(self.run_dir, name), "rb") as f:
                            data = f.read()
                        if name == "meta.json" and self.target != self.url:
                            data = _moved_meta(data, self.target)
                        self._fs.pipe_file(f"{base}/{name}", data)
                        self._state["small"][name] = stamp
                        self.uploads += 1
                        self._save()
                self.last_error = None
                return self.pending() == 0
            except Exception as exc:  # noqa: BLE001 - the store being down must never reach training
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._fs = None  # a fresh client next time
                return False

    def stop(self, wait: float = 10.0) -> bool:
        """Stop the thread after a last upload, trying for up to `wait` seconds (0: none). True if
        everything was shipped; otherwise the rest stays spooled for `traindoc push`."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=max(wait, 0.1))
        deadline = time.monotonic() + wait
        while wait > 0:
            if self.tick():
                return True
            if time.monotonic() >= deadline:
                break
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        return wait > 0 and self.pending() == 0 and self.last_error is None

    def _save(self) -> None:
        path = os.path.join(self.run_dir, UPLOAD_STATE)
        tmp = path + ".tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(self._state, f)
            os.replace(tmp, path)
        except OSError:
            pass


def _chunk_cap() -> int:
    """MAX_CHUNK_BYTES, or `$TRAINDOC_MAX_CHUNK_BYTES` where that is a positive whole number."""
    try:
        n = int(os.environ.get("TRAINDOC_MAX_CHUNK_BYTES", ""))
        if n > 0:
            return n
    except ValueError:
        pass
    return MAX_CHUNK_BYTES


def _moved_meta(data: bytes, target: str) -> bytes:
    """meta.json of a run that had to take another name on the store: it says where it is."""
    try:
        meta = json.loads(data)
        meta["remote"] = target
        return json.dumps(meta).encode()
    except (ValueError, TypeError):
        return data  # a half-written meta.json is shipped as it is; the next tick sends the whole


def push(spool: str | None = None, attempts: int = 3, pause: float = 2.0) -> list[tuple[str, bool, str | None]]:
    """Upload whatever spooled runs still hold (after an outage outlived the training process):
    (run folder, fully shipped, the last error if not) for each run found. A run whose upload
    fails is tried `attempts` times, `pause` seconds apart (a store just restarted may refuse
    writes for a moment)."""
    base = spool or paths.spool_base()
    out = []
    for dirpath, dirnames, filenames in os.walk(base):
        if UPLOAD_STATE in filenames:
            dirnames[:] = []
            try:
                with open(os.path.join(dirpath, UPLOAD_STATE)) as f:
                    url = json.load(f)["url"]
            except (OSError, ValueError, KeyError):
                continue
            up = Uploader(dirpath, url)
            done = up.tick()
            for _ in range(attempts - 1):
                if done or up.last_error is None:
                    break
                time.sleep(pause)
                done = up.tick()
            out.append((dirpath, done, up.last_error))
    return out


# ---- reading -------------------------------------------------------------------------------
#: url -> objects fetched by its last sync (what the tests and the benchmark look at)
FETCHED: dict[str, int] = {}


def sync(url: str, fs=None) -> str:
    """Bring the local mirror of `url` up to date; returns its path. Only objects whose ETag is new
    are fetched; segments grow by their new chunks only. Another process's sync of the same URL
    is waited for (MIRROR_LOCK_TIMEOUT at most: then filelock.Timeout)."""
    import filelock

    fs = fs or filesystem()
    local = mirror_path(url)
    os.makedirs(local, exist_ok=True)
    # Beside the mirror, not in it: the mirror holds runs (and its state) only.
    with filelock.FileLock(f"{local.rstrip(os.sep)}.lock", timeout=MIRROR_LOCK_TIMEOUT):
        fetched = _sync(url, fs, local)
    FETCHED[url] = fetched
    return local


def _sync(url: str, fs, local: str) -> int:
    fetched = 0
    state_path = os.path.join(local, MIRROR_STATE)
    try:
        with open(state_path) as f:
            state = json.load(f)
    except (OSError, ValueError):
        state = None
    if not isinstance(state, dict) or state.get("version") != MIRROR_STATE_VERSION:
        # Nothing known (or a mirror built by appending at the file's size, which may hold a
        # chunk twice): everything is fetched again once, meta.json last as always.
        state = {"version": MIRROR_STATE_VERSION, "small": {}, "segments": {}}
    small_state, seg_state = state.setdefault("small", {}), state.setdefault("segments", {})
    base = _bare(url)
    try:
        objects = fs.find(base, detail=True)
    except FileNotFoundError:
        objects = {}
    small: list[tuple[str, str, str]] = []
    chunks: dict[str, list[tuple[int, int | None, str]]] = {}
    for key, info in sorted(objects.items()):
        rel = key[len(base):].lstrip("/")
        if not rel or info.get("type") == "directory":
            continue
        if rel.rsplit("/", 1)[-1].startswith(CLAIM):
            continue  # which run owns a name: the writers' business
        if f"{CHUNKS}/" in rel:
            target, offset = rel.rsplit(f"{CHUNKS}/", 1)
            if offset.isdigit():
                size = info.get("size")
                chunks.setdefault(target, []).append((int(offset), size if isinstance(size, int) else None, key))
            continue
        small.append((rel, key, str(info.get("ETag") or info.get("etag") or info.get("size"))))
    # keys.jsonl (and the other small files) first, so no record arrives before its key; then the
    # segments; meta.json last, so its status is never ahead of the records
    metas = [s for s in small if s[0].rsplit("/", 1)[-1] == "meta.json"]
    for rel, key, etag in [s for s in small if s not in metas]:
        fetched += _fetch_small(fs, local, rel, key, etag, small_state)
    for target, parts in sorted(chunks.items()):
        seg_state[target], n = _sync_segment(fs, os.path.join(local, target), sorted(parts),
                                             seg_state.get(target, 0))
        fetched += n
    for rel, key, etag in metas:
        fetched += _fetch_small(fs, local, rel, key, etag, small_state)
    _write(state_path, json.dumps(state).encode())
    return fetched


def _fetch_small(fs, local: str, rel: str, key: str, etag: str, known: dict) -> int:
    """Fetch one small file whose ETag changed (replaced whole, by a rename); 1 if fetched."""
    if known.get(rel) == etag:
        return 0
    _write(os.path.join(local, rel), fs.cat_file(key))
    known[rel] = etag
    return 1


def _sync_segment(fs, path: str, parts: list, done: int) -> tuple[int, int]:
    """Write the chunks of one segment that lie past `done` (where the chunks written whole and
    without a gap end), each at its own offset; (the new end, chunks fetched). A file cut short
    (a crash mid-write, a torn copy) is written again from the chunk it was cut in; bytes past
    the end (a torn or doubled append of an older mirror) are cut off."""
    try:
        have = os.path.getsize(path)
    except OSError:
        have = 0
    if have < done:
        done = max([offset for offset, _, _ in parts if offset <= have], default=0)
    fetched = 0
    for offset, size, key in parts:
        if offset + (size if size is not None else 1) <= done:
            continue  # written already
        if offset > done:
            break  # a gap: its chunk is not listed yet; the next sync goes on from here
        data = fs.cat_file(key)
        _write_at(path, offset, data)
        done = max(done, offset + len(data))
        fetched += 1
    try:
        if os.path.getsize(path) > done:
            os.truncate(path, done)
    except OSError:
        pass
    return done, fetched


def _write_at(path: str, offset: int, data: bytes) -> None:
    """Write `data` at `offset` of `path` (created if need be): the same bytes twice are harmless."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)
    try:
        view = memoryview(data)
        while view:
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n
    finally:
        os.close(fd)


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


_LAST_SYNC: dict[str, float] = {}
_SYNC_LOCK = threading.Lock()


def local_root(url: str, max_age: float = 0.0) -> str:
    """The mirror of `url`, synced unless it was synced less than `max_age` seconds ago."""
    with _SYNC_LOCK:
        if time.monotonic() - _LAST_SYNC.get(url, -1e18) >= max_age:
            sync(url)
            _LAST_SYNC[url] = time.monotonic()
    return mirror_path(url)
