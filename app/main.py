"""Entry script of the dashboard: `traindoc serve ROOT` runs `streamlit run` on this file."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import streamlit as st  # noqa: E402

from app.nav import pages  # noqa: E402

# no page_icon: a Material favicon is fetched from a CDN, and the app must not leave the machine
st.set_page_config(page_title="traindoc", layout="wide")
st.navigation(list(pages().values())).run()
