"""Event files (TFRecord framing of Event protos), read from a byte offset onwards.

A record is: length u64 | masked CRC of the length u32 | Event bytes | masked CRC u32,
the CRCs being CRC-32C (Castagnoli, computed by the C-backed `crc32c` package) rotated
and offset as TFRecord does. Both are verified, as TensorBoard's own loader does.
Reading stops before a record that is not complete yet (a live file, or a crash), and
remembers where, so the next read resumes there. A record whose payload fails its CRC
or does not decode is skipped and counted, never returned; a length that fails its CRC
(or is impossible) ends the file's readable part, since no later record boundary can be
trusted, and the rest is reported, never raised.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np
from crc32c import crc32c
from google.protobuf.message import DecodeError
from tensorboard.compat.proto import event_pb2, types_pb2

from traindoc.crc import crc32c_rows

HEADER = 12
FOOTER = 4
MAX_RECORD = 1 << 28  # 256 MB: anything larger is a corrupt length, not a scalar event
_FLOAT_DTYPES = {types_pb2.DT_FLOAT: "<f4", types_pb2.DT_DOUBLE: "<f8", types_pb2.DT_HALF: "<f2",
                 types_pb2.DT_BFLOAT16: None, types_pb2.DT_INT32: "<i4", types_pb2.DT_INT64: "<i8"}


@dataclass
class Chunk:
    """Scalars decoded from one read of one file."""

    tags: list = field(default_factory=list)  # tag per point
    steps: list = field(default_factory=list)
    walls: list = field(default_factory=list)
    values: list = field(default_factory=list)
    corrupt_records: int = 0
    unreadable_from: int | None = None  # byte offset where an impossible record starts
    end: int = 0  # offset after the last complete record
    size: int = 0


def masked_crc(data) -> int:
    """TFRecord's masked CRC-32C of `data`."""
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_scalars(data: bytes, start: int = 0, base: int = 0) -> Chunk:
    """Decode the complete records of `data[start:]`; `base` is data's offset in the file.

    In passes, so that the per-record Python work is small: walk the lengths; check every
    header's CRC at once in numpy; check the payloads' CRCs in one comprehension; then
    parse what passed."""
    out = Chunk(size=base + len(data))
    n = len(data)
    unpack = struct.unpack_from
    starts, pos, stop = [], start, None
    while pos + HEADER <= n:
        (length,) = unpack("<Q", data, pos)
        if length > MAX_RECORD:
            stop = pos  # impossible, whatever its CRC says
            break
        end = pos + HEADER + length + FOOTER
        if end > n:
            if not _header_ok(data, pos):
                stop = pos  # a damaged length, not a record still being written
            break
        starts.append(pos)
        pos = end
    if starts:
        first_bad = _first_bad_header(data, starts)
        if first_bad is not None:
            stop, starts = starts[first_bad], starts[:first_bad]
    if stop is not None:
        out.unreadable_from = base + stop
    out.end = base + (stop if stop is not None else pos)
    if not starts:
        return out
    view = memoryview(data)
    lengths = [unpack("<Q", data, p)[0] for p in starts]
    crcs = np.fromiter((crc32c(view[p + HEADER:p + HEADER + k]) for p, k in zip(starts, lengths)), dtype=np.uint32,
                       count=len(starts))
    raw = np.frombuffer(data, dtype=np.uint8)
    foot = np.asarray(starts, dtype=np.int64) + HEADER + np.asarray(lengths, dtype=np.int64)
    stored = raw[foot[:, None] + np.arange(4)].copy().view("<u4").reshape(-1)
    good = _mask(crcs) == stored
    out.corrupt_records += int((~good).sum())
    parse = event_pb2.Event.FromString
    tags, steps, walls, values = out.tags, out.steps, out.walls, out.values
    for p, k, ok in zip(starts, lengths, good.tolist()):
        if not ok:
            continue
        try:
            ev = parse(view[p + HEADER:p + HEADER + k])
        except DecodeError:
            out.corrupt_records += 1
            continue
        summary = ev.summary.value  # empty for events without a summary (file version, graph)
        if not summary:
            continue
        step, wall = ev.step, ev.wall_time
        for v in summary:
            # torch and tensorboardX write simple_value: the common case, without a call
            x = v.simple_value if v.WhichOneof("value") == "simple_value" else _scalar(v)
            if x is not None:
                tags.append(v.tag)
                steps.append(step)
                walls.append(wall)
                values.append(x)
    return out


def _mask(crc: np.ndarray) -> np.ndarray:
    """TFRecord's masking of CRC-32C values, vectorised (uint32 arithmetic wraps)."""
    return ((crc >> np.uint32(15)) | (crc << np.uint32(17))) + np.uint32(0xA282EAD8)


def _header_ok(data: bytes, pos: int) -> bool:
    return masked_crc(data[pos:pos + 8]) == struct.unpack_from("<I", data, pos + 8)[0]


def _first_bad_header(data: bytes, starts: list) -> int | None:
    """Index of the first record whose length fails its CRC, or None: all headers at once."""
    raw = np.frombuffer(data, dtype=np.uint8)
    heads = raw[np.asarray(starts, dtype=np.int64)[:, None] + np.arange(HEADER)]
    stored = heads[:, 8:].copy().view("<u4").reshape(-1)
    bad = np.flatnonzero(_mask(crc32c_rows(heads[:, :8])) != stored)
    return int(bad[0]) if len(bad) else None


def _scalar(v) -> float | None:
    """The value of a scalar summary: simple_value (torch, tensorboardX) or a 0-d tensor (TF2/Keras)."""
    kind = v.WhichOneof("value")
    if kind == "simple_value":
        return v.simple_value
    if kind != "tensor":
        return None
    t = v.tensor
    if t.tensor_shape.dim and any(d.size != 1 for d in t.tensor_shape.dim):
        return None  # not a scalar (histograms, images, text)
    plugin = v.metadata.plugin_data.plugin_name
    if plugin and plugin != "scalars":
        return None
    if t.float_val:
        return float(t.float_val[0])
    if t.double_val:
        return float(t.double_val[0])
    if t.int_val:
        return float(t.int_val[0])
    if t.int64_val:
        return float(t.int64_val[0])
    if t.tensor_content:
        dt = _FLOAT_DTYPES.get(t.dtype)
        if dt is not None:
            return float(np.frombuffer(t.tensor_content, dtype=dt, count=1)[0])
    return None
