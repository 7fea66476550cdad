"""The run page (logic in app/views/run_page.py)."""

from traindoc.app.views.run_page import render

render()
