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


# ---- silence is never health ----------------------------------------------------------
def _unreadable_tb_run(folder):
    """A diverging run whose tags say nothing traindoc can map (a loss under an opaque name)."""
    from tensorboardX import SummaryWriter

    w = SummaryWriter(str(folder))
    for step in range(1, 200):
        w.add_scalar("metric_a", 2.3 * 1.03 ** step, step)  # exploding, but nobody can tell it is a loss
        w.add_scalar("metric_b", 0.1, step)
    w.close()


def _short_run(root):
    """A collector run with three loss windows: too few points for any curve rule."""
    import torch

    from traindoc import collector

    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = collector.attach(model, opt, root=str(root), name="short", log_every=2, ratio_every=0)
    for _ in range(6):
        loss = model(torch.randn(8, 4)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.log_train(loss)
    run.close()


def test_a_run_no_curve_rule_could_judge_is_not_diagnosed(tmp_path):
    _unreadable_tb_run(tmp_path / "opaque")
    _short_run(tmp_path)
    r = traindoc("diagnose", str(tmp_path), "--json")
    assert r.returncode == 0, r.stderr
    runs = {x["run"]: x for x in json.loads(r.stdout)["runs"]}
    opaque, short = runs["opaque"], runs["short"]
    assert opaque["diagnosed"] is False and short["diagnosed"] is False
    assert {"custom/metric_a", "custom/metric_b"} <= set(opaque["found"])
    skipped = {s["rule"]: s["missing"] for s in opaque["skipped"]}
    assert skipped["lr_too_high"] == ["train loss"] and "validation accuracy or loss" in skipped["underfitting"]
    assert {s["rule"]: s["missing"] for s in short["skipped"]}["lr_too_low"] == ["train loss with 8+ points (has 3)"]
    table = traindoc("diagnose", str(tmp_path))
    assert "no problems found" not in table.stdout
    assert table.stdout.count("not diagnosed") == 2 and "missing train loss" in table.stdout


@pytest.mark.parametrize("extra,code", [((), 1), (("--allow-undiagnosed",), 0)])
def test_fail_on_fails_on_an_undiagnosed_run(tmp_path, extra, code):
    _unreadable_tb_run(tmp_path / "opaque")
    r = traindoc("diagnose", str(tmp_path), "--fail-on", "error", *extra)
    assert r.returncode == code, r.stderr
    assert ("not diagnosed" in r.stderr) == (code == 1)


def test_a_diagnosed_run_lists_what_it_could_not_judge():
    r = traindoc("diagnose", os.path.join(SAMPLES, "healthy-cnn-sgd"), "--json")
    (run,) = json.loads(r.stdout)["runs"]
    assert run["diagnosed"] is True and run["findings"] == []
    assert all(set(s) == {"rule", "missing"} for s in run["skipped"])
