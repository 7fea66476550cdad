"""The diagnosis corpus and its scoring: labels that follow how runs were made, and a
scorer that counts misses, false alarms and allowed findings the way LABELS.md says."""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest

from benchmarks.diagnose_accuracy import score
from traindoc.reader import read_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "corpus")


def _entry(required=(), allowed=()):
    return {"required": list(required), "allowed": list(allowed)}


def test_score_counts_misses_false_alarms_and_allowed_findings():
    verdicts = [
        (_entry(["lr_too_low"]), {"lr_too_low"}, True),  # hit
        (_entry(["lr_too_low"]), set(), True),  # miss
        (_entry([], ["train_longer"]), {"train_longer"}, True),  # allowed: no false alarm, exact
        (_entry([]), {"overfitting"}, True),  # false alarm on a healthy run
        (_entry(["early_decay"]), {"early_decay", "lr_too_high"}, True),  # hit plus a false alarm
    ]
    s = score(verdicts)
    assert s["rules"]["lr_too_low"] == {"labelled": 2, "tp": 1, "fp": 0, "fn": 1, "precision": 1.0, "recall": 0.5,
                                        "f1": pytest.approx(2 / 3)}
    assert s["rules"]["overfitting"]["fp"] == 1 and s["rules"]["lr_too_high"]["fp"] == 1
    assert s["exact"] == pytest.approx(2 / 5)
    assert (s["healthy"], s["healthy_alarms"]) == (2, 1)
    assert s["macro_f1"] == pytest.approx((2 / 3 + 1.0) / 2)  # only rules with labelled runs count


def test_a_run_that_was_not_diagnosed_is_never_an_exact_match():
    s = score([(_entry([]), set(), False), (_entry(["overfitting"]), set(), False), (_entry([]), set(), True)])
    assert s["exact"] == pytest.approx(1 / 3) and s["undiagnosed"] == 2
    assert s["rules"]["overfitting"]["fn"] == 1  # what it required counts as missed


@pytest.mark.skipif(not os.path.exists(os.path.join(CORPUS, "labels.json")), reason="corpus not built")
def test_corpus_is_broad_and_every_labelled_run_reads():
    with open(os.path.join(CORPUS, "labels.json")) as f:
        labels = json.load(f)
    made = [e for e in labels if e["format"] == "collector"]
    assert len(made) >= 300 and len({e["family"] for e in made}) >= 6
    kinds = Counter(r for e in made for r in e["required"])
    for rule in ("lr_too_low", "lr_too_high", "early_decay", "overfitting", "underfitting", "train_longer"):
        assert kinds[rule] >= 6, (rule, kinds)
    assert sum(not e["required"] for e in made) >= 60  # healthy runs to count false alarms on
    assert any(e["format"] == "tensorboard" for e in labels)
    for e in made[::25]:
        s = read_run(os.path.join(CORPUS, e["path"]))
        assert s.meta["config"]["family"] == e["family"] and s.meta["status"] == "finished"


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(os.path.join(CORPUS, "labels.json")), reason="corpus not built")
def test_readme_held_out_table_is_what_the_benchmark_prints():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "diagnose_accuracy.py"), "--only", "corpus"],
                         capture_output=True, text=True, check=True, timeout=900).stdout
    held_out = out.split("## Held out")[1].split("\n\n", 1)[1].split("\n\n")[0].strip()
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    assert held_out in readme


@pytest.mark.skipif(not os.path.exists(os.path.join(CORPUS, "labels.json")), reason="corpus not built")
def test_the_calibrations_memo_gives_what_the_rules_give():
    """The grid search remembers each rule's verdict per run and per value of the thresholds it
    read; on real runs and thresholds from all over the grid, that must equal running the rules."""
    import dataclasses
    import random

    from benchmarks.diagnose_accuracy import GRID, MemoJudge
    from traindoc.discovery import load
    from traindoc.rules import DEFAULT, diagnose_run

    with open(os.path.join(CORPUS, "labels.json")) as f:
        labels = json.load(f)
    runs = [load(os.path.join(CORPUS, e["path"]))[0] for e in labels[::12]]
    rng = random.Random(0)
    memo = MemoJudge()
    for _ in range(12):
        cfg = dataclasses.replace(DEFAULT, **{k: rng.choice(v) for k, v in GRID.items()})
        for run in runs:
            assert diagnose_run(run, cfg, memo) == diagnose_run(run, cfg)
    assert any(len(entries) > 1 for entries in memo.memo.values())  # some rule did depend on the grid
    assert all(getattr(DEFAULT, k) in v for k, v in GRID.items())  # the defaults are among the candidates
