"""Write a large run folder fast (vectorised), in the collector's format, for benchmarks and tests.

The curves are plausible (a decaying, noisy loss; rising accuracies; a one-cycle LR;
update ratios near 1e-3), so the rules do real work on them.
"""

from __future__ import annotations

import json
import os
import time
import uuid

import numpy as np

from traindoc import format as fmt
from traindoc.crc import crc32_rows
from traindoc.reader import RECORD_DTYPE


def pack(steps, walls, values, key_ids) -> bytes:
    """Records as bytes, check words included."""
    n = len(steps)
    arr = np.zeros(n, dtype=RECORD_DTYPE)
    arr["step"], arr["wall"], arr["value"], arr["key"] = steps, walls, values, key_ids
    raw = arr.view(np.uint8).reshape(n, fmt.RECORD_SIZE)
    arr["check"] = crc32_rows(raw[:, :fmt.CHECKED], fmt.CHECK_SALT)
    return arr.tobytes()


def series_for(n_points: int, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """About `n_points` values in total, split like a long collector run."""
    rng = np.random.default_rng(seed)
    windows = max(10, int(n_points * 0.08))  # loss windows: 7 keys each
    steps = np.arange(1, windows + 1) * 10
    t = steps / steps[-1]
    loss = 0.4 + 1.9 * np.exp(-6 * t)
    out = {
        "train/loss/mean": loss + rng.normal(0, 0.01, windows),
        "train/loss/var": np.full(windows, 0.02),
        "train/loss/min": loss - 0.2, "train/loss/max": loss + 0.2,
        "train/loss/count": np.full(windows, 10.0), "train/loss/nonfinite": np.zeros(windows),
        "train/acc": 0.95 - 0.85 * np.exp(-6 * t),
    }
    out = {k: (steps, v) for k, v in out.items()}
    out["lr/pg0"] = (steps, 0.1 * np.where(t < 0.3, t / 0.3, (1 + np.cos(np.pi * (t - 0.3) / 0.7)) / 2) + 1e-5)
    n_val = max(3, windows // 100)
    vs = np.linspace(steps[0], steps[-1], n_val).astype(np.int64)
    out["val/acc"] = (vs, 0.9 - 0.8 * np.exp(-6 * vs / steps[-1]))
    out["val/loss"] = (vs, 0.5 + 1.8 * np.exp(-6 * vs / steps[-1]))
    used = sum(len(v[0]) for v in out.values())
    layers = 40
    per_layer = max(3, (n_points - used) // layers)
    rs = np.linspace(1, steps[-1], per_layer).astype(np.int64)
    for i in range(layers):
        out[f"update_ratio/layer{i}.weight"] = (rs, 10 ** rng.normal(-3, 0.2, per_layer))
    return out


def write_run(path: str, n_points: int, name: str | None = None, seed: int = 0) -> int:
    """Write a finished run with about `n_points` scalar values; returns the exact count."""
    os.makedirs(path, exist_ok=True)
    data = series_for(n_points, seed)
    keys = list(data)
    now = time.time()
    run_id = uuid.uuid4().hex
    with open(os.path.join(path, fmt.KEYS_FILE), "w") as f:
        for i, k in enumerate(keys):
            f.write(fmt.key_line(i, k, run_id))
    chunks, total = [], 0
    for i, k in enumerate(keys):
        s, v = data[k]
        chunks.append(pack(s, now - 1000 + s * 1e-3, v, np.full(len(s), i)))
        total += len(s)
    with open(os.path.join(path, fmt.segment_name(0)), "wb") as f:
        f.write(fmt.header_bytes(bytes.fromhex(run_id)))
        f.writelines(chunks)
    meta = {"schema_version": fmt.SCHEMA_VERSION, "run_id": run_id, "name": name or os.path.basename(path), "status": "finished",
            "config": {"lr": 0.1, "synthetic": True}, "start_time": now - 1000, "end_time": now,
            "updated": now, "num_classes": 10}
    with open(os.path.join(path, fmt.META_FILE), "w") as f:
        json.dump(meta, f)
    return total


def grow_run(path: str, n_windows: int = 50, seed: int = 0) -> None:
    """Append `n_windows` more loss windows to a run written by `write_run`, and rewrite its
    meta.json the way the collector does (a new file renamed over the old), as a live run does."""
    with open(os.path.join(path, fmt.META_FILE)) as f:
        meta = json.load(f)
    ids = {}
    with open(os.path.join(path, fmt.KEYS_FILE), "rb") as f:
        for line in f:
            verdict, kid, key = fmt.parse_key_line(line, meta["run_id"])
            if verdict == "ok":
                ids[key] = kid
    seg = os.path.join(path, fmt.segment_name(0))
    with open(seg, "rb") as f:
        last = int(np.frombuffer(f.read()[fmt.HEADER_V2_SIZE:], dtype=RECORD_DTYPE)["step"].max())
    rng = np.random.default_rng(seed)
    steps = last + np.arange(1, n_windows + 1) * 10
    now = time.time()
    cols = {"train/loss/mean": 0.4 + rng.normal(0, 0.01, n_windows), "train/loss/var": np.full(n_windows, 0.02),
            "train/loss/count": np.full(n_windows, 10.0), "train/loss/nonfinite": np.zeros(n_windows)}
    with open(seg, "ab") as f:
        for k, v in cols.items():
            f.write(pack(steps, np.full(n_windows, now), v, np.full(n_windows, ids[k])))
    meta.update(status=fmt.STATUS_RUNNING, updated=now)
    tmp = os.path.join(path, fmt.META_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(meta, f)
    os.replace(tmp, os.path.join(path, fmt.META_FILE))
