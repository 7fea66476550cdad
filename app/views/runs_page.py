"""Runs page: one row per run under ROOT, from the run catalog; filter, sort and page in the
index; open runs, pick runs to compare.

The catalog (`traindoc.catalog`) reads only the runs whose files changed since the last
visit, with a progress bar while it does; filtering, sorting and paging happen in SQLite, so
a root of 10,000 runs draws one page of 50 rows.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from traindoc.catalog import Catalog
from traindoc.rules import curve_gaps
from traindoc.status import STALE_SECS, status_of

from ..data import root_dir
from ..nav import pages
from .common import ago, catalog, compare_params, md, run_link

STATUS_ICON = {"live": "● live", "finished": "finished", "crashed": "✖ crashed", "stale": "stale (no writes)",
               "ended": "ended", "no end marker": "no end marker", "unreadable": "unreadable", "unknown": "unknown"}
PAGE_SIZE = 50
SORTS = {"name": "name", "last update": "updated", "steps": "steps", "best val acc": "best_val_acc",
         "findings": "findings", "status": "status"}


def refresh(cat: Catalog) -> None:
    """Bring the index up to date, with a progress bar while runs are being read."""
    bar = st.empty()

    def progress(done: int, total: int) -> None:
        if total >= 20:
            bar.progress(done / total, text=f"Indexing runs: {done:,} of {total:,} read")

    cat.refresh(progress=progress)
    bar.empty()


def _frame(rows: list[dict]) -> pd.DataFrame:
    out = []
    for r in rows:
        if r["error"]:
            shown = "unreadable"
        else:
            shown = status_of({"status": r["status"], "updated": r["updated"]})
        findings = r["findings"] + ([] if r["diagnosed"] or r["error"] else ["not diagnosed"])
        out.append({"run": r["name"], "findings": findings, "status": STATUS_ICON[shown], "steps": r["steps"],
                    "last update": ago(r["updated"]), "best val acc": r["best_val_acc"], "best step": r["best_step"],
                    "hyperparameters": r["hparams"] or ""})
    cols = ["run", "findings", "status", "steps", "last update", "best val acc", "best step", "hyperparameters"]
    return pd.DataFrame(out, columns=cols)


def _problem(r: dict) -> str | None:
    if r["error"]:
        return f"**{md(r['name'])}** cannot be shown: {md(r['error'])}"
    if not r["diagnosed"]:
        lacks = curve_gaps(r["skipped"])
        return (f"**{md(r['name'])}** was read but not diagnosed: missing {md(', '.join(lacks))}; found: "
                f"{md(', '.join(r['found']) or 'no series')}")
    return None


def render() -> None:
    """Draw the runs page."""
    root = root_dir()
    st.title("Runs")
    st.caption(f"Reading {md(root)}")
    cat = catalog(root)
    refresh(cat)
    odd = cat.odd_names()
    if odd:
        st.warning("Not listed: runs whose names are not valid UTF-8 (rename them to see them here): "
                   + ", ".join(md(o) for o in odd[:20]) + (f" and {len(odd) - 20} more" if len(odd) > 20 else ""))
    others = cat.not_runs()
    if others:
        st.caption("Not runs (none of the formats traindoc reads): " + ", ".join(md(o) for o in others[:20])
                   + (f" and {len(others) - 20} more" if len(others) > 20 else ""))
    if not cat.count():
        st.info("No runs here yet. Attach the collector to a training script with `root` pointing at this folder; "
                "runs appear as soon as they start writing.")
        return
    c1, c2, c3, c4 = st.columns([3, 2, 2, 1])
    text = c1.text_input("Filter", placeholder="part of a name, a hyperparameter or a finding", key="runs_filter")
    statuses = c2.multiselect("Status", list(STATUS_ICON), key="runs_status")
    sort = c3.selectbox("Sort by", list(SORTS), key="runs_sort")
    descending = c4.toggle("Descending", value=sort in ("last update", "best val acc", "steps"), key="runs_desc")
    _, total = cat.query(text, tuple(statuses), limit=0, stale_secs=STALE_SECS)
    pages_n = max(1, -(-total // PAGE_SIZE))
    page = 1
    if pages_n > 1:
        page = int(st.number_input(f"Page (of {pages_n:,}; {total:,} runs)", 1, pages_n, 1, key="runs_page"))
    rows, total = cat.query(text, tuple(statuses), SORTS[sort], descending, PAGE_SIZE, (page - 1) * PAGE_SIZE,
                            stale_secs=STALE_SECS)
    if not rows:
        st.info("No run matches.")
        return
    for r in rows:
        msg = _problem(r)
        if msg:
            st.warning(msg)
    view = _frame(rows)
    event = st.dataframe(
        view, hide_index=True, on_select="rerun", selection_mode="multi-row", key=f"runs_table_{page}",
        column_config={
            "best val acc": st.column_config.NumberColumn(format="%.3f"),
            "findings": st.column_config.ListColumn("findings", help="rule ids of the diagnostics that fired"),
        })
    selected = [view.iloc[i]["run"] for i in event.selection.rows] if event and event.selection else []
    p = pages()
    if selected:
        st.page_link(p["compare"], label=f"Compare {len(selected)} selected run(s)",
                     query_params=compare_params(selected))
    st.subheader("Open a run")
    cols = st.columns(3)
    for i, name in enumerate(view["run"]):  # a full load: the run page is served beside Streamlit
        cols[i % 3].markdown(run_link(name), unsafe_allow_html=True)
