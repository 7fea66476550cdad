"""`traindoc diagnose` as a user runs it: tables, JSON, CI gating, bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "sample_runs")


def traindoc(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "traindoc.cli", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env={**os.environ, "PYTHONPATH": ROOT})


def test_json_shape_for_a_root_of_runs():
    r = traindoc("diagnose", SAMPLES, "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    runs = {x["run"]: x for x in data["runs"]}
    assert len(runs) >= 19
    f = runs["overfit-mlp-adam"]["findings"][0]
    assert set(f) == {"rule", "severity", "steps", "evidence", "advice"}
    assert f["rule"] == "overfitting" and len(f["steps"]) == 2
    assert runs["healthy-cnn-sgd"]["findings"] == []


def test_human_table():
    r = traindoc("diagnose", os.path.join(SAMPLES, "early-decay-mlp-sgd"))
    assert r.returncode == 0
    assert "early_decay" in r.stdout and "Decay later" in r.stdout


@pytest.mark.parametrize("level,code", [("error", 0), ("warning", 1), ("info", 1)])
def test_fail_on(level, code):
    assert traindoc("diagnose", os.path.join(SAMPLES, "early-decay-mlp-sgd"), "--fail-on", level).returncode == code
    assert traindoc("diagnose", os.path.join(SAMPLES, "healthy-mlp-sgd"), "--fail-on", "info").returncode == 0


def test_bad_inputs_one_line_exit_2(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    afile = tmp_path / "f.txt"
    afile.write_text("x")
    for path in (str(tmp_path / "missing"), str(afile), str(empty)):
        r = traindoc("diagnose", path)
        assert r.returncode == 2
        assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("traindoc: ")


def test_one_corrupt_run_does_not_stop_the_others(tmp_path):
    for name in ("healthy-mlp-sgd", "overfit-mlp-adam"):
        shutil.copytree(os.path.join(SAMPLES, name), tmp_path / name)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "meta.json").write_text("{not json")
    newer = tmp_path / "newer"
    shutil.copytree(os.path.join(SAMPLES, "healthy-cnn-sgd"), newer)
    meta = json.loads((newer / "meta.json").read_text())
    meta["schema_version"] = 99
    (newer / "meta.json").write_text(json.dumps(meta))
    r = traindoc("diagnose", str(tmp_path), "--json")
    assert r.returncode == 2
    assert sorted(x["run"] for x in json.loads(r.stdout)["runs"]) == ["healthy-mlp-sgd", "overfit-mlp-adam"]
    errors = r.stderr.strip().splitlines()
    assert len(errors) == 2 and any("broken" in e for e in errors) and any("upgrade" in e for e in errors)
