"""Compare page: overlay runs, their hyperparameters, and a metric against one hyperparameter."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from traindoc import format as fmt
from traindoc.rules import together

from .. import charts
from ..data import discover, root_dir
from .common import compare_names, md, run_link, store


def _flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in (config or {}).items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[f"{prefix}{k}"] = v
        else:
            out[f"{prefix}{k}"] = str(v)
    return out


def _loss(run):
    df = charts.loss_frame(run)
    return None if df is None else df["mean"]


def render() -> None:
    """Draw the compare page for ?runs=a&runs=b (or the runs picked here)."""
    root = root_dir()
    runs = discover(root)
    st.title("Compare runs")
    wanted = compare_names(st.query_params.get_all("runs"), runs)
    chosen = st.multiselect("Runs", sorted(runs), default=wanted, key="compare_runs")
    if chosen != wanted:
        st.query_params["runs"] = chosen
    if not chosen:
        st.info("Pick two or more runs (or select rows on the runs page).")
        return
    loaded = [store().load(n, runs[n]) for n in chosen]
    for ld in loaded:
        if ld.error:
            st.warning(f"**{md(ld.name)}** cannot be shown: {md(ld.error)}")
    shown = [ld for ld in loaded if not ld.error]
    good = [ld.series for ld in shown]
    if not good:
        return
    c1, c2 = st.columns(2)
    smoothing = c1.slider("Smoothing", 0.0, 0.99, 0.6, 0.01, key="compare_smoothing")
    log_y = c2.toggle("Log-scale loss", key="compare_log")
    cols = st.columns(3)
    cols[0].plotly_chart(charts.overlay_figure(good, _loss, "Train loss", "loss", smoothing, log_y),
                         key="cmp-loss")
    cols[1].plotly_chart(charts.overlay_figure(good, lambda r: r.get(fmt.VAL_ACC), "Validation accuracy", "acc",
                                               mode="lines+markers"), key="cmp-val")
    cols[2].plotly_chart(charts.overlay_figure(good, lambda r: charts.held_series(r, charts.lr_keys(r)[0])
                                               if charts.lr_keys(r) else None, "Learning rate (first group)", "lr",
                                               log_y=True, shape="hv"), key="cmp-lr")
    for i, sweep in enumerate(together.find_sweeps(good)):
        st.subheader("LR sweep" if i == 0 else f"LR sweep {i + 1}")
        st.caption(f"{len(sweep.members)} runs that differ only in the learning rate (and seed). Runs far worse "
                   "than the best at half a decade or more from its LR get lr_too_low or lr_too_high.")
        st.plotly_chart(charts.sweep_figure(sweep), key=f"cmp-sweep-{i}")
    # rows by the name the run has here (its folder), not the name in its meta.json: copies differ
    table = pd.DataFrame([{"run": ld.name, **_flat(ld.series.meta.get("config") or {}), **_metrics(ld.series)}
                          for ld in shown])
    st.subheader("Hyperparameters and results")
    st.dataframe(table, hide_index=True, key="cmp-table")
    st.markdown("Open: " + " · ".join(run_link(n) for n in chosen), unsafe_allow_html=True)
    numeric = [c for c in table.columns if c not in ("run",) and c not in _METRICS
               and pd.to_numeric(table[c], errors="coerce").notna().sum() >= 2]
    st.subheader("Metric against a hyperparameter")
    if not numeric:
        st.caption("No numeric hyperparameter differs between these runs.")
        return
    s1, s2, s3 = st.columns([2, 2, 1])
    x = s1.selectbox("Hyperparameter", numeric, key="cmp-x")
    y = s2.selectbox("Metric", _METRICS, key="cmp-y")
    log_x = s3.toggle("Log x", value=True, key="cmp-logx")
    pts = table[["run", x, y]].copy()
    pts[x] = pd.to_numeric(pts[x], errors="coerce")
    pts = pts.dropna()
    if log_x and (pts[x] <= 0).any():
        log_x = False
    st.plotly_chart(charts.scatter_figure(pts, x, y, log_x), key="cmp-scatter")


_METRICS = ["best val acc", "final val acc", "final val loss", "final train loss"]


def _metrics(run) -> dict:
    va, vl = run.get(fmt.VAL_ACC).dropna(), run.get(fmt.VAL_LOSS).dropna()
    tl = _loss(run)
    tl = tl.dropna() if tl is not None else pd.Series(dtype=float)
    return {"best val acc": float(va.max()) if len(va) else np.nan,
            "final val acc": float(va.iloc[-1]) if len(va) else np.nan,
            "final val loss": float(vl.iloc[-1]) if len(vl) else np.nan,
            "final train loss": float(tl.iloc[-1]) if len(tl) else np.nan}
