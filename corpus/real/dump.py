"""Print a run's raw series for a labeller, straight from its native files.

Independent of traindoc: TensorBoard event files are read with TensorBoard's own
EventAccumulator, trainer_state.json with json, Lightning/Keras/any CSV with csv, MLflow
metric files as their plain text lines. Nothing here imports traindoc, so a label written
from this output has not seen traindoc's reading of the run.

usage: python corpus/real/dump.py PATH [--points N]
  PATH: a folder (every event file, trainer_state.json, *.csv and mlruns metric under it)
        or one file.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys


def _events(path: str) -> dict:
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(path, size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags().get("scalars", []):
        out[tag] = [(e.step, e.value) for e in acc.Scalars(tag)]
    for tag in acc.Tags().get("tensors", []):
        pts = []
        for e in acc.Tensors(tag):
            try:
                from tensorboard.util import tensor_util

                v = tensor_util.make_ndarray(e.tensor_proto)
                if v.size == 1:
                    pts.append((e.step, float(v.reshape(-1)[0])))
            except Exception:  # a non-scalar tensor (text, histogram): not a curve
                pass
        if pts:
            out[tag] = pts
    return out


def _trainer_state(path: str) -> dict:
    with open(path) as f:
        state = json.load(f)
    out: dict = {}
    for row in state.get("log_history", []):
        step = row.get("step")
        for k, v in row.items():
            if k in ("step",) or not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            out.setdefault(k, []).append((step, float(v)))
    return out


def _csv(path: str) -> dict:
    out: dict = {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return out
    xkey = next((k for k in ("step", "epoch", "Step", "Epoch") if k in rows[0]), None)
    for i, row in enumerate(rows):
        x = row.get(xkey) if xkey else i
        for k, v in row.items():
            if k == xkey or v in (None, ""):
                continue
            try:
                out.setdefault(k, []).append((x, float(v)))
            except ValueError:
                pass
    return out


def _mlflow_metric(path: str) -> list:
    pts = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                pts.append((int(parts[2]), float(parts[1])))
    return pts


def collect(path: str) -> dict:
    """{source file: {tag: [(step, value), ...]}} for everything readable under `path`."""
    found = {}
    files = [path] if os.path.isfile(path) else [os.path.join(d, f) for d, _, fs in sorted(os.walk(path))
                                                 for f in sorted(fs)]
    for p in files:
        name = os.path.basename(p)
        try:
            if "tfevents" in name:
                found[p] = _events(p)
            elif name == "trainer_state.json":
                found[p] = _trainer_state(p)
            elif name.endswith(".csv"):
                found[p] = _csv(p)
            elif f"{os.sep}metrics{os.sep}" in p:
                found[p] = {name: _mlflow_metric(p)}
        except Exception as exc:  # noqa: BLE001 - a labeller wants to see what failed, and go on
            found[p] = {"<unreadable>": [(0, float("nan"))]}
            print(f"# {p}: {exc}", file=sys.stderr)
    return found


def _fmt(v: float) -> str:
    return "nan" if v != v else f"{v:.5g}"


def show(series: list, points: int) -> str:
    n = len(series)
    vals = [v for _, v in series]
    finite = [v for v in vals if math.isfinite(v)]
    head = (f"n={n} steps {series[0][0]}..{series[-1][0]}" +
            (f" min {_fmt(min(finite))} max {_fmt(max(finite))}" if finite else " no finite value") +
            (f" non-finite {n - len(finite)}" if len(finite) < n else ""))
    if n <= points:
        idx = range(n)
    else:
        idx = sorted({round(i * (n - 1) / (points - 1)) for i in range(points)})
    body = " ".join(f"{series[i][0]}:{_fmt(series[i][1])}" for i in idx)
    return head + "\n    " + body


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("--points", type=int, default=60, help="at most this many points per tag (evenly spaced)")
    args = ap.parse_args()
    for src, tags in collect(args.path).items():
        print(f"== {os.path.relpath(src, args.path) if src != args.path else src}")
        for tag, pts in sorted(tags.items()):
            if pts:
                print(f"  {tag}: {show(pts, args.points)}")


if __name__ == "__main__":
    main()
