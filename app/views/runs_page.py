"""Runs page: one row per run under ROOT; filter, sort, open, pick runs to compare."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ..data import discover, not_diagnosed_text, not_runs, root_dir, status_of, with_siblings
from ..nav import pages
from .common import ago, md, short_config, store

STATUS_ICON = {"live": "● live", "finished": "finished", "crashed": "✖ crashed", "stale": "stale (no writes)",
               "unreadable": "unreadable", "unknown": "unknown"}


def table(root: str) -> pd.DataFrame:
    """The runs table (one row per run; unreadable runs say why)."""
    rows = []
    loaded = with_siblings([store().load(name, path) for name, path in discover(root).items()])
    for ld in loaded:
        name = ld.name
        if ld.error:
            rows.append({"run": name, "status": STATUS_ICON["unreadable"], "steps": None, "last update": "-",
                         "best val acc": None, "best step": None, "hyperparameters": "", "findings": [],
                         "problem": ld.error})
            continue
        s = ld.series
        va = s.get("val/acc").dropna()
        rows.append({
            "run": name, "status": STATUS_ICON[status_of(s.meta)], "steps": s.last_step,
            "last update": ago(s.meta.get("updated") or s.meta.get("end_time")),
            "best val acc": float(va.max()) if len(va) else None,
            "best step": int(va.idxmax()) if len(va) else None,
            "hyperparameters": short_config(s.meta.get("config") or {}),
            "findings": [f.rule for f in ld.findings] + ([] if ld.diagnosed else ["not diagnosed"]),
            "problem": "" if ld.diagnosed else f"not diagnosed: {not_diagnosed_text(ld)}",
        })
    return pd.DataFrame(rows)


def render() -> None:
    """Draw the runs page."""
    root = root_dir()
    st.title("Runs")
    st.caption(f"Reading {md(root)}")
    df = table(root)
    others = not_runs(root)
    if others:
        st.caption("Not runs (none of the formats traindoc reads): " + ", ".join(md(o) for o in others[:20])
                   + (f" and {len(others) - 20} more" if len(others) > 20 else ""))
    if df.empty:
        st.info("No runs here yet. Attach the collector to a training script with `root` pointing at this folder; "
                "runs appear as soon as they start writing.")
        return
    c1, c2 = st.columns([3, 2])
    text = c1.text_input("Filter", placeholder="part of a name, a hyperparameter or a finding", key="runs_filter")
    statuses = c2.multiselect("Status", sorted(df["status"].unique()), key="runs_status")
    view = df
    if text:
        hay = (df["run"] + " " + df["hyperparameters"] + " " + df["findings"].map(" ".join)).str.lower()
        view = view[hay.str.contains(text.lower(), regex=False)]
    if statuses:
        view = view[view["status"].isin(statuses)]
    if (view["problem"] != "").any():
        for _, row in view[view["problem"] != ""].iterrows():
            if row["problem"].startswith("not diagnosed"):
                st.warning(f"**{md(row['run'])}** was read but {md(row['problem'])}")
            else:
                st.warning(f"**{md(row['run'])}** cannot be shown: {md(row['problem'])}")
    event = st.dataframe(
        view.drop(columns=["problem"]), hide_index=True, on_select="rerun", selection_mode="multi-row",
        key="runs_table",
        column_config={
            "best val acc": st.column_config.NumberColumn(format="%.3f"),
            "findings": st.column_config.ListColumn("findings", help="rule ids of the diagnostics that fired"),
        })
    selected = [view.iloc[i]["run"] for i in event.selection.rows] if event and event.selection else []
    p = pages()
    if selected:
        st.page_link(p["compare"], label=f"Compare {len(selected)} selected run(s)",
                     query_params={"runs": ",".join(selected)})
    st.subheader("Open a run")
    cols = st.columns(3)
    for i, name in enumerate(view["run"]):
        cols[i % 3].page_link(p["run"], label=md(name), query_params={"run": name})
