"""Every page through Streamlit's AppTest, on copies of real sample runs."""

from __future__ import annotations

import os
import shutil

import pytest
from streamlit.testing.v1 import AppTest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(ROOT, "app", "main.py")
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
    assert len(at.get("page_link")) == 4


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
    at = app("run", run="broken")
    assert not at.exception and "cannot be shown" in texts(at)
    at = app("run", run="starting")
    assert not at.exception and "No series yet" in texts(at)


def test_run_page_charts_and_findings(runs_root):
    at = app("run", run="overfit-mlp-adam")
    assert not at.exception
    assert len(at.get("plotly_chart")) == 4  # loss, accuracy, LR, update ratios
    (w,) = at.warning
    assert "overfitting" in w.value and "stop early at step" in w.value
    at.slider(key="smoothing").set_value(0.9).run()
    at.toggle(key="log_y").set_value(True).run()
    assert not at.exception and len(at.get("plotly_chart")) == 4


def test_diverged_run_shows_an_error_box(runs_root):
    at = app("run", run="lr-high-cnn-adam")
    assert any("lr_too_high" in plain(e.value) and "diverged" in e.value.lower() for e in at.error)


def test_healthy_run_says_so(runs_root):
    at = app("run", run="healthy-mlp-sgd")
    assert any("No problems found" in s.value for s in at.success)


@pytest.mark.parametrize("name", ["../../etc", "/etc", "..", "healthy-mlp-sgd/../../x", "%2e%2e/etc"])
def test_run_page_refuses_anything_but_a_listed_run(runs_root, name):
    at = app("run", run=name)
    assert not at.exception
    assert any("No run named" in e.value for e in at.error)
    assert not at.get("plotly_chart")


def test_symlink_out_of_root_is_not_listed(runs_root, tmp_path):
    outside = tmp_path / "outside"
    shutil.copytree(os.path.join(SAMPLES, "healthy-cnn-sgd"), outside)
    os.symlink(outside, runs_root / "escape")
    at = app()
    assert "escape" not in list(at.dataframe[0].value["run"])
    at = app("run", run="escape")
    assert any("No run named" in e.value for e in at.error)


def test_compare_page(runs_root):
    at = app("compare", runs="overfit-mlp-adam,healthy-mlp-sgd")
    assert not at.exception
    assert len(at.get("plotly_chart")) == 4  # loss, val acc, LR overlays + scatter
    table = at.dataframe[0].value
    assert set(table["run"]) == {"overfit-mlp-adam", "healthy-mlp-sgd"}
    assert {"lr", "best val acc"} <= set(table.columns)
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
    at = app("run", run="tb-run")
    assert not at.exception
    assert "status **live**" in texts(at)  # written seconds ago: a live TensorBoard run
    # loss, accuracy, LR (no update ratios in this log), drawn by the live chart component
    assert len(at.get("component_instance")) == 3 and not at.get("plotly_chart")


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


def test_undiagnosed_run_is_never_shown_as_healthy(runs_root):
    from tests.test_cli import _unreadable_tb_run

    _unreadable_tb_run(runs_root / "opaque")
    at = app()
    table = at.dataframe[0].value
    row = table[table["run"] == "opaque"].iloc[0]
    assert "not diagnosed" in row["findings"]
    assert any("opaque" in plain(w.value) and "not diagnosed" in plain(w.value) for w in at.warning)
    at = app("run", run="opaque")
    assert not at.success  # no "No problems found"
    assert any("Not diagnosed" in plain(w.value) and "missing train loss" in plain(w.value) for w in at.warning)


def test_runs_page_lists_what_is_not_a_run(runs_root):
    (runs_root / "notes.txt").write_text("hello")
    at = app()
    assert any("Not runs" in c.value and "notes.txt" in plain(c.value) for c in at.caption)


def test_unmapped_series_can_be_given_a_meaning(runs_root):
    """A logdir under tags nobody can place: the user says what `metric_a` is, the choice is
    saved beside the logs, and the run is read and diagnosed again."""
    import tomllib

    from tests.test_cli import _unreadable_tb_run

    _unreadable_tb_run(runs_root / "opaque")
    at = app("run", run="opaque")
    assert any("Not diagnosed" in plain(w.value) for w in at.warning)
    at.selectbox(key="map-metric_a").set_value("train loss, per step")
    at.selectbox(key="map-metric_b").set_value("ignore")
    at.button[0].click().run()
    saved = tomllib.loads((runs_root / "opaque" / "traindoc-tb.toml").read_text())
    assert saved["map"]["metric_a"] == "train/loss" and saved["map"]["ignore"] == ["^metric_b$"]
    at = app("run", run="opaque")
    assert not any("Not diagnosed" in plain(w.value) for w in at.warning)
    assert any("lr_too_high" in plain(e.value) for e in at.error)  # the exploding loss is seen now


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
    at = app("run", run="clusters-sweep-sgd-lr0.1-s2")
    assert not at.exception
    assert any("lr_too_low" in plain(w.value) and "in this sweep" in plain(w.value) for w in at.warning)
    at = app("compare", runs=",".join(names))
    assert not at.exception
    figs = [c.proto.spec for c in at.get("plotly_chart")]
    sweep = [f for f in figs if "LR sweep" in f]
    assert len(sweep) == 1 and '"best LR"' in sweep[0] and '"type":"log"' in sweep[0].replace(" ", "")
