"""The app's pages (thin scripts in app/screens/), built once per session so links can point at them."""

from __future__ import annotations

import streamlit as st


def pages() -> dict:
    """name -> st.Page, shared by the entry script and the links between pages."""
    if "_traindoc_pages" not in st.session_state:
        st.session_state["_traindoc_pages"] = {
            "runs": st.Page("screens/runs.py", title="Runs", url_path="runs", default=True),
            "compare": st.Page("screens/compare.py", title="Compare",
                               url_path="compare"),
        }
    return st.session_state["_traindoc_pages"]
