"""The app's only way to the disk: runs under ROOT, read incrementally, diagnosed once per change.

Run names and paths come from the run provider of ROOT (`traindoc.provider`): a name from
the URL is only ever looked up in its list, never joined onto a path, and runs whose real
path leaves ROOT (symlinks) are not listed at all.
"""

from __future__ import annotations

import os
import threading
import itertools
from dataclasses import dataclass, field, replace

from traindoc import remote
from traindoc.discovery import open_reader
from traindoc.catalog.summary import is_text
from traindoc.provider import provider_for
from traindoc.series import RunFormatError, RunSeries
from traindoc.rules import curve_gaps, diagnose_run, series_found



#: How often the dashboard brings its mirror of an s3:// root up to date.
REMOTE_SYNC_SECS = 2.0


def root_dir() -> str:
    """ROOT, as given to `traindoc serve` (environment TRAINDOC_ROOT). For an s3:// root
    (TRAINDOC_REMOTE), its local mirror, synced when it is older than REMOTE_SYNC_SECS; a
    store that cannot be reached leaves the mirror as it was."""
    url = os.environ.get("TRAINDOC_REMOTE")
    if url:
        try:
            return remote.local_root(url, max_age=REMOTE_SYNC_SECS)
        except Exception:  # noqa: BLE001 - show what was mirrored last
            return remote.mirror_path(url)
    return os.path.realpath(os.environ.get("TRAINDOC_ROOT", "runs"))


def discover(root: str) -> dict[str, str]:
    """name -> path of every run under ROOT, from the run provider (the catalog's listing,
    brought up to date): names are paths relative to ROOT with '/'; runs whose real path leaves
    ROOT are not listed, nor are names with bytes that are not UTF-8 (a page can neither show
    nor link them; the runs page warns about them by name, with those bytes escaped)."""
    return {n: p for n, p in provider_for(root).list_runs().items() if is_text(n)}


_VERSIONS = itertools.count()


@dataclass
class Loaded:
    """A run as the pages see it: its series and findings, or why it cannot be shown."""

    name: str
    path: str
    series: RunSeries | None = None
    findings: list | None = None
    error: str | None = None
    skipped: list | None = None  # rules that could not run, and what they lacked
    diagnosed: bool = False  # some curve rule ran: only then may the page say "no problems"
    records: int = 0
    problems: list | None = None  # parts of the input that could not be read
    #: New for every read that brought new data (or a new mapping): what cached views key on.
    version: int = field(default_factory=lambda: next(_VERSIONS))


class RunStore:
    """Incremental readers, one per run folder, shared by every browser session."""

    def __init__(self):
        self._lock = threading.Lock()
        self._readers: dict[str, tuple[threading.Lock, object, Loaded | None]] = {}

    def forget(self, path: str) -> None:
        """Drop the reader of `path`: the next load reads it afresh (after its mapping changed)."""
        with self._lock:
            self._readers.pop(path, None)

    def load(self, name: str, path: str) -> Loaded:
        """Poll the run for new bytes; re-diagnose only if something arrived."""
        with self._lock:
            entry = self._readers.setdefault(path, (threading.Lock(), None, None))
        lock = entry[0]
        with lock:
            _, reader, last = self._readers[path]
            try:
                if reader is None:
                    reader = open_reader(path)
                new = reader.poll()
                if last is not None and last.error is None and new == 0:
                    last.series.meta = reader.meta  # status and heartbeat may have changed
                    result = last
                else:
                    series = reader.series()
                    d = diagnose_run(series)
                    result = Loaded(name, path, series, d.findings, records=reader.records,
                                    problems=list(reader.problems), skipped=d.skipped, diagnosed=d.diagnosed)
            except (RunFormatError, OSError, ValueError) as exc:
                result = Loaded(name, path, error=str(exc))
                reader = None  # start over next time (the run may still be starting)
            self._readers[path] = (lock, reader, result)
            return result


_SHARED_LOCK = threading.Lock()
_STORE: RunStore | None = None


def shared_store() -> RunStore:
    """The process's one store: the Streamlit pages and the run page's HTTP routes share it."""
    global _STORE
    with _SHARED_LOCK:
        if _STORE is None:
            _STORE = RunStore()
        return _STORE


def shared_catalog(root: str):
    """One run catalog per root for the whole process (it serialises its own refreshes)."""
    return provider_for(root).catalog


def with_siblings(root: str, name: str, path: str) -> Loaded:
    """The run as loaded, with the findings the run catalog of `root` gives it: its own and what
    the runs in its folder add (sweeps, the task's ceiling). The catalog reads only what changed;
    a run alone in its folder has no siblings, and skips it."""
    ld = shared_store().load(name, path)
    if ld.error:
        return ld
    folder = os.path.dirname(os.path.normpath(path))
    runs = provider_for(root).list_runs(refresh=False)
    if sum(os.path.dirname(os.path.normpath(p)) == folder for p in runs.values()) < 2:
        return ld
    cat = shared_catalog(root)
    cat.refresh(folder=folder)
    final = cat.findings_of(name)
    return ld if final is None else replace(ld, findings=final)


def not_diagnosed_text(ld: Loaded) -> str:
    """Why a run was not diagnosed: what the curve rules lacked, and what the run has."""
    lacks = curve_gaps(ld.skipped or [])
    found = series_found(ld.series) if ld.series is not None else []
    return f"missing {', '.join(lacks)}; found: {', '.join(found) or 'no series'}"
