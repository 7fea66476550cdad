"""`traindoc diagnose ROOT --format markdown` for a CI job summary, read back through a real
Markdown parser; `--format json` carries its schema version."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from markdown_it import MarkdownIt

from tests.test_cli import _unreadable_tb_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "sample_runs")


@pytest.fixture
def ci_root(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    shutil.copytree(os.path.join(SAMPLES, "overfit-mlp-adam"), root / "overfit-mlp-adam")
    shutil.copytree(os.path.join(SAMPLES, "healthy-mlp-sgd"), root / "healthy-mlp-sgd")
    shutil.copytree(os.path.join(SAMPLES, "lr-high-cnn-adam"), root / "a|b <lr>")
    _unreadable_tb_run(root / "opaque-tags")
    (root / "notes.txt").write_text("not a run")
    return root


def _diagnose(root, *args, tmp_path):
    env = {**os.environ, "TRAINDOC_CACHE": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", "traindoc.cli", "diagnose", str(root), *args],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)


def _table(tokens) -> list[list[str]]:
    """The rows (header first) of the first table, as the parser read each cell."""
    rows, row, inside = [], None, False
    for t in tokens:
        if t.type == "table_open":
            inside = True
        elif t.type == "table_close":
            break
        elif inside and t.type == "tr_open":
            row = []
        elif inside and t.type == "tr_close":
            rows.append(row)
        elif inside and t.type == "inline":
            row.append(t.content)
    return rows


def _unescape(text: str) -> str:
    return MarkdownIt("commonmark").renderInline(text).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def test_markdown_summary_parses_into_one_row_per_finding(ci_root, tmp_path):
    out = _diagnose(ci_root, "--format", "markdown", tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    md = MarkdownIt("commonmark").enable("table")
    tokens = md.parse(out.stdout)
    rows = _table(tokens)
    assert rows[0] == ["run", "finding", "severity", "steps", "evidence", "advice"]
    body = rows[1:]
    assert body and all(len(r) == 6 for r in body)
    by_run = {}
    for r in body:
        by_run.setdefault(_unescape(r[0]), []).append(r)
    assert set(by_run) == {"overfit-mlp-adam", "healthy-mlp-sgd", "a|b <lr>"}  # a pipe stays in its cell
    (over,) = [r for r in by_run["overfit-mlp-adam"] if r[1] == "`overfitting`"]  # rule ids as code
    assert over[2] == "warning" and "–" in over[3] and "=" in over[4] and any(c.isdigit() for c in over[4])
    assert "stop early" in over[5]
    assert any(r[1] == "`lr_too_high`" for r in by_run["a|b <lr>"])
    assert [r[1:3] for r in by_run["healthy-mlp-sgd"]] == [["none", "ok"]]
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert "Not diagnosed" in headings and "Not runs" in headings
    html = md.render(out.stdout)
    assert "opaque-tags" in html.split("Not diagnosed", 1)[1] and "notes.txt" in html
    assert "<lr>" not in html  # a run's name cannot add markup


def test_json_form_is_versioned(ci_root, tmp_path):
    out = _diagnose(ci_root, "--format", "json", tmp_path=tmp_path)
    doc = json.loads(out.stdout)
    assert doc["schema"] == "traindoc.diagnose/1"
    assert {r["run"] for r in doc["runs"]} == {"overfit-mlp-adam", "healthy-mlp-sgd", "a|b <lr>", "opaque-tags"}
    assert doc["not_runs"] == [str(ci_root / "notes.txt")]
    same = json.loads(_diagnose(ci_root, "--json", tmp_path=tmp_path).stdout)
    assert same == doc
    documented = open(os.path.join(ROOT, "docs", "diagnose-json.md"), encoding="utf-8").read()
    assert doc["schema"] in documented
    for field in ("run", "path", "diagnosed", "findings", "skipped", "found", "rule", "severity", "steps",
                  "evidence", "advice", "unreadable", "not_runs"):
        assert f"`{field}`" in documented, field
