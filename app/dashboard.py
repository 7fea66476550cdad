"""The Streamlit part of the dashboard (runs and compare pages); app/main.py serves it."""

import streamlit as st

from traindoc.app.nav import pages

# no page_icon: a Material favicon is fetched from a CDN, and the app must not leave the machine
st.set_page_config(page_title="traindoc", layout="wide")
st.navigation(list(pages().values())).run()
