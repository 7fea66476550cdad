"""Precision and recall of every rule on the labelled sample runs, as a Markdown table.

usage: python sample_runs/score.py [ROOT]   (the README's table is this output)
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from traindoc.diagnose import diagnose_path  # noqa: E402
from traindoc.rules import RULE_IDS  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def score(root: str = HERE) -> dict[str, dict[str, int]]:
    """rule -> counts of true positives, false positives, false negatives, labelled runs. A finding
    the label allows beside its expected ones (`allowed`) is neither a hit nor a false positive."""
    counts = {r: {"tp": 0, "fp": 0, "fn": 0, "runs": 0} for r in RULE_IDS}
    for report in diagnose_path(root):
        with open(os.path.join(report.path, "expected.json")) as f:
            label = json.load(f)
        expected, allowed = set(label["findings"]), set(label.get("allowed", ()))
        got = {f.rule for f in report.findings}
        for rule in RULE_IDS:
            c = counts[rule]
            c["runs"] += rule in expected
            c["tp"] += rule in got and rule in expected
            c["fp"] += rule in got and rule not in expected | allowed
            c["fn"] += rule in expected and rule not in got
    return counts


def table(counts: dict) -> str:
    """The Markdown table printed into the README."""
    lines = ["| rule | labelled runs | precision | recall |", "|---|---|---|---|"]
    for rule, c in counts.items():
        fired = c["tp"] + c["fp"]
        prec = f"{c['tp'] / fired:.2f}" if fired else "n/a"
        rec = f"{c['tp'] / c['runs']:.2f}" if c["runs"] else "n/a"
        lines.append(f"| `{rule}` | {c['runs']} | {prec} ({c['tp']}/{fired}) | {rec} ({c['tp']}/{c['runs']}) |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(score(sys.argv[1] if len(sys.argv) > 1 else HERE)))
