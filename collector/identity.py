"""Which folder a run writes to, its id, and where a resumed run left off.

A name already taken gets the next free `name-2`, `name-3`, ... (claimed with an atomic
mkdir, so two processes never share one), unless the run is resumed: then it continues
the folder's own run, with its id and key ids, from its last step, in new segments.
Stdlib only (no pandas): this runs in the training process.
"""

from __future__ import annotations

import glob
import json
import os
import re
import struct
import time
import uuid
from dataclasses import dataclass, field

from traindoc import format as fmt

_NAME_OK = re.compile(r"[^A-Za-z0-9._+=@-]+")
_TAIL_RECORDS = 4096  # records read from the end of each segment to find the last step


def safe_name(name: str) -> str:
    """A run name usable as a folder name."""
    cleaned = _NAME_OK.sub("_", str(name)).strip("._")
    if not cleaned:
        raise ValueError(f"traindoc: run name {name!r} has no usable characters")
    return cleaned


@dataclass
class Claim:
    """A run folder this process may write: new, or an earlier run to continue."""

    name: str
    path: str
    run_id: str
    resumed: dict | None = None  # the old meta.json, when resuming
    keys: dict = field(default_factory=dict)  # key -> id already on disk
    step: int = 0
    epoch: int = 0


def claim(root: str, name: str, resume: bool) -> Claim:
    """Create (or, with `resume`, reopen) the run folder for `name` under `root`."""
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, name)
    if resume and os.path.isfile(os.path.join(path, fmt.META_FILE)):
        reopened = _reopen(name, path)
        if reopened is not None:
            return reopened
    for n in range(1, 100_000):
        candidate = name if n == 1 else f"{name}-{n}"
        path = os.path.join(root, candidate)
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        return Claim(candidate, path, uuid.uuid4().hex)
    raise RuntimeError(f"traindoc: no free run name left for {name!r} in {root!r}")


def _reopen(name: str, path: str) -> Claim | None:
    """The state of an earlier run in `path`, or None if it was written by a traindoc
    without run ids (then a new run is started beside it)."""
    with open(os.path.join(path, fmt.META_FILE), encoding="utf-8") as f:
        meta = json.load(f)
    run_id = meta.get("run_id")
    if not isinstance(run_id, str):
        return None
    keys = {}
    try:
        with open(os.path.join(path, fmt.KEYS_FILE), "rb") as f:
            data = f.read()
        for line in data[:data.rfind(b"\n") + 1].splitlines():
            verdict, kid, key = fmt.parse_key_line(line, run_id)
            if verdict == "ok":
                keys[key] = kid
    except OSError:
        pass
    step = max(_last_step(path, run_id), int(meta.get("steps") or 0))
    return Claim(name, path, run_id, resumed=meta, keys=keys, step=step, epoch=int(meta.get("epochs") or 0))


def _last_step(path: str, run_id: str) -> int:
    """Largest step among the valid records at the end of each segment of this run."""
    best = 0
    for seg in glob.glob(os.path.join(path, fmt.SEGMENT_GLOB)):
        try:
            with open(seg, "rb") as f:
                head = f.read(fmt.HEADER_V2_SIZE)
                if len(head) < fmt.HEADER_V2_SIZE or head[fmt.HEADER_SIZE:].hex() != run_id:
                    continue
                size = os.fstat(f.fileno()).st_size
                n = (size - fmt.HEADER_V2_SIZE) // fmt.RECORD_SIZE
                first = max(0, n - _TAIL_RECORDS)
                f.seek(fmt.HEADER_V2_SIZE + first * fmt.RECORD_SIZE)
                data = f.read((n - first) * fmt.RECORD_SIZE)
        except OSError:
            continue
        for i in range(0, len(data), fmt.RECORD_SIZE):
            body, check = data[i:i + fmt.CHECKED], data[i + fmt.CHECKED:i + fmt.RECORD_SIZE]
            if struct.unpack("<I", check)[0] == fmt.check_word(body):
                best = max(best, struct.unpack_from("<q", body)[0])
    return best


def resumed_meta(meta: dict, fresh: dict, step: int) -> dict:
    """An earlier run's metadata, continued: same id, name and start; this process's
    details; the resume noted in `resumed`."""
    out = dict(meta)
    for k in ("status", "end_time", "end_reason", "host", "pid", "python", "torch_version", "device",
              "world_size", "argv", "git_commit", "log_every", "ratio_every", "ranks"):
        if k in fresh:
            out[k] = fresh[k]
    out.pop("end_reason", None)  # the earlier ending is history now
    out["config"] = {**meta.get("config", {}), **fresh.get("config", {})}
    out["resumed"] = list(meta.get("resumed", [])) + [{"time": time.time(), "step": step, "pid": os.getpid()}]
    return out
