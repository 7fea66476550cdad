"""The run-folder format: the only contract between the collector and the reader.

Stdlib only, so that both sides can import it: the collector (which has torch but
must not need pandas) and the reader (which has pandas but must not need torch).
`docs/run-format.md` is the prose version of this module; keep the two in step.
"""

from __future__ import annotations

import json
import struct
import zlib

#: Bumped when a reader of the previous version could misread a new run.
#: 2: CRC-32 record checks, a run id in every segment header and key line.
SCHEMA_VERSION = 2

#: How bad a finding is, mildest first (findings are stored in the catalog and printed by the CLI).
SEVERITIES = ("info", "warning", "error")

META_FILE = "meta.json"
#: What the user says about logs traindoc did not write (tag meanings, run facts), in the run's
#: folder or its parent (traindoc/tb/mapping.py).
OVERRIDE_FILES = ("traindoc-tb.toml", "traindoc-tb.json")
KEYS_FILE = "keys.jsonl"
#: Scalar records live in one or more segments, read in name order.
SEGMENT_GLOB = "scalars-*.bin"
SEGMENT_PATTERN = "scalars-{:04d}.bin"

MAGIC = b"TDSCALAR"
#: magic, schema version (u32), record size (u32): the start of every segment
HEADER = struct.Struct("<8sII")
HEADER_SIZE = HEADER.size  # 16: all of a version-1 header
#: version 2 follows with the run id (16 bytes, a UUID)
RUN_ID_SIZE = 16
HEADER_V2_SIZE = HEADER_SIZE + RUN_ID_SIZE  # 32
#: step (i64), wall time in unix seconds (f64), value (f64), key id (u32), check (u32)
RECORD = struct.Struct("<qddII")
RECORD_SIZE = RECORD.size  # 32
CHECKED = RECORD_SIZE - 4  # the bytes the check word covers
#: Start value of the CRC (version 2) and salt of the parity (version 1), so that a
#: record of zero bytes is not valid.
CHECK_SALT = 0x7D0C5EED

STATUS_RUNNING = "running"
STATUS_FINISHED = "finished"
STATUS_CRASHED = "crashed"
# Logs written by other tools (TensorBoard, trainer_state.json, CSV, MLflow) that stopped growing:
# "ended" where the log itself says training ended, "no end marker" where nothing says how.
STATUS_ENDED = "ended"
STATUS_NO_END = "no end marker"
ARCHIVED = (STATUS_ENDED, STATUS_NO_END)
#: Such a log written to within this many seconds is taken as a run still being written.
LIVE_SECS = 60.0

# Series names the collector writes. Readers and rules refer to these, never to
# string literals of their own.
LOSS_WINDOW = "train/loss"  # followed by /mean /var /min /max /count /nonfinite
LOSS_EPOCH = "train_epoch/loss"
LOSS_FIRST = "train/loss/first"  # the first logged batch loss, unaveraged
LOSS_RAW = "train/loss"  # a per-step loss without windows (imported TensorBoard runs)
TRAIN_ACC = "train/acc"
LABEL_ENTROPY = "train/label_entropy"  # entropy (nats) of the first window's class frequencies
SKIPPED_STEPS = "train/skipped_steps"  # GPU + fused optimizer under GradScaler: steps it skipped
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


def header_bytes(run_id: bytes) -> bytes:
    """The 32 bytes a version-2 segment starts with: magic, version, record size, run id."""
    if len(run_id) != RUN_ID_SIZE:
        raise ValueError(f"run id must be {RUN_ID_SIZE} bytes, got {len(run_id)}")
    return HEADER.pack(MAGIC, SCHEMA_VERSION, RECORD_SIZE) + run_id


def check_word(body: bytes) -> int:
    """Version 2: CRC-32 (zlib's polynomial) of the record's first 28 bytes, started at the salt.
    Any one- or two-bit flip, and any burst of up to 32 bits, changes it."""
    return zlib.crc32(body, CHECK_SALT)


def parity_word(body: bytes) -> int:
    """Version 1: XOR of the record's first seven little-endian u32 words, salted (kept so
    that old runs stay readable; two equal flips cancel out, hence version 2)."""
    acc = CHECK_SALT
    for w in struct.unpack("<7I", body):
        acc ^= w
    return acc


def pack_record(step: int, wall: float, value: float, key_id: int) -> bytes:
    """One 32-byte version-2 record, check word included."""
    body = struct.pack("<qddI", step, wall, value, key_id)
    return body + struct.pack("<I", check_word(body))


def key_check(key_id: int, key: str, run_id: str) -> int:
    """Version 2: the CRC-32 a key line carries, over its id, name and run id."""
    return zlib.crc32(f"{key_id}\t{key}\t{run_id}".encode("utf-8"), CHECK_SALT)


def key_line(key_id: int, key: str, run_id: str) -> str:
    """One line of keys.jsonl (version 2), newline included."""
    return json.dumps({"id": key_id, "key": key, "run": run_id, "crc": key_check(key_id, key, run_id)}) + "\n"


def parse_key_line(line: bytes, run_id: str | None) -> tuple[str, int | None, str | None]:
    """(verdict, id, name) of one keys.jsonl line: "ok"; "corrupt" (not JSON of the right
    shape, or its CRC fails); "foreign" (another run's). Without a run id (version 1) any
    well-formed line is ok."""
    try:
        obj = json.loads(line.decode("utf-8"))
        kid, key = int(obj["id"]), str(obj["key"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return "corrupt", None, None
    if run_id is not None:
        if obj.get("run") != run_id:
            return "foreign", kid, key
        if obj.get("crc") != key_check(kid, key, run_id):
            return "corrupt", kid, key  # a damaged name must not label good records
    return "ok", kid, key


def pack_records(records) -> bytes:
    """Many (step, wall, value, key id) records at once, as the writer flushes them."""
    out = bytearray()
    pack, crc = struct.Struct("<qddI").pack, zlib.crc32
    for step, wall, value, key_id in records:
        body = pack(step, wall, value, key_id)
        out += body
        out += crc(body, CHECK_SALT).to_bytes(4, "little")
    return bytes(out)


def segment_name(index: int) -> str:
    """File name of segment number `index`."""
    return SEGMENT_PATTERN.format(index)
