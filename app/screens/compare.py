"""The compare page (logic in app/views/compare_page.py)."""

from app.views.compare_page import render

render()
