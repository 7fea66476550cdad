"""Where a run goes: a run folder on a local disk, or one spooled locally and uploaded to an
object store. The `Run` talks only to its sink.

Every sink has one `finalize(status)`: it marks how the run ended and closes the files (and
ships what it can), within a bound, once (a second call does nothing), and never raises into
the training loop, so it is safe from a signal handler, at exit, and after a crash.
"""

from __future__ import annotations

import os
import threading
import time
import warnings

from traindoc import remote

from .writer import CLOSE_TIMEOUT_SECS, RunWriter, SharedMeta

#: How long finalize() tries to finish uploading a run written to an s3:// root.
UPLOAD_WAIT_SECS = 15.0


def local_root(root: str) -> tuple[str, str | None]:
    """(the local folder runs are written into, the s3:// root they are uploaded to or None)."""
    if remote.is_remote(root):
        url = str(root).rstrip("/")
        return remote.spool_root(url), url
    return str(root), None


def open_sink(path: str, meta: dict, url: str | None = None, *, flush_secs: float = 1.0,
              max_pending: int = 200_000, keys: dict | None = None,
              close_timeout: float = CLOSE_TIMEOUT_SECS, upload_wait: float = UPLOAD_WAIT_SECS) -> "LocalSink":
    """A sink writing the run folder `path` (claimed already), uploaded to `url`/<name> if `url`."""
    options = dict(flush_secs=flush_secs, max_pending=max_pending, keys=keys, close_timeout=close_timeout)
    if url:
        return S3Sink(path, meta, f"{url}/{os.path.basename(path)}", upload_wait=upload_wait, **options)
    return LocalSink(path, meta, **options)


class LocalSink:
    """A run folder on a local disk, written by a background `RunWriter`."""

    def __init__(self, path: str, meta: dict, *, flush_secs: float = 1.0, max_pending: int = 200_000,
                 keys: dict | None = None, close_timeout: float = CLOSE_TIMEOUT_SECS):
        self.path = path
        self.close_timeout = float(close_timeout)
        self.writer = RunWriter(path, meta, flush_secs=flush_secs, max_pending=max_pending, keys=keys)
        self._once = threading.Lock()  # taken by the first finalize() and never released
        self.finalized: bool | None = None  # finalize()'s result, once it returned

    @property
    def meta(self) -> SharedMeta:
        """The run's metadata; safe to change from the training thread."""
        return self.writer.meta

    @property
    def remote(self) -> str | None:
        """Where the run goes on an object store (None: nowhere but here)."""
        return None

    def put(self, record) -> None:
        """Hand a record (or a `Deferred`) to the writer. Never blocks."""
        self.writer.put(record)

    def warn(self, kind: str, message: str) -> None:
        self.writer.warn(kind, message)

    def flush(self) -> None:
        self.writer.flush()

    def finalize(self, status: str, details: dict | None = None, wait: bool = True,
                 timeout: float | None = None) -> bool:
        """Mark the run `status` (with `details` in meta.json) and close its files, within
        `timeout` seconds (default: the sink's `close_timeout`). True if everything was
        written. Only the first call does anything; it never raises."""
        if not self._once.acquire(blocking=False):
            return bool(self.finalized)
        bound = self.close_timeout if timeout is None else max(0.0, min(timeout, self.close_timeout))
        try:
            self.finalized = self._finalize(status, details or {}, wait, bound)
        except Exception as exc:  # noqa: BLE001 - nothing in shutdown may reach training
            self.finalized = False
            _warn_safely(self, "finalize", f"traindoc: could not finish the run at {self.path!r}: {exc!r}")
        return self.finalized

    def _finalize(self, status: str, details: dict, wait: bool, bound: float) -> bool:
        return self.writer.close({"status": status, **details}, timeout=bound)


class S3Sink(LocalSink):
    """A run folder written to a local spool and shipped to `url` by a background
    `remote.Uploader`; what the store does not take stays spooled for `traindoc push`."""

    def __init__(self, path: str, meta: dict, url: str, *, upload_wait: float = UPLOAD_WAIT_SECS, **options):
        self.url = url
        self.upload_wait = float(upload_wait)
        super().__init__(path, {**meta, "remote": url}, **options)
        self.uploader = None
        try:
            self.uploader = remote.Uploader(path, url, interval=max(0.5, 2 * self.writer.flush_secs),
                                            warn=lambda m: self.warn("remote-name", m)).start()
        except Exception as exc:  # noqa: BLE001 - still written to the spool: `traindoc push` sends it
            self.warn("upload", f"traindoc: cannot upload to {url}: {exc!r}; the run stays spooled at {path}")

    @property
    def remote(self) -> str:
        """`url`, or `url-N` when another machine's run already owned the name (known once the
        uploader reached the store)."""
        return (self.uploader.target if self.uploader is not None else None) or self.url

    def _finalize(self, status: str, details: dict, wait: bool, bound: float) -> bool:
        """The local files first (within `bound`), then the last upload: within `upload_wait`
        seconds, none at all without `wait` (from a signal handler or at exit)."""
        written = super()._finalize(status, details, wait, bound)
        return self._last_upload(self.upload_wait if wait else 0.0) and written

    def _last_upload(self, wait: float) -> bool:
        """`Uploader.stop` in a helper thread, waited for at most `wait` seconds (a store that
        accepts connections and never answers would hold stop() far longer). If it is not done
        by then, it goes on in the background while the process lives."""
        if self.uploader is None:
            return False
        result: list = []

        def stop() -> None:
            try:
                result.append(self.uploader.stop(wait=wait))
            except Exception as exc:  # noqa: BLE001
                result.append(False)
                self.uploader.last_error = self.uploader.last_error or repr(exc)

        helper = threading.Thread(target=stop, name="traindoc-last-upload", daemon=True)
        started = time.monotonic()
        helper.start()
        helper.join(timeout=max(wait, 0.2))
        if result and result[0]:
            return True
        took = time.monotonic() - started
        self.warn("upload", f"traindoc: {self.path} is not all on {self.remote} yet after {took:.1f} s "
                            f"({self.uploader.last_error or 'store not reachable'}); it stays spooled: "
                            "run `traindoc push` to send it")
        return False


def _warn_safely(sink: LocalSink, kind: str, message: str) -> None:
    try:
        sink.warn(kind, message)
    except Exception:  # noqa: BLE001
        try:
            warnings.warn(message, RuntimeWarning, stacklevel=3)
        except Exception:  # warnings turned into errors must not end training
            pass
