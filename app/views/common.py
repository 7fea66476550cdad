"""Helpers the pages share: the cached store, escaping, formatting."""

from __future__ import annotations

import html
import math
import re
import time
from urllib.parse import quote

from ..data import shared_catalog as catalog  # noqa: F401 - one catalog per root, shared by every session
from ..data import shared_store as store  # noqa: F401 - one store for all sessions: readers are shared

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def md(text) -> str:
    """Text from a run, escaped for Streamlit markdown (no links, images or HTML)."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


def ago(ts) -> str:
    """'12 s ago' style age of a unix time."""
    if not isinstance(ts, (int, float)) or not math.isfinite(ts):
        return "-"
    d = max(0.0, time.time() - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if d >= size:
            return f"{d / size:.0f} {unit} ago"
    return f"{d:.0f} s ago"


def run_link(name: str) -> str:
    """An HTML link to a run's page (a full page load: the run page is served beside Streamlit,
    not by it). The name is escaped for HTML and for the markdown around it."""
    return f'<a href="run?run={html.escape(quote(name, safe=""))}" target="_self">{md(html.escape(name))}</a>'


def compare_params(names) -> dict:
    """The compare page's query for `names`: one `runs` parameter per run (`?runs=a&runs=b`),
    so that a name holding a comma, `&`, `#` or any other character comes back whole."""
    return {"runs": [str(n) for n in names]}


def compare_names(values, runs) -> list[str]:
    """The runs a compare link names, in its order, each once: `values` are its `runs`
    parameters (`st.query_params.get_all("runs")`), `runs` the names that exist. A value that
    names no run but is a comma-separated list of runs is an older link's `runs=a,b`."""
    out: list[str] = []
    for v in values:
        for name in [v] if v in runs else v.split(","):
            if name in runs and name not in out:
                out.append(name)
    return out
