"""Every page on copies of real sample runs: the Streamlit pages through AppTest, the run page
(served beside Streamlit, app/runview) through the view its route sends. The browser tests
(test_browser.py) draw the same pages in chromium."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(ROOT, "app", "dashboard.py")
SAMPLES = os.path.join(ROOT, "sample_runs")


@pytest.fixture
def runs_root(tmp_path, monkeypatch):
    root = tmp_path / "root"
    root.mkdir()
    for name in ("overfit-mlp-adam", "healthy-mlp-sgd", "lr-high-cnn-adam", "frozen-conv-cnn-adam"):
        shutil.copytree(os.path.join(SAMPLES, name), root / name)
    monkeypatch.setenv("TRAINDOC_ROOT", str(root))
    monkeypatch.setenv("TRAINDOC_CACHE", str(tmp_path / "cache"))
    return root


def app(page: str | None = None, **query) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=60)
    for k, v in query.items():
        at.query_params[k] = v
    if page:
        at.switch_page(f"screens/{page}.py")
    return at.run()


def view(name: str | None, **settings) -> dict:
    """What the run page's route sends for ?run=NAME: facts, findings and figures, as JSON."""
    from traindoc.app.runview import build

    text, _ = build.view(name, **settings)
    return json.loads(text)


def charts_of(v: dict) -> list[str]:
    return [k for k, _ in v["figures"]["charts"]]


def plain(markdown: str) -> str:
    """What the reader sees of escaped markdown."""
    return markdown.replace("\\", "")


def texts(at) -> str:
    parts = [e.value for kind in ("markdown", "caption", "warning", "error", "info", "success", "title")
             for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def test_runs_page_lists_every_run_with_findings(runs_root):
    at = app()
    assert not at.exception
    df = at.dataframe[0].value
    assert sorted(df["run"]) == ["frozen-conv-cnn-adam", "healthy-mlp-sgd", "lr-high-cnn-adam", "overfit-mlp-adam"]
    row = df.set_index("run").loc["overfit-mlp-adam"]
    assert list(row["findings"]) == ["overfitting"] and row["status"] == "finished" and row["steps"] == 1500
    assert 0 < row["best val acc"] < 1
    assert "lr=" in row["hyperparameters"]
    links = [m.value for m in at.markdown if 'href="run?run=' in m.value]
    assert len(links) == 4 and any('href="run?run=overfit-mlp-adam"' in m for m in links)


def test_runs_page_filter(runs_root):
    at = app()
    at.text_input(key="runs_filter").input("overfit").run()
    assert list(at.dataframe[0].value["run"]) == ["overfit-mlp-adam"]
    at.text_input(key="runs_filter").input("update_ratio").run()  # findings are searchable too
    assert list(at.dataframe[0].value["run"]) == ["frozen-conv-cnn-adam"]


def test_bad_run_shows_its_own_message_and_the_rest_works(runs_root):
    (runs_root / "broken").mkdir()
    (runs_root / "broken" / "meta.json").write_text("{oops")
    (runs_root / "starting").mkdir()
    (runs_root / "starting" / "meta.json").write_text('{"schema_version": 1, "status": "running"}')
    at = app()
    assert not at.exception
    assert "broken" in texts(at) and "cannot be shown" in texts(at)
    assert len(at.dataframe[0].value) == 6
    v = view("broken")
    assert v["state"] == "error" and v["error"]
    v = view("starting")  # started, nothing flushed: a run with no series, no charts
    assert v["state"] == "run" and not v["has_series"] and v["figures"]["charts"] == []


def test_run_page_charts_and_findings(runs_root):
    v = view("overfit-mlp-adam")
    assert charts_of(v) == ["loss", "acc", "lr", "ratio"]
    (f,) = v["findings"]
    assert f["rule"] == "overfitting" and f["severity"] == "warning" and "stop early at step" in f["advice"]
    assert "best_step = " in f["evidence"]
    loss = dict(v["figures"]["charts"])["loss"]
    assert any(a.get("text") == "overfitting" for a in loss["layout"]["annotations"])  # drawn on the chart
    v2 = view("overfit-mlp-adam", smoothing=0.9, log_y=True)
    assert charts_of(v2) == charts_of(v) and v2["smoothing"] == 0.9 and v2["log_y"]
    loss2 = dict(v2["figures"]["charts"])["loss"]
    assert loss2["layout"]["yaxis"]["type"] == "log" and loss2["data"] != loss["data"]  # smoothed more


def test_run_view_is_kept_until_the_run_changes(runs_root):
    """The figures of an unchanged run are built once; new bytes make a new view and ETag."""
    from traindoc.app.runview import build

    first = build.view("healthy-mlp-sgd")
    assert build.view("healthy-mlp-sgd") == first
    assert build.view("healthy-mlp-sgd", smoothing=0.0)[1] != first[1]
    with open(runs_root / "healthy-mlp-sgd" / "meta.json") as fh:
        meta = json.load(fh)
    meta["status"] = "crashed"
    with open(runs_root / "healthy-mlp-sgd" / "meta.json", "w") as fh:
        json.dump(meta, fh)
    text, etag = build.view("healthy-mlp-sgd")
    assert etag != first[1] and json.loads(text)["status"] == "crashed"


def test_diverged_run_is_an_error_finding(runs_root):
    v = view("lr-high-cnn-adam")
    assert any(f["rule"] == "lr_too_high" and f["severity"] == "error" and "diverged = True" in f["evidence"]
               for f in v["findings"])


def test_healthy_run_is_diagnosed_with_no_findings(runs_root):
    v = view("healthy-mlp-sgd")
    assert v["diagnosed"] and v["findings"] == []


@pytest.mark.parametrize("name", ["../../etc", "/etc", "..", "healthy-mlp-sgd/../../x", "%2e%2e/etc"])
def test_run_page_refuses_anything_but_a_listed_run(runs_root, name):
    v = view(name)
    assert v == {"state": "missing", "name": name}


def test_run_page_without_a_name_lists_the_runs(runs_root):
    v = view(None)
    assert v["state"] == "pick" and v["runs"] == sorted(os.listdir(runs_root)) and v["more"] == 0


def test_symlink_out_of_root_is_not_listed(runs_root, tmp_path):
    outside = tmp_path / "outside"
    shutil.copytree(os.path.join(SAMPLES, "healthy-cnn-sgd"), outside)
    os.symlink(outside, runs_root / "escape")
    at = app()
    assert "escape" not in list(at.dataframe[0].value["run"])
    assert view("escape")["state"] == "missing"


def test_compare_page(runs_root):
    at = app("compare", runs="overfit-mlp-adam,healthy-mlp-sgd")
    assert not at.exception
    assert len(at.get("plotly_chart")) == 4  # loss, val acc, LR overlays + scatter
    table = at.dataframe[0].value
    assert set(table["run"]) == {"overfit-mlp-adam", "healthy-mlp-sgd"}
    assert {"lr", "best val acc"} <= set(table.columns)
    (links,) = [m.value for m in at.markdown if m.value.startswith("Open: ")]
    assert 'href="run?run=overfit-mlp-adam"' in links and 'href="run?run=healthy-mlp-sgd"' in links
    at.selectbox(key="cmp-x").set_value("lr").run()
    assert not at.exception


def test_empty_root(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINDOC_ROOT", str(tmp_path))
    at = app()
    assert not at.exception and any("No runs here yet" in i.value for i in at.info)


def test_tensorboard_run_in_root(runs_root):
    """A TensorBoard logdir under ROOT is a run like any other."""
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(runs_root / "tb-run"))
    for i in range(300):
        w.add_scalar("loss/train", 2.0 * 0.99 ** i, i)
        w.add_scalar("lr", 0.1, i)
    for e in range(3):
        w.add_scalar("accuracy/val", 0.5 + 0.1 * e, 100 * (e + 1))
        w.add_scalar("accuracy/train", 0.6 + 0.1 * e, 100 * (e + 1))
    w.close()
    at = app()
    assert "tb-run" in list(at.dataframe[0].value["run"])
    v = view("tb-run")
    assert v["status"] == "live" and v["live"] and v["tensorboard"]  # written seconds ago: a live TensorBoard run
    assert charts_of(v) == ["loss", "acc", "lr"]  # no update ratios in this log


def test_lr_is_drawn_as_steps_held_to_the_end():
    """LRs are written on change: charts must draw steps that hold to the last step, not ramps."""
    from traindoc.app import charts
    from traindoc.reader import read_run

    decayed = read_run(os.path.join(SAMPLES, "healthy-mlp-sgd"))  # 0.05, cut to 0.005 at step 2001
    constant = read_run(os.path.join(SAMPLES, "lr-high-mlp-sgd"))  # one value all run long
    fig = charts.overlay_figure([decayed, constant], lambda r: charts.held_series(r, "lr/pg0"), "LR", "lr",
                                log_y=True, shape="hv")
    a, b = fig.data
    assert a.line.shape == "hv" and list(a.x) == [1, 2001, 3000] and list(a.y) == pytest.approx([0.05, 0.005, 0.005])
    assert list(b.x) == [1, 1250] and b.y[0] == b.y[1] == pytest.approx(0.2)
    (run_trace,) = charts.lr_figure(decayed, []).data
    assert run_trace.line.shape == "hv" and list(run_trace.x) == [1, 2001, 3000]


def test_validation_points_get_markers_only_while_few():
    """A sample run's few validation points each get a marker; a run evaluated 1,000 times gets a
    line (the markers would only overlap, each an SVG element for the browser to draw)."""
    import pandas as pd

    from traindoc import format as fmt
    from traindoc.app import charts
    from traindoc.reader import read_run
    from traindoc.series import RunSeries

    few = read_run(os.path.join(SAMPLES, "overfit-mlp-adam"))
    assert 0 < len(few.get(fmt.VAL_LOSS)) <= charts.MAX_MARKERS

    def val_modes(run):
        traces = list(charts.loss_figure(run, []).data) + list(charts.accuracy_figure(run, []).data)
        return {t.name: t.mode for t in traces if t.name and t.name.startswith("val")}

    assert set(val_modes(few).values()) == {"lines+markers"}
    steps = np.arange(1, 10_001)
    many = RunSeries.from_dict("many", {
        f"{fmt.LOSS_WINDOW}/mean": pd.Series(1 / np.sqrt(steps), index=steps),
        fmt.TRAIN_ACC: pd.Series(1 - 1 / np.sqrt(steps), index=steps),
        fmt.VAL_LOSS: pd.Series(1.1 / np.sqrt(steps[::10]), index=steps[::10]),
        fmt.VAL_ACC: pd.Series(1 - 1.1 / np.sqrt(steps[::10]), index=steps[::10])})
    modes = val_modes(many)
    assert set(modes) == {"val loss", "val acc (gap shaded)"} and set(modes.values()) == {"lines"}


def test_undiagnosed_run_is_never_shown_as_healthy(runs_root):
    from tests.test_cli import _unreadable_tb_run

    _unreadable_tb_run(runs_root / "opaque")
    at = app()
    table = at.dataframe[0].value
    row = table[table["run"] == "opaque"].iloc[0]
    assert "not diagnosed" in row["findings"]
    assert any("opaque" in plain(w.value) and "not diagnosed" in plain(w.value) for w in at.warning)
    v = view("opaque")
    assert not v["diagnosed"] and v["findings"] == []  # never "No problems found"
    assert "missing train loss" in v["not_diagnosed"]


def test_runs_page_lists_what_is_not_a_run(runs_root):
    (runs_root / "notes.txt").write_text("hello")
    at = app()
    assert any("Not runs" in c.value and "notes.txt" in plain(c.value) for c in at.caption)


def test_unmapped_series_can_be_given_a_meaning(runs_root):
    """A logdir under tags nobody can place: the user says what `metric_a` is, the choice is
    saved beside the logs, and the run is read and diagnosed again."""
    import tomllib

    from tests.test_cli import _unreadable_tb_run

    from traindoc.app.runview import build

    _unreadable_tb_run(runs_root / "opaque")
    v = view("opaque")
    assert not v["diagnosed"] and set(v["mappable"]) >= {"metric_a", "metric_b"}
    for bad in [({"nope": "train loss, per step"}, []), ({"metric_a": "weights"}, []), ({}, ["nope"]), ({}, [])]:
        with pytest.raises(ValueError):
            build.save_mapping("opaque", *bad)
    assert not (runs_root / "opaque" / "traindoc-tb.toml").exists()
    assert build.save_mapping("opaque", {"metric_a": "train loss, per step"}, ["metric_b"]) == "traindoc-tb.toml"
    saved = tomllib.loads((runs_root / "opaque" / "traindoc-tb.toml").read_text())
    assert saved["map"]["metric_a"] == "train/loss" and saved["map"]["ignore"] == ["^metric_b$"]
    v = view("opaque")
    assert v["diagnosed"]
    assert any(f["rule"] == "lr_too_high" for f in v["findings"])  # the exploding loss is seen now


def test_a_sweep_is_judged_together_and_drawn_on_the_compare_page(tmp_path, monkeypatch):
    """Eleven runs of one of the corpus's LR sweeps (SGD on the cluster task), real training runs:
    the runs page and the run page give the far-too-low LR its finding with the sibling that did
    better; the compare page draws the sweep with its best LR starred."""
    root = tmp_path / "sweep"
    src = os.path.join(ROOT, "corpus", "runs", "clusters")
    names = sorted(n for n in os.listdir(src) if n.startswith("clusters-sweep-sgd-") and n.endswith("-s2"))
    assert len(names) == 11
    for n in names:
        shutil.copytree(os.path.join(src, n), root / n)
    monkeypatch.setenv("TRAINDOC_ROOT", str(root))
    monkeypatch.setenv("TRAINDOC_CACHE", str(tmp_path / "cache"))
    at = app()
    assert not at.exception
    rows = at.dataframe[0].value.set_index("run")
    assert "lr_too_low" in list(rows.loc["clusters-sweep-sgd-lr0.1-s2", "findings"])
    v = view("clusters-sweep-sgd-lr0.1-s2")
    assert any(f["rule"] == "lr_too_low" and "in this sweep" in f["advice"] + f["evidence"] for f in v["findings"])
    at = app("compare", runs=",".join(names))
    assert not at.exception
    figs = [c.proto.spec for c in at.get("plotly_chart")]
    sweep = [f for f in figs if "LR sweep" in f]
    assert len(sweep) == 1 and '"best LR"' in sweep[0] and '"type":"log"' in sweep[0].replace(" ", "")


def test_run_view_is_strict_json_whatever_the_meta_holds(runs_root):
    """A config with NaN and infinities, numpy numbers and a non-number 'updated': the run page
    still gets strict JSON (a browser's JSON.parse refuses NaN) and shows the run."""
    import numpy as np

    path = runs_root / "overfit-mlp-adam" / "meta.json"
    meta = json.loads(path.read_text())
    meta["config"].update({"lr": float("nan"), "clip": float("inf"), "warmup": float("-inf")})
    meta["updated"] = "yesterday"
    path.write_text(json.dumps(meta))  # Python writes NaN/Infinity tokens, as json.dump does by default
    from traindoc.app.runview import build

    text, _ = build.view("overfit-mlp-adam")
    v = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON token {c}"))
    assert v["meta"]["config"]["lr"] == "nan" and v["meta"]["config"]["clip"] == "inf"
    assert v["updated"] == "yesterday" and charts_of(v) == ["loss", "acc", "lr", "ratio"]
    assert build.jsonable({"a": np.int64(3), "b": np.float32(0.5), "c": (1, np.nan)}) == {"a": 3, "b": 0.5, "c": [1, "nan"]}


def test_a_run_page_opened_from_a_link_reads_only_its_own_folder(tmp_path, monkeypatch):
    """Opened straight from a link on a fresh index, the run page finds its run by a walk and
    reads only the runs of its folder: its siblings (an LR sweep, judged together) are indexed,
    the rest of the root is not read until a page lists it."""
    from traindoc.provider import provider_for

    root = tmp_path / "root"
    src = os.path.join(ROOT, "corpus", "runs", "clusters")
    sweep = sorted(n for n in os.listdir(src) if n.startswith("clusters-sweep-sgd-") and n.endswith("-s2"))
    for n in sweep:
        shutil.copytree(os.path.join(src, n), root / "sweep" / n)
    solo = ("overfit-mlp-adam", "healthy-mlp-sgd", "lr-high-cnn-adam")
    for i, n in enumerate(solo):  # one run per folder: no siblings
        shutil.copytree(os.path.join(SAMPLES, n), root / f"solo{i}" / n)
    monkeypatch.setenv("TRAINDOC_ROOT", str(root))
    monkeypatch.setenv("TRAINDOC_CACHE", str(tmp_path / "cache"))
    catalog = provider_for(str(root)).catalog

    v = view("sweep/clusters-sweep-sgd-lr0.1-s2")
    assert any(f["rule"] == "lr_too_low" and "in this sweep" in f["advice"] + f["evidence"] for f in v["findings"])
    assert catalog.count() == len(sweep)
    v = view("solo2/lr-high-cnn-adam")
    assert v["state"] == "run" and any(f["rule"] == "lr_too_high" for f in v["findings"])
    assert catalog.count() == len(sweep)  # alone in its folder: read by the page, not indexed
    done = catalog.refresh()  # the runs page: everything else is indexed now, the sweep is not read again
    assert done.read == len(solo) and catalog.count() == len(sweep) + len(solo)
    assert catalog.refresh().read == 0


def test_assets_are_served_whole_and_cached_for_good():
    """plotly.js goes out from memory, byte for byte the package's file, in one body with a
    length (so a busy server does not send it in many small pieces); an unknown asset is a 404."""
    import plotly
    from starlette.requests import Request

    from traindoc.app import runview

    (route,) = [r for r in runview.routes() if r.path == "/assets/{file}"]

    def get(name):
        return route.endpoint(Request({"type": "http", "method": "GET", "path": f"/assets/{name}", "headers": [],
                                       "query_string": b"", "path_params": {"file": name}}))

    got = get(f"plotly-{plotly.__version__}.min.js")
    with open(runview.PLOTLY_JS, "rb") as f:
        assert got.status_code == 200 and got.body == f.read()
    assert got.headers["content-length"] == str(len(got.body))
    assert got.headers["content-type"].startswith("text/javascript") and "immutable" in got.headers["cache-control"]
    assert get("run.js").status_code == 200
    assert get("other.js").status_code == 404
