"""Change detection: whether a run's files changed since it was indexed (a signature of sizes
and mtimes; one stat for a settled run) and whether a root's folders did (its skeleton)."""

from __future__ import annotations

import hashlib
import os
import time

from .. import format as fmt

def _parent_overrides(path: str) -> str:
    """Size and mtime of the override files in a run's parent folder, which its reader also reads."""
    parent = os.path.dirname(os.path.normpath(path))
    out = []
    for name in fmt.OVERRIDE_FILES:
        try:
            s = os.stat(os.path.join(parent, name))
        except OSError:
            continue
        out.append(f"../{name}:{s.st_size}:{s.st_mtime_ns}")
    return ";".join(out)


def signature(path: str) -> str:
    """Size and mtime of every file of a run (three folder levels deep: TensorBoard split folders,
    Hugging Face checkpoints) and of the override files beside it, as one short hash. The same
    files unchanged give the same signature."""
    h = hashlib.sha1()
    try:
        st = os.stat(path)
    except OSError:
        return "gone"
    beside = _parent_overrides(path)
    if not os.path.isdir(path):
        return f"{st.st_size}:{st.st_mtime_ns}" + (f";{beside}" if beside else "")
    h.update(beside.encode("utf-8", "replace"))
    stack = [(path, 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    if depth < 2:
                        stack.append((e.path, depth + 1))
                    continue
                s = e.stat(follow_symlinks=False)
            except OSError:
                continue
            h.update(f"{os.path.relpath(e.path, path)}\0{s.st_size}\0{s.st_mtime_ns}\n".encode("utf-8", "replace"))
    return h.hexdigest()[:20]


#: Statuses of runs that no longer write: only new files or a rewritten meta.json (a resume)
#: change them, and either changes their folder's mtime, so one stat tells.
SETTLED = ("finished", "crashed")


def quick(path: str) -> int | None:
    """The mtime of a run's folder (or file): enough to tell that a settled run did not change."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def unchanged(skeleton: dict) -> bool:
    """True when every folder of the skeleton still has the mtime it had."""
    for path, mtime in skeleton.items():
        try:
            if os.stat(path).st_mtime_ns != mtime:
                return False
        except OSError:
            return False
    return True




def went_quiet(old: tuple) -> bool:
    """A log of another tool indexed while it was being written (status running) whose files
    have not changed since it went quiet: read again once, so it says ended / no end marker
    instead of standing as a stale run for ever (such logs have no heartbeat)."""
    _sig, _version, _path, quick, status, updated = old
    return status == fmt.STATUS_RUNNING and quick is None and (updated or 0) < time.time() - fmt.LIVE_SECS
