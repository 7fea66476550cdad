"""Background writer: the training thread hands records over, this thread writes them.

The training thread only ever appends to a deque (no lock, no I/O, no device
sync). A daemon thread drains it every `flush_secs`, turns deferred device
values into floats, and appends whole 32-byte records to the current segment.
Any OS error is reported once and never reaches the training thread.

Shutdown is bounded: `close()` lets the thread write what is queued and the final
metadata, waiting at most its timeout. A thread stuck inside a write (a hung disk or
network filesystem, a GPU that never finishes a copy) is left behind, and the run's
ending is written to meta.json by the closing thread, without the lock the stuck thread
holds.
"""

from __future__ import annotations

import collections
import errno
import json
import os
import threading
import time
import warnings
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from traindoc import format as fmt
from traindoc.jsonsafe import plain

from . import stats

#: How long close() waits for the writer thread by default (the whole shutdown's budget).
CLOSE_TIMEOUT_SECS = 5.0


@dataclass
class Deferred:
    """Values that are still a device tensor; converted on the writer thread.

    `tensor` is already a CPU tensor (possibly being filled by an async copy), or a
    `stats.Pending` computed here; `event` is the CUDA event that marks the copy's
    end, or None.
    `expand` turns the list of floats into (key, value) pairs.
    """

    step: int
    wall: float
    tensor: Any
    event: Any
    expand: Callable[[list], Sequence[tuple]]


@dataclass
class WriterStats:
    """Counters that end up in the run's metadata."""

    written: int = 0
    dropped: int = 0
    write_errors: int = 0
    warnings: list = field(default_factory=list)
    # records are dropped by the training thread (queue full) and by the writer (retry
    # buffer full): `+=` from two threads can lose counts, so dropping counts under a lock
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count_dropped(self, n: int = 1) -> int:
        """Add `n` dropped records; returns the new total."""
        with self._lock:
            self.dropped += n
            return self.dropped


class SharedMeta(MutableMapping):
    """The run's metadata: changed by the training thread, written by the writer thread.

    Every change and every serialisation takes one lock, so meta.json is always written
    from a consistent snapshot (serialising a dict while another thread adds a key raises
    "dictionary changed size during iteration")."""

    def __init__(self, initial: dict):
        self._data = dict(initial)
        self._lock = threading.Lock()

    def __getitem__(self, key):
        with self._lock:
            return self._data[key]

    def __setitem__(self, key, value) -> None:
        with self._lock:
            self._data[key] = value

    def __delitem__(self, key) -> None:
        with self._lock:
            del self._data[key]

    def __iter__(self):
        return iter(self.snapshot())

    def __len__(self) -> int:
        return len(self._data)

    def update(self, other=(), **changes) -> None:
        """Several changes at once: a snapshot sees all of them or none."""
        with self._lock:
            self._data.update(other, **changes)

    def snapshot(self) -> dict:
        """A shallow copy, taken under the lock."""
        with self._lock:
            return dict(self._data)

    def to_json(self, **changes) -> str:
        """meta.json's text with `changes` applied, serialised under the lock."""
        with self._lock:
            self._data.update(changes)
            return json.dumps(plain(self._data), indent=1, allow_nan=True)


class RunWriter:
    """Owns the run folder's files. Only this thread touches them after start."""

    def __init__(self, path: str, meta: dict, flush_secs: float = 1.0,
                 max_pending: int = 200_000, retry_limit: int = 100_000, keys: dict | None = None):
        """`meta` must hold the run's `run_id` (32 hex digits); `keys` are the key ids a
        resumed run already has on disk (new keys get the next ids)."""
        self.path = path
        self.run_id = meta["run_id"]
        self._run_id_bytes = bytes.fromhex(self.run_id)
        self.meta = meta if isinstance(meta, SharedMeta) else SharedMeta(meta)
        self.flush_secs = flush_secs
        self.max_pending = max_pending
        self.retry_limit = retry_limit
        self.stats = WriterStats()
        self._queue: collections.deque = collections.deque()
        self._retry: list = []  # packed records that failed to write
        self._key_ids: dict[str, int] = dict(keys or {})
        self._new_keys: list[tuple[int, str]] = []
        self._keys_good = _whole_lines_size(os.path.join(path, fmt.KEYS_FILE))
        self._segment = 0
        self._fd: int | None = None
        self._good_size = 0
        self._warned: set[str] = set()
        self._wake = threading.Event()
        self._stop = False
        self._final: dict | None = None  # the ending, written by the thread's last flush
        self._final_ok: bool | None = None  # how that last flush went (None: not done)
        self._lock = threading.Lock()  # serialises flushes (thread vs close/signal)
        #: called on this thread after each periodic flush (live diagnosis); never on training's
        self.after_flush: Callable[[], None] | None = None
        os.makedirs(path, exist_ok=True)
        while os.path.exists(self._segment_path()):  # a resumed run: never append to an old segment
            self._segment += 1
        self._write_meta()
        self._thread = threading.Thread(target=self._loop, name="traindoc-writer", daemon=True)
        self._thread.start()

    # ---- called from the training thread -------------------------------------------
    def put(self, item) -> None:
        """Queue a (key, step, wall, value) tuple or a Deferred. Never blocks."""
        if len(self._queue) >= self.max_pending:
            self.stats.count_dropped(1)
            self.warn("queue", "traindoc: writer is behind; dropping records (counted in meta.json)")
            return
        self._queue.append(item)
        if len(self._queue) > self.max_pending // 2:
            self._wake.set()

    def warn(self, kind: str, message: str) -> None:
        """Warn once per kind; remember the message for the metadata."""
        if kind in self._warned:
            return
        self._warned.add(kind)
        self.stats.warnings.append(message)
        try:
            warnings.warn(message, RuntimeWarning, stacklevel=3)
        except Exception:  # warnings turned into errors must not end training
            pass

    def close(self, final_meta: dict, timeout: float = CLOSE_TIMEOUT_SECS) -> bool:
        """Write everything queued and the final metadata, and stop the thread, waiting at
        most `timeout` seconds. True if it all went to disk; False if the thread was stuck:
        then meta.json still says how the run ended (`end_note` says what is missing)."""
        deadline = time.monotonic() + max(0.0, timeout)
        self._final = dict(final_meta)
        self._stop = True
        self._wake.set()
        if threading.current_thread() is self._thread:
            return self._final_flush()
        self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if not self._thread.is_alive():
            # the thread's last flush wrote the records and then the final metadata; anything
            # left (the thread had died, or close was called twice) is written here
            if self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                try:
                    if self._final_ok is None or self._queue or self._retry:
                        self._final_ok = self._final_flush(locked=True)
                    return self._final_ok
                finally:
                    self._lock.release()
        self._mark_ended_without_lock(timeout)
        return False

    def _mark_ended_without_lock(self, timeout: float) -> None:
        """The thread is stuck inside a write and holds the lock: write meta.json's ending from
        this thread (its own temporary file, then an atomic rename). If the thread ever gets
        going again, its meta.json says the same (the ending is in the shared metadata)."""
        unwritten = len(self._queue) + sum(len(p) for p in self._retry) // fmt.RECORD_SIZE
        self.meta.update(self._final or {}, end_note=(
            f"the writer did not finish within {timeout:g} s (stuck in a write); "
            f"{unwritten} queued item(s) and whatever it was writing may be missing"))
        self._write_meta()

    # ---- writer thread --------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop:
            self._wake.wait(self.flush_secs)
            self._wake.clear()
            self.flush()
            if self.after_flush is not None:
                try:
                    self.after_flush()
                except Exception as exc:  # noqa: BLE001 - a watcher's failure never ends training
                    self.warn("after_flush:" + type(exc).__name__, f"traindoc: live diagnosis failed: {exc!r}")
        # close() may have queued the last window while the flush above was running; drain it
        # here, so the values are read back on this thread and not on the training thread that
        # called close() (on a GPU, a sync there); then the final metadata, after the records
        self._final_ok = self._final_flush()

    def _final_flush(self, locked: bool = False) -> bool:
        """The last flush: records, then the final metadata, then the segment closed."""
        if not locked:
            with self._lock:
                return self._final_flush(locked=True)
        errors = self.stats.write_errors
        self._flush_locked(final=True)
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError:
                pass
            self._close_fd()
        ok = self.stats.write_errors == errors and not self._retry
        if ok and "end_note" in self.meta:  # close() had given up on this thread; it caught up
            self.meta["end_note"] = ("close() found the writer stuck in a write; it finished afterwards, "
                                     "and nothing is missing")
            self._write_meta()
        return ok

    def flush(self) -> None:
        """Drain the queue to disk and refresh meta.json. Safe from any thread."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self, final: bool = False) -> None:
        try:
            packed = self._drain()
            try:
                self._write_keys()
            except Exception:
                self._keep_for_retry(packed)
                raise
            self._write_records(packed)
        except Exception as exc:  # a logging failure never ends training
            self.stats.write_errors += 1
            self.warn("flush:" + type(exc).__name__, f"traindoc: could not write run data: {exc!r}")
        if final and self._final is not None:
            self.meta.update(self._final)
        self._write_meta()

    def _drain(self) -> list[bytes]:
        out = self._retry
        self._retry = []
        q = self._queue
        while q:
            item = q.popleft()
            try:
                rows = [(int(step), float(wall), float(value), self._key_id(key))
                        for key, step, wall, value in self._expand(item)]
                if rows:
                    out.append(fmt.pack_records(rows))
            except Exception as exc:
                self.warn("value:" + type(exc).__name__, f"traindoc: could not convert a value: {exc!r}")
        return out

    def _expand(self, item):
        if isinstance(item, Deferred):
            if item.event is not None:
                item.event.synchronize()  # on this thread, never the training thread
            values = stats.resolve(item.tensor).tolist()  # a pending window is computed here
            return [(k, item.step, item.wall, v) for k, v in item.expand(values)]
        return (item,)

    def _key_id(self, key: str) -> int:
        kid = self._key_ids.get(key)
        if kid is None:
            kid = len(self._key_ids)
            self._key_ids[key] = kid
            self._new_keys.append((kid, key))
        return kid

    def _write_keys(self) -> None:
        """Append the new keys' lines to keys.jsonl, whole lines only.

        Keys go to disk before any record that uses them, so a reader never sees a record
        whose key it cannot name. A write that failed part-way (a full disk) leaves half a
        line: it is cut off before the next write, or that key's line would stay unreadable
        and every record of the key would count as corrupt."""
        keys_path = os.path.join(self.path, fmt.KEYS_FILE)
        if self._key_ids and not os.path.exists(keys_path):
            self._new_keys = sorted((i, k) for k, i in self._key_ids.items())  # folder was recreated
            self._keys_good = 0
        if not self._new_keys:
            return
        data = "".join(fmt.key_line(i, k, self.run_id) for i, k in self._new_keys).encode("utf-8")
        self._ensure_dir()
        fd = os.open(keys_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size > self._keys_good:
                os.ftruncate(fd, self._keys_good)  # half a line from a failed write
            elif size < self._keys_good:
                self._keys_good = size  # cut by someone else: go on from what is there
            try:
                _write_all(fd, data)
            except OSError:
                try:
                    os.ftruncate(fd, self._keys_good)  # cutting needs no space: do it now if we can
                except OSError:
                    pass  # and before the next write otherwise
                raise
            self._keys_good += len(data)
        finally:
            os.close(fd)
        self._new_keys = []

    def _write_records(self, packed: list[bytes]) -> None:
        if not packed:
            return
        data = b"".join(packed)
        try:
            fd = self._open_segment()
            n = os.write(fd, data)
            if n != len(data):
                raise OSError(errno.ENOSPC, "short write")
            self._good_size += n
            self.stats.written += n // fmt.RECORD_SIZE
        except OSError as exc:
            self._recover_partial()
            self._keep_for_retry(packed)
            raise exc

    def _keep_for_retry(self, packed: list[bytes]) -> None:
        """Hold records that could not be written, up to a bound; count the rest."""
        data = b"".join(packed)
        n = len(data) // fmt.RECORD_SIZE
        if n > self.retry_limit:
            self.stats.count_dropped(n - self.retry_limit)
            data = data[-self.retry_limit * fmt.RECORD_SIZE:]
        self._retry = [data] if data else []

    def _open_segment(self) -> int:
        if self._fd is not None and os.path.exists(self._segment_path()):
            return self._fd
        if self._fd is not None:  # folder or file vanished under us: start a new segment
            self.warn("vanished", "traindoc: run files disappeared; writing a new segment")
            self._close_fd()
            self._segment += 1
        self._ensure_dir()
        path = self._segment_path()
        while os.path.exists(path):
            self._segment += 1
            path = self._segment_path()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        header = fmt.header_bytes(self._run_id_bytes)
        try:
            if os.write(fd, header) != len(header):
                raise OSError(errno.ENOSPC, "short write of segment header")
        except OSError:
            os.close(fd)
            try:
                os.unlink(path)  # a segment without its whole header is no segment: try again later
            except OSError:
                pass
            raise
        self._fd, self._good_size = fd, len(header)
        return fd

    def _recover_partial(self) -> None:
        """After a failed write, cut the segment back to whole records, or move on."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, self._good_size)
        except OSError:
            self._close_fd()
            self._segment += 1  # next write starts a fresh, aligned segment

    def _close_fd(self) -> None:
        try:
            os.close(self._fd)
        except OSError:
            pass
        self._fd = None

    def _segment_path(self) -> str:
        return os.path.join(self.path, fmt.segment_name(self._segment))

    def _ensure_dir(self) -> None:
        if not os.path.isdir(self.path):
            os.makedirs(self.path, exist_ok=True)

    def _write_meta(self) -> None:
        """Replace meta.json atomically. Called by the writer thread and, when it is stuck,
        by close(): each thread writes its own temporary file."""
        try:
            text = self.meta.to_json(updated=time.time(), records_written=self.stats.written,
                                     records_dropped=self.stats.dropped, write_errors=self.stats.write_errors,
                                     warnings=list(self.stats.warnings))
            self._ensure_dir()
            tmp = os.path.join(self.path, f".{fmt.META_FILE}.{os.getpid()}.{threading.get_ident()}.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, os.path.join(self.path, fmt.META_FILE))
        except Exception as exc:
            self.warn("meta:" + type(exc).__name__, f"traindoc: could not write meta.json: {exc!r}")


def _write_all(fd: int, data: bytes) -> None:
    """os.write until all of `data` is written; a write that takes nothing is a full disk."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.ENOSPC, "no space left for keys.jsonl")
        view = view[n:]


def _whole_lines_size(path: str) -> int:
    """Length of `path` up to its last newline (0 if it does not exist): where a resumed
    run's key lines may be appended."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return 0
    return data.rfind(b"\n") + 1
