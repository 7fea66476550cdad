"""The run-folder format: the only contract between the collector and the reader.

Stdlib only, so that both sides can import it: the collector (which has torch but
must not need pandas) and the reader (which has pandas but must not need torch).
`docs/run-format.md` is the prose version of this module; keep the two in step.
"""

from __future__ import annotations

import struct

#: Bumped when a reader of the previous version could misread a new run.
SCHEMA_VERSION = 1

META_FILE = "meta.json"
KEYS_FILE = "keys.jsonl"
#: Scalar records live in one or more segments, read in name order.
SEGMENT_GLOB = "scalars-*.bin"
SEGMENT_PATTERN = "scalars-{:04d}.bin"

MAGIC = b"TDSCALAR"
#: magic, schema version (u32), record size (u32)
HEADER = struct.Struct("<8sII")
#: step (i64), wall time in unix seconds (f64), value (f64), key id (u32), check (u32)
RECORD = struct.Struct("<qddII")
RECORD_SIZE = RECORD.size  # 32
HEADER_SIZE = HEADER.size  # 16
#: Salt for the per-record check word, so that a run of zero bytes is not valid.
CHECK_SALT = 0x7D0C5EED

STATUS_RUNNING = "running"
STATUS_FINISHED = "finished"
STATUS_CRASHED = "crashed"

# Series names the collector writes. Readers and rules refer to these, never to
# string literals of their own.
LOSS_WINDOW = "train/loss"  # followed by /mean /var /min /max /count /nonfinite
LOSS_EPOCH = "train_epoch/loss"
LOSS_FIRST = "train/loss/first"  # the first logged batch loss, unaveraged
LOSS_RAW = "train/loss"  # a per-step loss without windows (imported TensorBoard runs)
TRAIN_ACC = "train/acc"
TRAIN_ACC_EPOCH = "train_epoch/acc"
EPOCH = "epoch"
VAL_LOSS = "val/loss"
VAL_ACC = "val/acc"
LR_PREFIX = "lr/"  # lr/pg0, lr/opt1/pg0 ...
MOMENTUM_PREFIX = "momentum/"
BETA1_PREFIX = "beta1/"
BETA2_PREFIX = "beta2/"
RATIO_PREFIX = "update_ratio/"
RATIO_GLOBAL = "update_ratio/_global"
CUSTOM_PREFIX = "custom/"
WINDOW_STATS = ("mean", "var", "min", "max", "count", "nonfinite")


def header_bytes() -> bytes:
    """The 16 bytes every segment file starts with."""
    return HEADER.pack(MAGIC, SCHEMA_VERSION, RECORD_SIZE)


def check_word(step: int, wall: float, value: float, key_id: int) -> int:
    """XOR of the record's first seven little-endian u32 words, salted."""
    words = struct.unpack("<7I", struct.pack("<qddI", step, wall, value, key_id))
    acc = CHECK_SALT
    for w in words:
        acc ^= w
    return acc


def pack_record(step: int, wall: float, value: float, key_id: int) -> bytes:
    """One 32-byte record, check word included."""
    return RECORD.pack(step, wall, value, key_id, check_word(step, wall, value, key_id))


def segment_name(index: int) -> str:
    """File name of segment number `index`."""
    return SEGMENT_PATTERN.format(index)
