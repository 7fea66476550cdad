"""What the one-way house promised beyond its import graph: one naming of runs, one status, one
rule registry the charts read, the charts drawing the loss curve the rules judge, and a run page
that compares a polling tab's ETag before it builds anything."""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traindoc import format as fmt
from traindoc.series import RunSeries

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "sample_runs")


def test_a_run_named_like_its_root_keeps_its_own_path(tmp_path, monkeypatch):
    """exp/exp is the run 'exp' inside the root 'exp': its report must point at exp/exp, not at
    the root (the old code rebuilt paths from names, and the name equals the root's name)."""
    from traindoc.diagnose import diagnose_tree

    monkeypatch.setenv("TRAINDOC_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "exp"
    root.mkdir()
    shutil.copytree(os.path.join(SAMPLES, "healthy-mlp-sgd"), root / "exp")
    shutil.copytree(os.path.join(SAMPLES, "overfit-mlp-adam"), root / "other")
    reports, _ = diagnose_tree(str(root))
    paths = {r.name: r.path for r in reports}
    assert paths == {"exp": str(root / "exp"), "other": str(root / "other")}
    assert all(r.error is None for r in reports)


_META = st.fixed_dictionaries({}, optional={
    "status": st.sampled_from(["running", "finished", "crashed", "ended", "no end marker", "unreadable", "odd", None]),
    "updated": st.one_of(st.none(), st.floats(0, 2000, allow_nan=False)),
})


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(_META, min_size=1, max_size=12))
def test_the_catalogs_status_filter_agrees_with_the_pages_status(metas):
    """The runs table filters in SQL and the pages show `status_of`: for any rows, each shown
    status selects exactly the rows the pages show with it."""
    from traindoc.status import SHOWN, status_of, status_sql

    now = 1000.0
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE runs (name TEXT, status TEXT, updated REAL)")
    db.executemany("INSERT INTO runs VALUES (?, ?, ?)",
                   [(str(i), m.get("status"), m.get("updated")) for i, m in enumerate(metas)])
    for shown in SHOWN:
        cond, args = status_sql(shown, now=now)
        got = {r[0] for r in db.execute(f"SELECT name FROM runs WHERE {cond}", args)}
        want = {str(i) for i, m in enumerate(metas) if status_of(m, now=now) == shown}
        assert got == want, shown


def _per_step_run(n: int = 5000) -> RunSeries:
    rng = np.random.default_rng(0)
    steps = np.arange(n)
    loss = 2.3 * np.exp(-steps / 1500) + 0.2 + rng.normal(0, 0.05, n)
    return RunSeries.from_dict("per-step", {fmt.LOSS_RAW: pd.Series(loss, index=steps)}, {"source": "tensorboard"})


def test_the_loss_chart_draws_the_curve_the_rules_judge():
    """A per-step loss of 5,000 points: the rules judge ~100 rolling windows; the chart's line is
    those windows (the old chart drew 1,000 windows of its own), and the raw points sit behind."""
    from traindoc.app.charts import loss_figure
    from traindoc.rules.curves import loss_curve

    run = _per_step_run()
    fig = loss_figure(run, [], smoothing=0.0)
    traces = {t.name: t for t in fig.data}
    judged = loss_curve(run)
    line = traces["train loss (smoothed)"]
    assert np.array_equal(np.asarray(line.x), judged.steps) and np.allclose(np.asarray(line.y), judged.mean)
    assert len(traces["train loss (raw)"].x) > 10 * len(judged)  # the logged points (min/max thinned) behind


def test_every_rule_says_where_its_findings_are_drawn_and_the_charts_follow_it():
    from traindoc.app.charts import loss_figure, mark_findings
    from traindoc.rules import CHARTS_OF, RULE_IDS, RULES, Finding

    assert set(CHARTS_OF) == set(RULE_IDS) and all(r.CHARTS for r in RULES)
    assert set().union(*CHARTS_OF.values()) <= {"loss", "acc", "lr", "ratio"}
    run = _per_step_run(500)
    for rule in RULE_IDS:
        for chart in ("loss", "acc", "lr", "ratio"):
            fig = loss_figure(run, [], smoothing=0.0)
            mark_findings(fig, [Finding(rule, "warning", (10, 100), {}, "advice")], chart)
            shaded = any(a.text == rule for a in fig.layout.annotations)
            assert shaded == (chart in CHARTS_OF[rule]), (rule, chart)


@pytest.fixture
def one_root(tmp_path, monkeypatch):
    root = tmp_path / "root"
    root.mkdir()
    for name in ("healthy-mlp-sgd", "overfit-mlp-adam"):
        shutil.copytree(os.path.join(SAMPLES, name), root / name)
    monkeypatch.setenv("TRAINDOC_ROOT", str(root))
    monkeypatch.setenv("TRAINDOC_CACHE", str(tmp_path / "cache"))
    return root


def _get_json(query: str, etag: str | None = None):
    """GET /api/run?QUERY through the run page's own route (a real starlette Request)."""
    from starlette.requests import Request

    from traindoc.app.runview import routes

    endpoint = next(r.endpoint for r in routes() if r.path == "/api/run")
    headers = [(b"if-none-match", f'"{etag}"'.encode())] if etag else []
    scope = {"type": "http", "method": "GET", "path": "/api/run", "query_string": query.encode(),
             "headers": headers}
    return endpoint(Request(scope))


def test_a_polling_tab_gets_its_304_before_anything_is_built(one_root, monkeypatch):
    from traindoc.app.runview import build
    from traindoc.catalog import Catalog

    first = _get_json("run=healthy-mlp-sgd")
    assert first.status_code == 200
    etag = first.headers["etag"].strip('"')
    built, refreshed = [], []
    real_load, real_refresh = build.with_siblings, Catalog.refresh
    monkeypatch.setattr(build, "with_siblings", lambda *a, **k: built.append(a) or real_load(*a, **k))
    monkeypatch.setattr(Catalog, "refresh", lambda self, *a, **k: refreshed.append(1) or real_refresh(self, *a, **k))
    for _ in range(3):
        again = _get_json("run=healthy-mlp-sgd", etag)
        assert again.status_code == 304 and again.headers["etag"] == f'"{etag}"'
    assert built == [] and refreshed == []  # no read, no catalog refresh, no walk of ROOT
    meta_path = one_root / "healthy-mlp-sgd" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["status"] = "crashed"
    meta_path.write_text(json.dumps(meta))
    os.utime(meta_path, ns=(os.stat(meta_path).st_mtime_ns + 10**9,) * 2)
    changed = _get_json("run=healthy-mlp-sgd", etag)
    assert changed.status_code == 200 and changed.headers["etag"] != f'"{etag}"' and len(built) == 1
    assert json.loads(changed.body)["status"] == "crashed"


def test_a_live_run_page_goes_stale_without_new_bytes(one_root):
    """A live run's view is only good while the run is inside its live window: past it the same
    files give a new view (status stale), so the 304 shortcut must not hold it back."""
    from traindoc.status import STALE_SECS

    meta_path = one_root / "healthy-mlp-sgd" / "meta.json"
    meta = json.loads(meta_path.read_text())
    import time

    meta.update(status="running", updated=time.time() - STALE_SECS + 0.5)
    meta_path.write_text(json.dumps(meta))
    first = _get_json("run=healthy-mlp-sgd")
    assert json.loads(first.body)["status"] == "live"
    time.sleep(1.0)
    later = _get_json("run=healthy-mlp-sgd", first.headers["etag"].strip('"'))
    assert later.status_code == 200 and json.loads(later.body)["status"] == "stale"


def test_the_provider_cuts_a_run_to_keys_steps_and_points(one_root):
    from traindoc.provider import provider_for

    prov = provider_for(str(one_root))
    assert sorted(prov.list_runs()) == ["healthy-mlp-sgd", "overfit-mlp-adam"]
    whole = prov.read("healthy-mlp-sgd")
    key = fmt.LOSS_WINDOW + "/mean"
    cut = prov.read("healthy-mlp-sgd", keys=[key, "no/such"], steps=(100, 2000), max_points=10)
    assert cut.keys == [key]
    s = cut.get(key)
    full = whole.get(key)
    inside = full[(full.index >= 100) & (full.index <= 2000)]
    assert len(s) <= 11 and s.index[0] == inside.index[0] and s.index[-1] == inside.index[-1]
    assert np.allclose(s.to_numpy(), inside.loc[s.index].to_numpy())
    with pytest.raises(KeyError):
        prov.read("../etc")
    assert math.isfinite(float(s.iloc[0]))
