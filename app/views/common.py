"""Helpers the pages share: the cached store, escaping, formatting."""

from __future__ import annotations

import math
import re
import time

import streamlit as st

from traindoc.catalog import Catalog

from ..data import RunStore

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


@st.cache_resource
def store() -> RunStore:
    """One store for all sessions: readers are incremental and shared."""
    return RunStore()


@st.cache_resource
def catalog(root: str) -> Catalog:
    """One run catalog per root, shared by every session (it serialises its own refreshes)."""
    return Catalog(root)


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
