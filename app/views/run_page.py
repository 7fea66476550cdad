"""Run page: findings on top, then loss, accuracy, LR, update ratios and custom scalars.

The charts live in a fragment that re-runs by itself while the run is live: only new
bytes are read, and plotly keeps the zoom (uirevision) across refreshes.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace

import streamlit as st

from traindoc import format as fmt
from traindoc.tb.mapping import MEANINGS, save_overrides

from .. import charts
from ..livechart import live_chart
from ..data import discover, not_diagnosed_text, root_dir, status_of
from ..nav import pages
from .common import ago, catalog, md, store

LIVE_REFRESH_SECS = 1.0
BOX = {"error": st.error, "warning": st.warning, "info": st.info}


def render() -> None:
    """Draw the run page for ?run=NAME."""
    root = root_dir()
    runs = discover(root)
    name = st.query_params.get("run")
    if not name:
        st.title("Run")
        choice = st.selectbox("Pick a run", sorted(runs), index=None, key="run_pick")
        if choice:
            st.query_params["run"] = choice
            st.rerun()
        return
    if name not in runs:  # never a path: only names found under ROOT are served
        st.title("Run")
        st.error(f"No run named “{md(name)}” under this dashboard's folder.")
        st.page_link(pages()["runs"], label="Back to all runs")
        st.fragment(run_every=LIVE_REFRESH_SECS * 2)(_wait_for)(root, name)
        return
    path = runs[name]
    st.title(md(name))
    ld = store().load(name, path)
    if ld.error:
        st.warning(f"This run cannot be shown yet: {md(ld.error)}")
        return
    live = status_of(ld.series.meta) == "live"
    c1, c2, c3 = st.columns([2, 2, 3])
    smoothing = c1.slider("Smoothing", 0.0, 0.99, 0.6, 0.01, key="smoothing")
    log_y = c2.toggle("Log-scale loss", key="log_y")
    c3.page_link(pages()["runs"], label="All runs")
    st.fragment(run_every=LIVE_REFRESH_SECS if live else None)(_body)(name, path, smoothing, log_y, live)
    _mapping_panel(ld.series, path)  # outside the live fragment, so a refresh never resets a choice


def _with_siblings(name: str, path: str):
    """The run as loaded, with the findings the run catalog gives it: its own and what the runs
    in its folder add (sweeps, the task's ceiling). The catalog reads only what changed."""
    ld = store().load(name, path)
    if ld.error:
        return ld
    cat = catalog(root_dir())
    cat.refresh()
    final = cat.findings_of(name)
    return ld if final is None else replace(ld, findings=final)


def _wait_for(root: str, name: str) -> None:
    """A run that is about to start: open it as soon as it appears under ROOT."""
    if name in discover(root):
        st.rerun(scope="app")


def _body(name: str, path: str, smoothing: float, log_y: bool, live: bool = False) -> None:
    ld = _with_siblings(name, path)
    if ld.error:
        st.warning(f"This run cannot be shown: {md(ld.error)}")
        return
    run, findings = ld.series, ld.findings
    meta = run.meta
    facts = [f"status **{status_of(meta)}**", f"step **{run.last_step}**", f"{ld.records} values",
             f"updated {ago(meta.get('updated'))}"]
    if meta.get("device"):
        facts.append(md(meta["device"]))
    if meta.get("torch_version"):
        facts.append(f"torch {md(meta['torch_version'])}")
    if meta.get("source") == "tensorboard":
        facts.append("TensorBoard logdir")
    st.caption(" · ".join(facts))
    for problem in ld.problems or []:
        st.warning(f"Part of this run could not be read: {md(problem)}")
    _findings(findings, ld)
    figs = [
        ("loss", charts.loss_figure(run, findings, smoothing, log_y)),
        ("acc", charts.accuracy_figure(run, findings, smoothing)),
        ("lr", charts.lr_figure(run, findings)),
        ("ratio", charts.ratio_figure(run, findings)),
    ]
    shown = [(k, f) for k, f in figs if f is not None]
    if not shown and not run.keys:
        st.info("No series yet: the run has started but nothing has been flushed. This page refreshes by itself.")
    elif not shown:
        st.info("None of this run's series is a loss, accuracy, learning rate or update ratio that traindoc "
                "knows: they are drawn below as custom scalars.")
    cols = st.columns(2)
    for i, (key, fig) in enumerate(shown):
        with cols[i % 2]:
            if live:  # st.plotly_chart would remount on new data and drop the user's zoom
                live_chart(fig, key=f"live-{key}", config={"displaylogo": False})
            else:
                st.plotly_chart(fig, key=f"chart-{key}", config={"displaylogo": False})
    custom = run.with_prefix(fmt.CUSTOM_PREFIX)
    if custom:
        st.subheader("Custom scalars")
        cols = st.columns(3)
        for i, key in enumerate(custom[:24]):
            cols[i % 3].plotly_chart(charts.custom_figure(run, key, smoothing), key=f"custom-{key}",
                                     config={"displaylogo": False})
    with st.expander("Configuration and metadata"):
        st.json(json.loads(json.dumps(meta, default=str)), expanded=False)


def _mapping_panel(run, path: str) -> None:
    """For logs traindoc did not write: give the series it could not place a meaning. The
    choice goes to traindoc-tb.toml beside the logs and the run is read and diagnosed again."""
    if run.meta.get("source", "traindoc") == "traindoc":
        return  # the collector's custom/ series are the user's own extras
    tags = [k[len(fmt.CUSTOM_PREFIX):] for k in run.with_prefix(fmt.CUSTOM_PREFIX)]
    if not tags:
        return
    choices = ["leave as is", *MEANINGS, "ignore"]
    with st.expander(f"Series traindoc could not place ({len(tags)}): say what they are"):
        with st.form("mapping"):
            picked = {t: st.selectbox(md(t), choices, key=f"map-{t}") for t in tags[:40]}
            if st.form_submit_button("Save and diagnose again"):
                chosen = {t: MEANINGS[c] for t, c in picked.items() if c in MEANINGS}
                ignored = [t for t, c in picked.items() if c == "ignore"]
                if chosen or ignored:
                    folder = path if os.path.isdir(path) else os.path.dirname(path)
                    saved = save_overrides(folder, chosen, ignored)
                    store().forget(path)
                    st.toast(f"Saved to {os.path.basename(saved)}")
                    st.rerun()


def _findings(findings: list, ld) -> None:
    if not ld.diagnosed:
        st.warning(f"**Not diagnosed**: no curve rule could judge this run ({md(not_diagnosed_text(ld))}). "
                   "Say what its series are in the panel at the bottom of this page (saved as traindoc-tb.toml beside "
                   "the logs) to have it judged.")
    elif not findings:
        skipped = ", ".join(s["rule"] for s in ld.skipped or [])
        st.success("No problems found by the diagnostics." + (f" Not judged, for lack of inputs: {md(skipped)}."
                                                              if skipped else ""))
        return
    if not findings:
        return
    st.subheader(f"Findings ({len(findings)})")
    for f in findings:
        evidence = ", ".join(f"{k} = {_fmt(v)}" for k, v in f.evidence.items())
        BOX.get(f.severity, st.info)(
            f"**{md(f.rule)}** ({f.severity}, steps {f.steps[0]}–{f.steps[1]}): {md(f.advice)}  \n"
            f"Evidence: {md(evidence)}")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)
