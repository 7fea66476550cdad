"""A plotly chart that survives data updates (used for live runs).

`st.plotly_chart` gives each chart an identity derived from its content, so every data
update remounts it and the user's zoom is lost. This component keeps one Plotly
instance per key and feeds new figures to `Plotly.react`, which honours `uirevision`.
plotly.js is copied from the installed plotly package into a cache folder served by
Streamlit itself; nothing is fetched from outside the machine.
"""

from __future__ import annotations

import json
import os
import shutil

import plotly
import streamlit.components.v1 as components

HERE = os.path.dirname(os.path.abspath(__file__))


def _component_dir() -> str:
    cache = os.environ.get("TRAINDOC_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "traindoc")
    target = os.path.join(cache, "livechart-" + plotly.__version__)
    js = os.path.join(os.path.dirname(plotly.__file__), "package_data", "plotly.min.js")
    try:
        os.makedirs(target, exist_ok=True)
        if not os.path.exists(os.path.join(target, "plotly.min.js")):
            shutil.copyfile(js, os.path.join(target, "plotly.min.js.tmp"))
            os.replace(os.path.join(target, "plotly.min.js.tmp"), os.path.join(target, "plotly.min.js"))
        shutil.copyfile(os.path.join(HERE, "index.html"), os.path.join(target, "index.html"))
    except OSError:
        return HERE  # unwritable cache: serve from the package folder (needs plotly.min.js there)
    return target


_component = None


def live_chart(fig, key: str, config: dict | None = None) -> None:
    """Draw `fig` in a chart that keeps its zoom when later calls bring new data."""
    global _component
    if _component is None:
        _component = components.declare_component("traindoc_live_chart", path=_component_dir())
    _component(spec=fig.to_json(), config=json.dumps(config or {}), key=key, default=None)
