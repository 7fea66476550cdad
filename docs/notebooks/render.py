"""Execute docs/notebooks/show.ipynb, export it to HTML with nbconvert, and photograph it in
headless chromium: the README's notebook screenshot (docs/notebook.png).

    python docs/notebooks/render.py [OUT.png]

nbconvert's HTML has no JavaScript renderer for plotly's MIME type, so each figure is written as
plotly's own HTML for the export (plotly.js inlined once, nothing fetched from the network)."""

from __future__ import annotations

import os
import sys
import tempfile

import nbformat
import plotly
import plotly.io as pio
from nbclient import NotebookClient
from nbconvert import HTMLExporter

HERE = os.path.dirname(os.path.abspath(__file__))
PLOTLY = "application/vnd.plotly.v1+json"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def executed(work: str) -> nbformat.NotebookNode:
    nb = nbformat.read(os.path.join(HERE, "show.ipynb"), as_version=4)
    os.environ.setdefault("TRAINDOC_CACHE", os.path.join(work, "cache"))
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": work}}).execute()
    return nb


def to_html(nb: nbformat.NotebookNode, cells: list[str] | None = None) -> str:
    """The notebook as one HTML page; `cells`: only the cells with these tags (and their code)."""
    if cells:
        nb.cells = [c for c in nb.cells if set(c.metadata.get("tags", [])) & set(cells)]
    for c in nb.cells:
        for o in c.get("outputs", []):
            data = o.get("data", {})
            if PLOTLY in data:
                fig = pio.from_json(__import__("json").dumps(data[PLOTLY]))
                data["text/html"] = pio.to_html(fig, include_plotlyjs=False, full_html=False,
                                                default_width="100%", default_height="320px")
                del data[PLOTLY]
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    js = os.path.join(os.path.dirname(plotly.__file__), "package_data", "plotly.min.js")
    with open(js, encoding="utf-8") as f:
        script = f"<script>{f.read()}</script>"
    return body.replace("<head>", "<head>" + script, 1)


def main(out: str) -> None:
    from playwright.sync_api import sync_playwright

    work = tempfile.mkdtemp(prefix="traindoc-nb-")
    page_path = os.path.join(work, "show.html")
    with open(page_path, "w", encoding="utf-8") as f:
        f.write(to_html(executed(work), cells=["show-diverged"]))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto("file://" + page_path)
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 4")
        page.screenshot(path=out, full_page=True)
        browser.close()
    print(out)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(HERE), "notebook.png"))
