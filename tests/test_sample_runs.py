"""Every sample run gets exactly the findings its label file names; the README says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from traindoc.diagnose import diagnose_path
from traindoc.reader import read_run
from traindoc.rules import RULE_IDS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "sample_runs")
NAMES = sorted(d for d in os.listdir(SAMPLES) if os.path.isfile(os.path.join(SAMPLES, d, "meta.json")))


def test_enough_sample_runs():
    labels = [json.load(open(os.path.join(SAMPLES, n, "expected.json")))["findings"] for n in NAMES]
    assert sum(1 for x in labels if not x) >= 3  # healthy runs
    for rule in RULE_IDS:
        assert sum(rule in x for x in labels) >= 2, rule
    for n in NAMES:  # small enough to ship
        size = sum(os.path.getsize(os.path.join(SAMPLES, n, f)) for f in os.listdir(os.path.join(SAMPLES, n)))
        assert size < 300_000, n


@pytest.mark.parametrize("name", NAMES)
def test_exact_findings(name):
    path = os.path.join(SAMPLES, name)
    label = json.load(open(os.path.join(path, "expected.json")))
    (report,) = diagnose_path(path)
    assert report.error is None
    got = {f.rule for f in report.findings}
    # every expected finding, and nothing else but what its label allows beside them
    assert set(label["findings"]) <= got <= set(label["findings"]) | set(label.get("allowed", ())), got
    for f in report.findings:
        assert f.advice and f.evidence and f.steps[0] <= f.steps[1]


def test_readme_table_is_current():
    out = subprocess.run([sys.executable, os.path.join(SAMPLES, "score.py")], capture_output=True, text=True,
                         check=True).stdout.strip()
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    assert out in readme


@pytest.mark.slow
def test_generator_reproduces_labels(tmp_path):
    """The generation script trains for real and its runs get their labels (two quick scenarios)."""
    subprocess.run([sys.executable, os.path.join(SAMPLES, "generate.py"), "--out", str(tmp_path),
                    "--only", "lr-high-cnn-adam", "underfit-linear-sgd"], check=True, capture_output=True)
    for name in ("lr-high-cnn-adam", "underfit-linear-sgd"):
        (report,) = diagnose_path(str(tmp_path / name))
        label = json.load(open(tmp_path / name / "expected.json"))
        got = {f.rule for f in report.findings}
        assert set(label["findings"]) <= got <= set(label["findings"]) | set(label["allowed"])
        assert read_run(str(tmp_path / name)).meta["status"] == "finished"
