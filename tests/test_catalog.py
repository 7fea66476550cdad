"""The run catalog: incremental, judged together, queried in the index, the same in worker processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from traindoc.catalog import pool as catalog_pool
from traindoc.catalog import version as catalog_version
from traindoc import collector
from traindoc.catalog import Catalog

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "sample_runs")
SWEEP = os.path.join(ROOT, "corpus", "runs", "clusters")


def _copy(names, dest):
    for n in names:
        shutil.copytree(os.path.join(SAMPLES, n), os.path.join(dest, n))


@pytest.fixture
def cat_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    _copy(["overfit-mlp-adam", "healthy-mlp-sgd", "lr-high-cnn-adam"], root)
    return root, Catalog(str(root), cache=str(tmp_path / "cache"))


def test_only_changed_runs_are_read_again(cat_root):
    root, cat = cat_root
    assert cat.refresh().read == 3
    assert cat.refresh().read == 0  # nothing changed: nothing read, finished or not
    meta = root / "healthy-mlp-sgd" / "meta.json"
    time.sleep(0.01)
    tmp = root / "healthy-mlp-sgd" / "meta.json.tmp"
    tmp.write_text(meta.read_text())
    os.replace(tmp, meta)  # how the collector rewrites meta.json (a resume does): its folder changed
    assert cat.refresh().read == 1
    (root / "later").mkdir()
    assert cat.refresh().read == 0
    _copy(["lr-low-mlp-sgd"], root / "later")  # a run appears inside a folder that held none
    assert cat.refresh().read == 1 and cat.count() == 4
    shutil.rmtree(root / "later")
    shutil.rmtree(root / "overfit-mlp-adam")
    _copy(["underfit-linear-sgd"], root)
    r = cat.refresh()
    assert (r.read, r.removed, r.listed) == (1, 2, 3)  # the new one read; overfit and later/... gone
    assert sorted(x["name"] for x in cat.query()[0]) == ["healthy-mlp-sgd", "lr-high-cnn-adam", "underfit-linear-sgd"]


def test_new_code_reindexes_everything(cat_root, monkeypatch):
    _, cat = cat_root
    cat.refresh()
    monkeypatch.setattr(catalog_version, "_CODE_VERSION", "another")
    assert cat.refresh().read == 3


def test_rows_hold_what_the_page_and_the_cli_show(cat_root):
    root, cat = cat_root
    (root / "broken").mkdir()
    (root / "broken" / "meta.json").write_text("{oops")
    (root / "notes.txt").write_text("hello")
    cat.refresh()
    rows = {r["name"]: r for r in cat.query(limit=100)[0]}
    assert rows["overfit-mlp-adam"]["findings"] == ["overfitting"] and rows["overfit-mlp-adam"]["status"] == "finished"
    assert rows["overfit-mlp-adam"]["steps"] == 1500 and 0 < rows["overfit-mlp-adam"]["best_val_acc"] < 1
    assert "lr=" in rows["overfit-mlp-adam"]["hparams"]
    assert rows["broken"]["error"] and rows["broken"]["status"] == "unreadable"
    assert cat.not_runs() == ["notes.txt"]
    # the same reports as diagnosing each run by hand
    from traindoc.discovery import load
    from traindoc.rules import diagnose_run

    for rep in cat.reports():
        if rep.error:
            continue
        assert [f.to_dict() for f in rep.findings] == [f.to_dict() for f in diagnose_run(load(rep.path)[0]).findings]


def test_filter_sort_and_page_in_the_index(cat_root):
    _, cat = cat_root
    cat.refresh()
    assert [r["name"] for r in cat.query(text="overfit")[0]] == ["overfit-mlp-adam"]
    assert [r["name"] for r in cat.query(text="lr_too_high")[0]] == ["lr-high-cnn-adam"]  # a rule id
    by_acc = [r["best_val_acc"] for r in cat.query(order="best_val_acc", descending=True)[0]]
    assert by_acc == sorted(by_acc, reverse=True)
    page, total = cat.query(limit=2, offset=2)
    assert total == 3 and len(page) == 1
    assert cat.query(statuses=("finished",))[1] == 3 and cat.query(statuses=("live",))[1] == 0


def test_a_live_run_is_read_as_it_grows(tmp_path):
    import torch

    from tests.conftest import blobs, mlp, train_steps

    root = tmp_path / "root"
    x, y = blobs()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = collector.attach(model, opt, root=str(root), name="live", log_every=5, flush_secs=0.05)
    cat = Catalog(str(root), cache=str(tmp_path / "cache"))

    def steps(n):
        train_steps(run, model, opt, x, y, n, score=False)
        time.sleep(0.5)  # the writer flushes every 0.05 s

    steps(40)
    cat.refresh()
    (row,) = cat.query(statuses=("live",))[0]
    first = row["steps"]
    steps(40)
    assert cat.refresh().read == 1
    (row,) = cat.query()[0]
    assert row["steps"] > first
    run.close()
    cat.refresh()
    assert cat.query(statuses=("finished",))[1] == 1


def test_siblings_are_judged_together_and_again_when_one_goes(tmp_path):
    root = tmp_path / "sweep"
    names = sorted(n for n in os.listdir(SWEEP) if n.startswith("clusters-sweep-sgd-") and n.endswith("-s2"))
    for n in names:
        shutil.copytree(os.path.join(SWEEP, n), root / n)
    cat = Catalog(str(root), cache=str(tmp_path / "cache"))
    cat.refresh()
    rows = {r["name"]: r for r in cat.query(limit=100)[0]}
    low = [f for f in rows["clusters-sweep-sgd-lr0.1-s2"]["final"] if f["rule"] == "lr_too_low"]
    assert low and low[0]["evidence"]["sweep_best_run"].startswith("clusters-sweep-sgd-")
    best = low[0]["evidence"]["sweep_best_run"]
    shutil.rmtree(root / best)
    cat.refresh()
    rows = {r["name"]: r for r in cat.query(limit=100)[0]}
    after = [f for f in rows["clusters-sweep-sgd-lr0.1-s2"]["final"] if f["rule"] == "lr_too_low"]
    assert not after or after[0]["evidence"].get("sweep_best_run") != best


def test_worker_processes_give_the_same_index(tmp_path, monkeypatch):
    root = tmp_path / "root"
    _copy(["overfit-mlp-adam", "healthy-mlp-sgd", "lr-high-cnn-adam", "lr-low-mlp-sgd"], root)
    serial = Catalog(str(root), cache=str(tmp_path / "serial"))
    serial.refresh(workers=1)
    monkeypatch.setattr(catalog_pool, "PARALLEL_FROM", 2)
    parallel = Catalog(str(root), cache=str(tmp_path / "parallel"))
    seen = []
    parallel.refresh(workers=2, progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, 4) and seen[-1] == (4, 4)

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "updated"} for r in rows]

    assert strip(serial.query(limit=10)[0]) == strip(parallel.query(limit=10)[0])


def test_cli_diagnose_root_reads_through_the_catalog(tmp_path):
    root = tmp_path / "root"
    _copy(["overfit-mlp-adam", "healthy-mlp-sgd"], root)
    env = {**os.environ, "TRAINDOC_CACHE": str(tmp_path / "cache")}

    def diagnose():
        out = subprocess.run([sys.executable, "-m", "traindoc.cli", "diagnose", str(root), "--json"],
                             capture_output=True, text=True, env=env)
        return json.loads(out.stdout)

    first = diagnose()
    assert os.listdir(tmp_path / "cache" / "catalog")
    assert diagnose() == first
    assert {r["run"]: [f["rule"] for f in r["findings"]] for r in first["runs"]} == {
        "overfit-mlp-adam": ["overfitting"], "healthy-mlp-sgd": []}
    assert first["runs"][0]["path"].startswith(str(root))


def test_cli_shows_indexing_progress_on_a_terminal_only(tmp_path):
    """stderr on a terminal gets a progress bar while runs are read; piped stderr stays clean."""
    import pty

    from benchmarks.synth import write_run

    root = tmp_path / "root"
    for i in range(25):
        write_run(str(root / f"r{i:02d}"), 300, seed=i)
    env = {**os.environ, "TRAINDOC_CACHE": str(tmp_path / "tty-cache")}
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "traindoc.cli", "diagnose", str(root)], stdout=subprocess.DEVNULL,
                            stderr=slave, env=env)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    proc.wait()
    os.close(master)
    assert b"indexing runs [" in seen and b"25/25" in seen
    env["TRAINDOC_CACHE"] = str(tmp_path / "pipe-cache")
    out = subprocess.run([sys.executable, "-m", "traindoc.cli", "diagnose", str(root)], capture_output=True, env=env)
    assert b"indexing" not in out.stderr


def test_a_run_whose_name_is_not_utf8_breaks_nothing(tmp_path, monkeypatch):
    """SQLite holds names as UTF-8 text: such a run is reported rather than indexed, the CLI reads
    that root without the catalog (every run, the odd one included), and the runs page still lists
    the others with a word about it."""
    root = tmp_path / "root"
    _copy(["overfit-mlp-adam", "healthy-mlp-sgd"], root)
    odd = os.fsdecode(os.path.join(os.fsencode(str(root)), b"odd\xffrun"))
    shutil.copytree(os.path.join(SAMPLES, "lr-high-cnn-adam"), odd)
    cat = Catalog(str(root), cache=str(tmp_path / "cache"))
    assert cat.refresh().listed == 2 and cat.odd_names() == ["odd\\xffrun"]
    env = {**os.environ, "TRAINDOC_CACHE": str(tmp_path / "cli-cache")}
    out = subprocess.run([sys.executable, "-m", "traindoc.cli", "diagnose", str(root), "--json"],
                         capture_output=True, env=env)
    assert out.returncode == 0, out.stderr
    runs = {r["run"]: [f["rule"] for f in r["findings"]] for r in json.loads(out.stdout)["runs"]}
    assert len(runs) == 3 and runs["overfit-mlp-adam"] == ["overfitting"] and ["lr_too_high"] in runs.values()
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("TRAINDOC_ROOT", str(root))
    monkeypatch.setenv("TRAINDOC_CACHE", str(tmp_path / "app-cache"))
    at = AppTest.from_file(os.path.join(ROOT, "app", "dashboard.py"), default_timeout=60).run()
    assert not at.exception
    assert sorted(at.dataframe[0].value["run"]) == ["healthy-mlp-sgd", "overfit-mlp-adam"]
    assert any("not valid UTF-8" in w.value for w in at.warning)


def test_an_override_file_in_the_parent_folder_is_read_again(tmp_path):
    """traindoc-tb.toml beside a logdir (in its parent folder) says what its tags are: writing it
    makes the catalog read that run again, though none of the run's own files changed."""
    from tests.test_cli import _unreadable_tb_run

    root = tmp_path / "root"
    _unreadable_tb_run(root / "logs" / "opaque")
    cat = Catalog(str(root), cache=str(tmp_path / "cache"))
    cat.refresh()
    (row,), _ = cat.query()
    assert not row["diagnosed"]
    (root / "logs" / "traindoc-tb.toml").write_text('[map]\nmetric_a = "train/loss"\nignore = ["^metric_b$"]\n')
    assert cat.refresh().read == 1
    (row,), _ = cat.query()
    assert row["diagnosed"] and "lr_too_high" in [f["rule"] for f in row["final"]]
    assert cat.refresh().read == 0
