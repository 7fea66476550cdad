"""Read run folders into pandas, fully or incrementally. Never imports torch.

`RunReader.poll()` reads only the bytes appended since the last call. A record
cut short by a crash (or still being written) is left for the next poll; a
record whose check word is wrong is skipped and counted, never returned.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import format as fmt
from .crc import crc32_rows
from .series import RunFormatError, RunSeries

RECORD_DTYPE = np.dtype([("step", "<i8"), ("wall", "<f8"), ("value", "<f8"), ("key", "<u4"), ("check", "<u4")])
assert RECORD_DTYPE.itemsize == fmt.RECORD_SIZE


def is_run_dir(path: str) -> bool:
    """True if `path` looks like a traindoc run folder."""
    return os.path.isfile(os.path.join(path, fmt.META_FILE))


@dataclass
class _Segment:
    path: str
    offset: int = 0  # bytes consumed so far, header included
    version: int = 0
    foreign: bool = False  # written by another run (its header names another run id)


@dataclass
class RunReader:
    """Incremental reader of one run folder."""

    path: str
    meta: dict = field(default_factory=dict)
    keys: dict = field(default_factory=dict)  # id -> name
    corrupt_records: int = 0
    foreign_records: int = 0  # from another run id: never returned
    _segments: dict = field(default_factory=dict)
    _keys_offset: int = 0
    _chunks: list = field(default_factory=list)
    _pending_unknown: list = field(default_factory=list)
    _frame: pd.DataFrame | None = None

    def __post_init__(self):
        if not os.path.isdir(self.path):
            raise RunFormatError(f"not a folder: {self.path}")
        if not is_run_dir(self.path):
            raise RunFormatError(f"no {fmt.META_FILE} in {self.path}: not a traindoc run (or it is still starting)")

    # ---- reading --------------------------------------------------------------------
    def poll(self) -> int:
        """Read what was appended since the last poll. Returns the number of new records."""
        self._read_meta()
        self._read_keys()
        new = []
        retry = self._pending_unknown  # records whose key was not yet known last time
        self._pending_unknown = []
        for seg_path in sorted(glob.glob(os.path.join(self.path, fmt.SEGMENT_GLOB))):
            seg = self._segments.setdefault(seg_path, _Segment(seg_path))
            arr = self._read_segment(seg)
            if arr is not None and len(arr):
                new.append(arr)
        if not new and not retry:
            return 0
        arr = np.concatenate(retry + new)
        known = np.isin(arr["key"], np.fromiter(self.keys.keys(), dtype=np.uint32, count=len(self.keys)))
        if not known.all():
            # keys.jsonl is written before the records, so an unknown key is a copy that
            # lags (one more poll) or corruption (counted).
            n_retry = sum(len(r) for r in retry)
            unknown_old = ~known[:n_retry]
            self.corrupt_records += int(unknown_old.sum())
            fresh = np.zeros(len(arr), dtype=bool)
            fresh[n_retry:] = ~known[n_retry:]
            if fresh.any():
                self._pending_unknown.append(arr[fresh])
            arr = arr[known]
        if len(arr):
            self._chunks.append(arr)
            self._frame = None
        return int(len(arr))

    def _read_meta(self) -> None:
        p = os.path.join(self.path, fmt.META_FILE)
        try:
            with open(p, "rb") as f:
                meta = json.loads(f.read().decode("utf-8"))
        except (OSError, ValueError) as exc:
            if self.meta:  # keep the last good copy; meta.json is replaced atomically
                return
            raise RunFormatError(f"unreadable {fmt.META_FILE} in {self.path}: {exc}") from None
        if not isinstance(meta, dict):
            raise RunFormatError(f"{fmt.META_FILE} in {self.path} is not a JSON object")
        version = meta.get("schema_version")
        if not isinstance(version, int) or version > fmt.SCHEMA_VERSION:
            raise RunFormatError(
                f"{self.path} has schema version {version!r}; this traindoc reads up to "
                f"{fmt.SCHEMA_VERSION}: upgrade traindoc")
        self.meta = meta

    def _read_keys(self) -> None:
        p = os.path.join(self.path, fmt.KEYS_FILE)
        try:
            with open(p, "rb") as f:
                f.seek(self._keys_offset)
                data = f.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1  # a line without its newline is not finished yet
        run_id = self.meta.get("run_id")
        for line in data[:end].splitlines():
            verdict, kid, key = fmt.parse_key_line(line, run_id)
            if verdict == "ok":
                self.keys[kid] = key
            elif verdict == "foreign":
                self.foreign_records += 1  # a key line of another run that used this folder
            else:
                self.corrupt_records += 1
        self._keys_offset += end

    def _read_segment(self, seg: _Segment):
        try:
            with open(seg.path, "rb") as f:
                if seg.offset == 0 and not self._read_header(seg, f):
                    return None  # header not written yet
                f.seek(seg.offset)
                data = f.read()
        except OSError:
            return None
        n = len(data) // fmt.RECORD_SIZE
        if n == 0:
            return None
        seg.offset += n * fmt.RECORD_SIZE
        if seg.foreign:
            self.foreign_records += n
            return None
        arr = np.frombuffer(data, dtype=RECORD_DTYPE, count=n)
        good = _check_ok(data, n, seg.version)
        if not good.all():
            self.corrupt_records += int((~good).sum())
            arr = arr[good]
        return arr

    def _read_header(self, seg: _Segment, f) -> bool:
        head = f.read(fmt.HEADER_V2_SIZE)
        if len(head) < fmt.HEADER_SIZE:
            return False
        magic, version, size = fmt.HEADER.unpack(head[:fmt.HEADER_SIZE])
        if magic != fmt.MAGIC or size != fmt.RECORD_SIZE:
            raise RunFormatError(f"{seg.path}: not a traindoc scalar segment")
        if version > fmt.SCHEMA_VERSION:
            raise RunFormatError(f"{seg.path}: schema version {version} is newer than this traindoc")
        if version >= 2:
            if len(head) < fmt.HEADER_V2_SIZE:
                return False
            run_id = self.meta.get("run_id")
            seg.foreign = run_id is not None and head[fmt.HEADER_SIZE:].hex() != run_id
            seg.offset = fmt.HEADER_V2_SIZE
        else:
            seg.offset = fmt.HEADER_SIZE
        seg.version = version
        return True

    # ---- results --------------------------------------------------------------------
    @property
    def frame(self) -> pd.DataFrame:
        """All records so far: columns step, wall, key (categorical), value."""
        if self._frame is None:
            if self._chunks:
                arr = np.concatenate(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
                self._chunks = [arr]
            else:
                arr = np.zeros(0, dtype=RECORD_DTYPE)
            ids = sorted(self.keys)
            cats = pd.Categorical.from_codes(
                np.searchsorted(np.asarray(ids, dtype=np.int64), arr["key"].astype(np.int64)),
                categories=[self.keys[i] for i in ids]) if ids else pd.Categorical([])
            self._frame = pd.DataFrame({"step": arr["step"], "wall": arr["wall"], "key": cats,
                                        "value": arr["value"]})
        return self._frame

    def series(self) -> "RunSeries":
        """The run's series, keyed by name."""
        return RunSeries.from_frame(self.frame, self.meta, self.path)

    @property
    def records(self) -> int:
        """Records read so far."""
        return sum(len(c) for c in self._chunks)

    @property
    def problems(self) -> list[str]:
        """One line about what could not be read, if anything."""
        out = [f"{self.corrupt_records} corrupt record(s) skipped"] if self.corrupt_records else []
        if self.foreign_records:
            out.append(f"{self.foreign_records} record(s) of another run in this folder ignored")
        return out


def _check_ok(data: bytes, n: int, version: int) -> np.ndarray:
    """Which of `n` records pass their check: CRC-32 from version 2, salted parity before."""
    raw = np.frombuffer(data, dtype=np.uint8, count=n * fmt.RECORD_SIZE).reshape(n, fmt.RECORD_SIZE)
    stored = raw[:, fmt.CHECKED:].copy().view("<u4").reshape(n)
    if version >= 2:
        return crc32_rows(raw[:, :fmt.CHECKED], fmt.CHECK_SALT) == stored
    words = raw[:, :fmt.CHECKED].copy().view("<u4").reshape(n, 7)
    return (np.bitwise_xor.reduce(words, axis=1) ^ np.uint32(fmt.CHECK_SALT)) == stored


def read_run(path: str) -> RunSeries:
    """Load a whole local run folder (an s3:// URL is resolved to its mirror by the caller:
    `traindoc.remote.local_root`)."""
    r = RunReader(path)
    r.poll()
    return r.series()
