"""Entry point of the dashboard: `traindoc serve ROOT` runs `streamlit run` on this file.

Streamlit serves the runs and compare pages (app/dashboard.py); the run page is a plain
HTTP page beside them (app/runview), on the same server and port.
"""

import os
import threading
from contextlib import asynccontextmanager

import streamlit as st

from traindoc.app import runview


@asynccontextmanager
async def _lifespan(_app):
    threading.Thread(target=runview.warm_up, name="traindoc-warm-up", daemon=True).start()
    yield


app = st.App(os.path.join(os.path.dirname(os.path.abspath(__file__)), "dashboard.py"), routes=runview.routes(),
             lifespan=_lifespan)
