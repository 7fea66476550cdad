"""Figure builders: run series in, plotly figures out. They never call `st.`.

Every string that comes from a run (names, layers, finding text) goes through `esc`,
because plotly renders a subset of HTML (links included) in titles and hover text.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from traindoc import format as fmt
from traindoc.series import RunSeries
from traindoc.rules import CHARTS_OF
from traindoc.rules.base import DEFAULT as THRESHOLDS
from traindoc.rules.curves import lr_cuts, raw_loss_curve, written_on_change
from traindoc.rules.spikes import loss_spikes, one as spikes_one

from .thin import ema, in_window, shown, thin

MAX_POINTS = 2000  # per trace, after min/max thinning: 1,000 buckets, past a chart's pixel columns
#: Validation points each get a marker up to this many; past it the markers only overlap (and
#: each is an SVG element: 800 of them cost the browser about 50 ms a chart), so a line is drawn.
MAX_MARKERS = 200
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]
SEVERITY_COLORS = {"error": "rgba(214,39,40,0.10)", "warning": "rgba(255,127,14,0.10)",
                   "info": "rgba(31,119,180,0.08)"}
def esc(text) -> str:
    """Text from a run, made inert for plotly's HTML subset."""
    return html.escape(str(text), quote=True)


def _base(title: str, ytitle: str, uirev: str, log_y: bool = False) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(
        title=dict(text=esc(title), x=0.01), height=380, margin=dict(l=50, r=20, t=40, b=40),
        xaxis_title="step", yaxis_title=ytitle, hovermode="x unified",
        uirevision=esc(uirev),  # keeps zoom and legend state across live refreshes
        legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0),
    )
    if log_y:  # decade ticks: plotly's default labels minor ticks "2" and "5", which read as values
        fig.update_yaxes(type="log", exponentformat="power", dtick=1, minor=dict(showgrid=False))
    return fig


def mark_findings(fig: go.Figure, findings: list, chart: str) -> None:
    """Shade each finding's step range on this chart and label it with the rule id."""
    for f in findings:
        if chart not in CHARTS_OF.get(f.rule, ()):
            continue
        a, b = f.steps
        if a == b:  # a single step (e.g. the first loss): a line, not an area
            fig.add_vline(x=a, line=dict(color="#d62728", dash="dot"))
        fig.add_vrect(x0=a, x1=max(b, a + 1), fillcolor=SEVERITY_COLORS.get(f.severity, "rgba(0,0,0,0.08)"),
                      line_width=0, layer="below",
                      annotation=dict(text=esc(f.rule), textangle=0, font=dict(size=11)),
                      annotation_position="top left")


def _line(fig, x, y, name, color, width=2.0, opacity=1.0, dash=None, mode="lines", showlegend=True,
          shape="linear"):
    x, y = thin(np.asarray(x), np.asarray(y, dtype=float), MAX_POINTS)
    fig.add_trace(go.Scatter(x=x, y=y, name=esc(name), mode=mode, opacity=opacity, showlegend=showlegend,
                             line=dict(color=color, width=width, dash=dash, shape=shape)))


def loss_frame(run: RunSeries) -> pd.DataFrame | None:
    """step -> mean, std of the train loss as the rules judge it (`rules.curves.raw_loss_curve`:
    the collector's windows, or rolling windows of a per-step series, or a per-epoch log point by
    point), so the chart shows the curve the findings are about."""
    c = raw_loss_curve(run)
    if c is None:
        return None
    return pd.DataFrame({"mean": c.mean, "std": c.std}, index=pd.Index(c.steps, name="step"))


def loss_figure(run: RunSeries, findings: list, smoothing: float = 0.6, log_y: bool = False) -> go.Figure | None:
    """Mean loss with a ±1 std band, the raw curve faint behind the smoothed one, validation loss."""
    df = loss_frame(run)
    if df is None or df.empty:
        return None
    fig = _base("Loss", "loss", run.path + ":loss", log_y)
    x = df.index.to_numpy()
    mean = df["mean"].to_numpy(dtype=float)
    std = df["std"].to_numpy(dtype=float)
    if np.isfinite(std).any():
        hi_x, hi_y = thin(x, mean + std, MAX_POINTS)
        lo_x, lo_y = thin(x, mean - std, MAX_POINTS)
        band_x = np.concatenate([hi_x, lo_x[::-1]])
        band_y = np.concatenate([hi_y, lo_y[::-1]])
        if log_y:
            band_y = np.clip(band_y, np.nanmin(mean[mean > 0]) / 10 if (mean > 0).any() else 1e-8, None)
        fig.add_trace(go.Scatter(x=band_x, y=band_y, fill="toself", fillcolor="rgba(31,119,180,0.15)",
                                   line=dict(width=0), name="±1 std", hoverinfo="skip"))
    if run.has(fmt.LOSS_RAW) and not run.has(fmt.LOSS_WINDOW + "/mean"):  # every logged point, faint
        raw = run.get(fmt.LOSS_RAW)
        _line(fig, raw.index, raw.to_numpy(dtype=float), "train loss (raw)", COLORS[0], width=1, opacity=0.3)
    else:
        _line(fig, x, mean, "train loss (raw)", COLORS[0], width=1, opacity=0.3)
    _line(fig, x, ema(mean, smoothing), "train loss (smoothed)", COLORS[0])
    if run.has(fmt.VAL_LOSS):
        v = run.get(fmt.VAL_LOSS)
        _line(fig, v.index, v.to_numpy(), "val loss", COLORS[1], mode=_points_mode(len(v)))
    mark_spikes(fig, run)
    mark_findings(fig, findings, "loss")
    return fig


def _points_mode(n: int) -> str:
    """A line through validation points, with a marker on each while they are few enough to see."""
    return "lines+markers" if n <= MAX_MARKERS else "lines"


def mark_spikes(fig: go.Figure, run: RunSeries) -> None:
    """A marker at the top of each loss spike the run recovered from (`rules.spikes`)."""
    every = loss_spikes(run)
    spikes = [s for s, keep in zip(every, shown([s.step for s in every])) if keep]
    if not spikes:
        return
    text = ["loss spike at " + spikes_one(s) for s in spikes]
    fig.add_trace(go.Scatter(x=[s.step for s in spikes], y=[s.peak for s in spikes], mode="markers",
                             name=f"loss spikes ({len(spikes)})", hovertext=text, hoverinfo="text",
                             marker=dict(symbol="triangle-down", size=10, color="#d62728")))


def accuracy_figure(run: RunSeries, findings: list, smoothing: float = 0.6) -> go.Figure | None:
    """Train and validation accuracy, with the gap between them shaded."""
    ta = run.get(fmt.TRAIN_ACC) if run.has(fmt.TRAIN_ACC) else run.get(fmt.TRAIN_ACC_EPOCH)
    va = run.get(fmt.VAL_ACC)
    if not len(ta) and not len(va):
        return None
    fig = _base("Accuracy", "accuracy", run.path + ":acc")
    if len(ta):
        _line(fig, ta.index, ta.to_numpy(), "train acc (raw)", COLORS[0], width=1, opacity=0.3)
        smooth = ema(ta.to_numpy(), smoothing)
        _line(fig, ta.index, smooth, "train acc", COLORS[0])
    va = va.iloc[in_window(va.index.to_numpy())]  # a zoomed view: its own range only
    if len(va):
        if len(ta):  # shade the gap: train accuracy at the validation steps, then fill to validation
            at_val = np.interp(va.index.to_numpy(dtype=float), ta.index.to_numpy(dtype=float), smooth)
            fig.add_trace(go.Scatter(x=va.index, y=at_val, mode="lines", line=dict(width=0),
                                     showlegend=False, hoverinfo="skip"))
            fig.add_trace(go.Scatter(x=va.index, y=va.to_numpy(), name="val acc (gap shaded)",
                                     mode=_points_mode(len(va)), fill="tonexty", fillcolor="rgba(214,39,40,0.12)",
                                     line=dict(color=COLORS[1], width=2)))
        else:
            _line(fig, va.index, va.to_numpy(), "val acc", COLORS[1], mode=_points_mode(len(va)))
    mark_findings(fig, findings, "acc")
    return fig


def lr_keys(run: RunSeries) -> list[str]:
    """Learning-rate series: lr/pg0, lr/opt1/pg0, ... (or a plain `lr` from an import)."""
    keys = run.with_prefix(fmt.LR_PREFIX)
    return keys or (["lr"] if run.has("lr") else [])


def held_series(run: RunSeries, key: str) -> pd.Series:
    """A hyperparameter series to draw as steps: written on change, a value holds until the
    run's last step (draw it with line_shape "hv")."""
    s = run.get(key)
    last = run.last_step
    if len(s) and written_on_change(run) and last > s.index[-1]:
        s = pd.concat([s, pd.Series([s.iloc[-1]], index=[last])])
    return s


def lr_figure(run: RunSeries, findings: list) -> go.Figure | None:
    """LR per parameter group on a log axis, with sharp decays marked."""
    keys = lr_keys(run)
    if not keys:
        return None
    fig = _base("Learning rate", "lr", run.path + ":lr", log_y=True)
    last = run.last_step
    lo_hi = []
    for i, key in enumerate(keys):
        s = held_series(run, key)
        x, y = thin(s.index.to_numpy(), s.to_numpy(dtype=float), MAX_POINTS)
        lo_hi += [v for v in y if np.isfinite(v) and v > 0]
        fig.add_trace(go.Scatter(x=x, y=y, name=esc(key.removeprefix(fmt.LR_PREFIX) or key),
                                   line=dict(color=COLORS[i % len(COLORS)], shape="hv")))
        for step, _, before, after in lr_cuts(run.get(key), last, THRESHOLDS.cut_factor, THRESHOLDS.cut_span_frac,
                                              written_on_change(run)):
            fig.add_vline(x=step, line=dict(color="#555", dash="dash", width=1), annotation_position="bottom right",
                          annotation=dict(text=f"×{after / before:.3g}", font=dict(size=10)))
    if lo_hi:  # at least a decade either side, so a constant LR still reads clearly
        fig.update_yaxes(range=[np.floor(np.log10(min(lo_hi))) - 0.5, np.ceil(np.log10(max(lo_hi))) + 0.5])
    mark_findings(fig, findings, "lr")
    return fig


def ratio_figure(run: RunSeries, findings: list, band: tuple | None = None) -> go.Figure | None:
    """log10 update/weight ratio per layer over time, with the update_ratio rule's band marked."""
    if band is None:
        band = (THRESHOLDS.ratio_center / THRESHOLDS.ratio_factor, THRESHOLDS.ratio_center * THRESHOLDS.ratio_factor)
    keys = [k for k in run.with_prefix(fmt.RATIO_PREFIX) if k != fmt.RATIO_GLOBAL]
    if not keys:
        return None
    center = np.log10(THRESHOLDS.ratio_center)
    title = f"Update ratio ‖ΔW‖/‖W‖ (log10); band around {THRESHOLDS.ratio_center:g} shaded"
    if len(keys) <= 12:
        fig = _base(title, "log10 ratio", run.path + ":ratio")
        fig.add_hrect(y0=np.log10(band[0]), y1=np.log10(band[1]), fillcolor="rgba(44,160,44,0.10)", line_width=0)
        fig.add_hline(y=center, line=dict(color="#2ca02c", dash="dot"))
        for i, key in enumerate(keys + [fmt.RATIO_GLOBAL]):
            s = run.get(key)
            with np.errstate(divide="ignore"):
                y = np.log10(s.to_numpy(dtype=float))
            name = key.removeprefix(fmt.RATIO_PREFIX)
            width = 3 if key == fmt.RATIO_GLOBAL else 1.5
            _line(fig, s.index, np.where(np.isfinite(y), y, np.nan), name, COLORS[i % len(COLORS)], width=width)
    else:
        frame = pd.DataFrame({k.removeprefix(fmt.RATIO_PREFIX): run.get(k) for k in keys})
        frame = frame.iloc[in_window(frame.index.to_numpy())]
        if len(frame) > 600:  # bucket the time axis: heatmaps need no min/max, the mean is drawn
            groups = np.arange(len(frame)) * 600 // len(frame)
            frame = frame.groupby(groups).agg("mean").set_index(frame.index.to_series().groupby(groups).max())
        with np.errstate(divide="ignore"):
            z = np.log10(frame.to_numpy(dtype=float).T)
        fig = _base(title, "layer", run.path + ":ratio")
        fig.add_trace(go.Heatmap(x=frame.index, y=[esc(c) for c in frame.columns],
                                 z=np.where(np.isfinite(z), z, np.nan), zmid=center,
                                 zmin=np.log10(band[0]) - 1, zmax=np.log10(band[1]) + 1, colorscale="RdBu_r",
                                 colorbar=dict(title="log10", tickvals=[np.log10(band[0]), center, np.log10(band[1])],
                                               ticktext=["band low", f"{THRESHOLDS.ratio_center:g}", "band high"])))
        fig.update_layout(height=max(330, 14 * len(keys) + 80))
    mark_findings(fig, findings, "ratio")
    return fig


def custom_figure(run: RunSeries, key: str, smoothing: float = 0.0) -> go.Figure:
    """A chart of one custom scalar."""
    s = run.get(key)
    fig = _base(key.removeprefix(fmt.CUSTOM_PREFIX), "", run.path + ":" + key)
    fig.update_layout(height=260)
    _line(fig, s.index, s.to_numpy(), "raw", COLORS[0], width=1, opacity=0.35 if smoothing else 1.0)
    if smoothing:
        _line(fig, s.index, ema(s.to_numpy(), smoothing), "smoothed", COLORS[0])
    return fig


def overlay_figure(runs: list[RunSeries], key_fn, title: str, ytitle: str, smoothing: float = 0.0,
                   log_y: bool = False, mode: str = "lines", shape: str = "linear") -> go.Figure:
    """One series per run on one chart (the compare page)."""
    fig = _base(title, ytitle, "compare:" + title, log_y)
    for i, run in enumerate(runs):
        s = key_fn(run)
        if s is None or not len(s):
            continue
        y = ema(s.to_numpy(dtype=float), smoothing) if smoothing else s.to_numpy(dtype=float)
        _line(fig, s.index, y, run.name, COLORS[i % len(COLORS)], mode=mode, shape=shape)
    return fig


def scatter_figure(points: pd.DataFrame, x: str, y: str, log_x: bool) -> go.Figure:
    """A metric against one hyperparameter, one point per run (random or grid searches)."""
    fig = go.Figure(go.Scatter(x=points[x], y=points[y], mode="markers+text",
                               text=[esc(n) for n in points["run"]], textposition="top center",
                               marker=dict(size=10, color=COLORS[0])))
    fig.update_layout(title=dict(text=esc(f"{y} vs {x}"), x=0.01), height=380, xaxis_title=esc(x),
                      yaxis_title=esc(y), margin=dict(l=50, r=20, t=40, b=40))
    if log_x:
        fig.update_xaxes(type="log")
    return fig


def sweep_figure(sweep) -> go.Figure:
    """A sweep (`rules.sweep.Sweep`): each run's best loss by the common step against its LR on a
    log axis, the mean over seeds as a line, the best LR starred, diverged runs as crosses at the top."""
    scores = sweep.scores()
    pts = sorted(((m.lr, scores.get(m.index, np.inf), m.name) for m in sweep.members), key=lambda p: p[0])
    finite = [p for p in pts if np.isfinite(p[1])]
    top = max((p[1] for p in finite), default=1.0) * 1.1
    by_lr: dict[float, list[float]] = {}
    for lr, v, _ in pts:
        by_lr.setdefault(lr, []).append(v)
    means = {lr: float(np.mean(v)) for lr, v in by_lr.items()}
    best_lr = min(means, key=means.get)
    fig = go.Figure()
    line = [(lr, m) for lr, m in sorted(means.items()) if np.isfinite(m)]
    fig.add_trace(go.Scatter(x=[p[0] for p in line], y=[p[1] for p in line], mode="lines", name="mean over seeds",
                             line=dict(color=COLORS[0], width=1), hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=[p[0] for p in finite], y=[p[1] for p in finite], mode="markers", name="run",
                             text=[esc(p[2]) for p in finite], marker=dict(size=9, color=COLORS[0]),
                             hovertemplate="%{text}<br>lr %{x:.3g}<br>%{y:.4g}<extra></extra>"))
    gone = [p for p in pts if not np.isfinite(p[1])]
    if gone:
        fig.add_trace(go.Scatter(x=[p[0] for p in gone], y=[top] * len(gone), mode="markers", name="diverged",
                                 text=[esc(p[2]) for p in gone], marker=dict(size=11, symbol="x", color=COLORS[3]),
                                 hovertemplate="%{text}<br>lr %{x:.3g}: diverged<extra></extra>"))
    if np.isfinite(means[best_lr]):
        fig.add_trace(go.Scatter(x=[best_lr], y=[means[best_lr]], mode="markers+text", name="best LR",
                                 text=[f"best lr {best_lr:.3g}"], textposition="bottom center",
                                 marker=dict(size=18, symbol="star", color=COLORS[1])))
    fig.update_layout(title=dict(text=esc(f"LR sweep in {sweep.folder or '.'}: best {sweep.metric} by the common "
                                          "step"), x=0.01),
                      height=380, xaxis_title="learning rate", yaxis_title=esc(f"best {sweep.metric}"),
                      margin=dict(l=50, r=20, t=40, b=40))
    fig.update_xaxes(type="log")
    return fig


#: The run page's charts, in its order: id -> builder(run, findings, smoothing, log_y).
RUN_CHARTS = {
    "loss": lambda run, findings, smoothing, log_y: loss_figure(run, findings, smoothing, log_y),
    "acc": lambda run, findings, smoothing, log_y: accuracy_figure(run, findings, smoothing),
    "lr": lambda run, findings, smoothing, log_y: lr_figure(run, findings),
    "ratio": lambda run, findings, smoothing, log_y: ratio_figure(run, findings),
}


def run_figures(run: RunSeries, findings: list, smoothing: float = 0.6, log_y: bool = False,
                max_custom: int = 24) -> tuple[list, list]:
    """([(chart id, figure)], [(custom tag, figure)]): every chart of the run page for `run`, the
    same for the page server and for `traindoc.show` in a notebook. Charts without data are left out."""
    built = [(k, make(run, findings, smoothing, log_y)) for k, make in RUN_CHARTS.items()]
    custom = [(k[len(fmt.CUSTOM_PREFIX):], custom_figure(run, k, smoothing))
              for k in run.with_prefix(fmt.CUSTOM_PREFIX)[:max_custom]]
    return [(k, f) for k, f in built if f is not None], custom
