"""The compare page (logic in app/views/compare_page.py)."""

from traindoc.app.views.compare_page import render

render()
