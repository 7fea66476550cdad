"""Background writer: the training thread hands records over, this thread writes them.

The training thread only ever appends to a deque (no lock, no I/O, no device
sync). A daemon thread drains it every `flush_secs`, turns deferred device
values into floats, and appends whole 32-byte records to the current segment.
Any OS error is reported once and never reaches the training thread.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from traindoc import format as fmt

from . import stats


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


class RunWriter:
    """Owns the run folder's files. Only this thread touches them after start."""

    def __init__(self, path: str, meta: dict, flush_secs: float = 1.0,
                 max_pending: int = 200_000, retry_limit: int = 100_000, keys: dict | None = None):
        """`meta` must hold the run's `run_id` (32 hex digits); `keys` are the key ids a
        resumed run already has on disk (new keys get the next ids)."""
        self.path = path
        self.run_id = meta["run_id"]
        self._run_id_bytes = bytes.fromhex(self.run_id)
        self.meta = meta
        self.flush_secs = flush_secs
        self.max_pending = max_pending
        self.retry_limit = retry_limit
        self.stats = WriterStats()
        self._queue: collections.deque = collections.deque()
        self._retry: list = []  # packed records that failed to write
        self._key_ids: dict[str, int] = dict(keys or {})
        self._new_keys: list[tuple[int, str]] = []
        self._segment = 0
        self._fd: int | None = None
        self._good_size = 0
        self._warned: set[str] = set()
        self._wake = threading.Event()
        self._stop = False
        self._lock = threading.Lock()  # serialises flushes (thread vs close/signal)
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
            self.stats.dropped += 1
            if self.stats.dropped == 1:
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

    def close(self, final_meta: dict) -> None:
        """Write everything queued, the final metadata, and stop the thread."""
        self._stop = True
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=30)
        self.meta.update(final_meta)
        self.flush()
        with self._lock:
            if self._fd is not None:
                try:
                    os.fsync(self._fd)
                    os.close(self._fd)
                except OSError:
                    pass
                self._fd = None

    # ---- writer thread --------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop:
            self._wake.wait(self.flush_secs)
            self._wake.clear()
            self.flush()
        # close() may have queued the last window while the flush above was running; drain it
        # here, so the values are read back on this thread and not on the training thread that
        # called close() (on a GPU, a sync there)
        self.flush()

    def flush(self) -> None:
        """Drain the queue to disk and refresh meta.json. Safe from any thread."""
        with self._lock:
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
        # Keys go to disk before any record that uses them, so a reader never sees
        # a record whose key it cannot name.
        keys_path = os.path.join(self.path, fmt.KEYS_FILE)
        if self._key_ids and not os.path.exists(keys_path):
            self._new_keys = sorted((i, k) for k, i in self._key_ids.items())  # folder was recreated
        if not self._new_keys:
            return
        text = "".join(fmt.key_line(i, k, self.run_id) for i, k in self._new_keys)
        self._ensure_dir()
        with open(keys_path, "a", encoding="utf-8") as f:
            f.write(text)
        self._new_keys = []

    def _write_records(self, packed: list[bytes]) -> None:
        if not packed:
            return
        data = b"".join(packed)
        try:
            fd = self._open_segment()
            n = os.write(fd, data)
            if n != len(data):
                raise OSError(28, "short write")
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
            self.stats.dropped += n - self.retry_limit
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
        if os.write(fd, header) != len(header):
            os.close(fd)
            raise OSError(28, "short write of segment header")
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
        self.meta["updated"] = time.time()
        self.meta["records_written"] = self.stats.written
        self.meta["records_dropped"] = self.stats.dropped
        self.meta["write_errors"] = self.stats.write_errors
        self.meta["warnings"] = list(self.stats.warnings)
        try:
            self._ensure_dir()
            tmp = os.path.join(self.path, f".{fmt.META_FILE}.{os.getpid()}.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self.meta, f, indent=1, default=str, allow_nan=True)
            os.replace(tmp, os.path.join(self.path, fmt.META_FILE))
        except Exception as exc:
            self.warn("meta:" + type(exc).__name__, f"traindoc: could not write meta.json: {exc!r}")
