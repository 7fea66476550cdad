"""Event files (TFRecord framing of Event protos), read from a byte offset onwards.

A record is: length u64 | masked CRC of the length u32 | Event bytes | masked CRC u32.
Reading stops before a record that is not complete yet (a live file, or a crash), and
remembers where, so the next read resumes there. A record whose bytes do not decode is
skipped and counted; an impossible length ends the file's readable part, and the rest
is reported, never raised.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np
from google.protobuf.message import DecodeError
from tensorboard.compat.proto import event_pb2, types_pb2

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


def read_scalars(data: bytes, start: int = 0, base: int = 0) -> Chunk:
    """Decode the complete records of `data[start:]`; `base` is data's offset in the file."""
    out = Chunk(size=base + len(data))
    pos, n = start, len(data)
    unpack = struct.unpack_from
    parse = event_pb2.Event.FromString
    tags, steps, walls, values = out.tags, out.steps, out.walls, out.values
    while pos + HEADER <= n:
        (length,) = unpack("<Q", data, pos)
        if length > MAX_RECORD:
            out.unreadable_from = base + pos
            break
        end = pos + HEADER + length + FOOTER
        if end > n:
            break  # not written completely (yet)
        try:
            ev = parse(data[pos + HEADER:pos + HEADER + length])
        except DecodeError:
            out.corrupt_records += 1
            pos = end
            continue
        if ev.HasField("summary"):
            for v in ev.summary.value:
                x = _scalar(v)
                if x is not None:
                    tags.append(v.tag)
                    steps.append(ev.step)
                    walls.append(ev.wall_time)
                    values.append(x)
        pos = end
    out.end = base + pos
    return out


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
