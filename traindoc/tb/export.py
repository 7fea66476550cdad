"""`traindoc export-tb`: a traindoc run as TensorBoard event files.

Written with the tensorboard package's own EventFileWriter. Besides every series under
its traindoc name, the loss window is written as mean, std, and mean ± std, with a
custom-scalars layout that draws the band, so TensorBoard shows the loss with its noise.
"""

from __future__ import annotations

import json
import math
import os

import pandas as pd

from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.compat.proto.tensor_pb2 import TensorProto
from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
from tensorboard.compat.proto.types_pb2 import DT_STRING
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as cs_metadata
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from traindoc import format as fmt
from traindoc.reader import read_run


def _band_layout() -> Summary:
    chart = layout_pb2.Chart(title="train loss: mean ± 1 std", margin=layout_pb2.MarginChartContent(series=[
        layout_pb2.MarginChartContent.Series(value="train/loss/mean", lower="train/loss/lower",
                                             upper="train/loss/upper")]))
    ratios = layout_pb2.Chart(title="update ratios (all layers)",
                              multiline=layout_pb2.MultilineChartContent(tag=[r"update_ratio/.*"]))
    layout = layout_pb2.Layout(category=[layout_pb2.Category(title="traindoc", chart=[chart, ratios])])
    # what tensorboard.plugins.custom_scalar.summary.pb builds, without needing TensorFlow
    tensor = TensorProto(dtype=DT_STRING, tensor_shape=TensorShapeProto(),
                         string_val=[layout.SerializeToString()])
    return Summary(value=[Summary.Value(tag=cs_metadata.CONFIG_SUMMARY_TAG,
                                        metadata=cs_metadata.create_summary_metadata(), tensor=tensor)])


def export_run(run_path: str, out_dir: str) -> int:
    """Write every series of the run into `out_dir`; returns the number of scalars written."""
    run = read_run(run_path)
    os.makedirs(out_dir, exist_ok=True)
    writer = EventFileWriter(out_dir)
    start = run.meta.get("start_time") or 0.0
    writer.add_event(Event(wall_time=start, step=0, summary=_band_layout()))
    n = 0
    series = {k: run.get(k) for k in run.keys}
    walls = {k: run.walls(k) for k in run.keys}
    mean, var = series.get(fmt.LOSS_WINDOW + "/mean"), series.get(fmt.LOSS_WINDOW + "/var")
    if mean is not None and var is not None:
        std = var.reindex(mean.index).clip(lower=0) ** 0.5
        for name, s in (("std", std), ("lower", mean - std), ("upper", mean + std)):
            series[f"{fmt.LOSS_WINDOW}/{name}"] = s
            walls[f"{fmt.LOSS_WINDOW}/{name}"] = walls[fmt.LOSS_WINDOW + "/mean"]
    grid = series[fmt.LOSS_WINDOW + "/mean"].index if fmt.LOSS_WINDOW + "/mean" in series else None
    for key in list(series):
        if key.startswith(_STEP_FUNCTIONS) and grid is not None:
            series[key], walls[key] = _as_steps(series[key], walls[key], grid)
    for key, s in series.items():
        w = walls[key].reindex(s.index)
        for step, value, wall in zip(s.index.tolist(), s.tolist(), w.tolist()):
            wall = wall if isinstance(wall, float) and math.isfinite(wall) else start
            summ = Summary(value=[Summary.Value(tag=key, simple_value=value)])
            writer.add_event(Event(wall_time=wall, step=int(step), summary=summ))
            n += 1
    writer.close()
    run_meta = {k: run.meta[k] for k in ("num_classes", "config") if run.meta.get(k) is not None}
    with open(os.path.join(out_dir, "traindoc-tb.json"), "w") as f:  # lets the checks that need C work
        json.dump({"run": run_meta}, f, indent=1, default=str)
    return n


_STEP_FUNCTIONS = (fmt.LR_PREFIX, fmt.MOMENTUM_PREFIX, fmt.BETA1_PREFIX, fmt.BETA2_PREFIX)


def _as_steps(s: pd.Series, w: pd.Series, grid) -> tuple[pd.Series, pd.Series]:
    """A series written on change, as points TensorBoard draws as steps: the old value just
    before each change, and a value at every loss-window step (TensorBoard joins points
    with straight lines)."""
    before = pd.Series(s.shift(1).iloc[1:].to_numpy(), index=s.index[1:] - 1)
    held = s.reindex(s.index.union(grid)).ffill().loc[lambda x: x.index >= s.index[0]]
    full = pd.concat([held, before]).groupby(level=0).last().sort_index()
    full.loc[s.index] = s  # the recorded values win at their own steps
    walls = w.reindex(full.index).ffill().bfill()
    return full, walls
