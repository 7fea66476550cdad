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
    """Decode the complete records of `data[start:]`; `base` is data's offset in the file."""
    out = Chunk(size=base + len(data))
    pos, n = start, len(data)
    unpack = struct.unpack_from
    parse = event_pb2.Event.FromString
    tags, steps, walls, values = out.tags, out.steps, out.walls, out.values
    view = memoryview(data)
    crc, k, m32 = crc32c, 0xA282EAD8, 0xFFFFFFFF
    while pos + HEADER <= n:
        length, length_crc = unpack("<QI", data, pos)
        c = crc(view[pos:pos + 8])  # masked as in masked_crc, inline: this loop is the reader's hot path
        if length > MAX_RECORD or (((c >> 15) | (c << 17)) + k) & m32 != length_crc:
            out.unreadable_from = base + pos
            break
        body = pos + HEADER
        end = body + length + FOOTER
        if end > n:
            break  # not written completely (yet)
        payload = view[body:body + length]
        c = crc(payload)
        if (((c >> 15) | (c << 17)) + k) & m32 != unpack("<I", data, end - FOOTER)[0]:
            out.corrupt_records += 1
            pos = end
            continue
        try:
            ev = parse(payload)
        except DecodeError:
            out.corrupt_records += 1
            pos = end
            continue
        if ev.HasField("summary"):
            for v in ev.summary.value:
                # torch and tensorboardX write simple_value: the common case, without a call
                x = v.simple_value if v.WhichOneof("value") == "simple_value" else _scalar(v)
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
