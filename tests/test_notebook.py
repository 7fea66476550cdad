"""traindoc.show in a real notebook: executed by nbclient on a real kernel, with a real training
loop in it that is still writing its run while the findings are shown."""

from __future__ import annotations

import json
import os

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "docs", "notebooks", "show.ipynb")
PLOTLY = "application/vnd.plotly.v1+json"


def _xs(trace) -> list[float]:
    """A trace's x values as the notebook holds them (plotly may send arrays as typed binary)."""
    import base64

    import numpy as np

    x = trace.get("x")
    if isinstance(x, dict) and "bdata" in x:
        return np.frombuffer(base64.b64decode(x["bdata"]), dtype=x["dtype"]).tolist()
    return list(x or [])


def _outputs(cell) -> tuple[list[dict], str]:
    figures = [o["data"][PLOTLY] for o in cell.outputs if PLOTLY in o.get("data", {})]
    htmls = "".join(o["data"].get("text/html", "") for o in cell.outputs if "data" in o)
    return figures, htmls


@pytest.mark.slow
def test_show_draws_findings_and_figures_in_an_executed_notebook(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env_cell = nbformat.v4.new_code_cell(
        f"import os; os.environ['TRAINDOC_CACHE'] = {str(tmp_path / 'cache')!r}; os.chdir({str(tmp_path)!r})")
    nb.cells.insert(0, env_cell)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    tagged = {c.metadata.get("tags", [None])[0]: c for c in nb.cells if c.metadata.get("tags")}

    figures, text = _outputs(tagged["show-live"])
    titles = [f["layout"]["title"]["text"] for f in figures]
    assert any(t.startswith("Loss") for t in titles) and len(figures) >= 3
    assert "live" in text and "last step 300" in text and "Not diagnosed" not in text

    figures, text = _outputs(tagged["show-again"])  # the same run, 300 steps later: more is shown
    loss = next(f for f in figures if f["layout"]["title"]["text"].startswith("Loss"))
    assert max(max(_xs(t)) for t in loss["data"] if _xs(t)) > 500 and "last step 600" in text

    figures, text = _outputs(tagged["show-diverged"])
    assert "lr_too_high" in text and "error" in text and "lower the learning rate" in text
    loss = next(f for f in figures if f["layout"]["title"]["text"].startswith("Loss"))
    assert any(a.get("text") == "lr_too_high" for a in loss["layout"].get("annotations", []))

    _, text = _outputs(tagged["show-root"])
    assert "<table" in text and "lr_too_high (error" in text and "live" in text
    nbformat.write(nb, str(tmp_path / "executed.ipynb"))
    assert json.load(open(tmp_path / "executed.ipynb"))["cells"]
