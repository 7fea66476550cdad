"""The runs page (logic in app/views/runs_page.py)."""

from traindoc.app.views.runs_page import render

render()
