"""Agreement between the first labels (labels/*.jsonl) and the second, independent labeller's
(agreement/B.jsonl) on the sample the second labeller was given (agreement/sample.txt).

Per rule: on how many runs both said "required" or both said "not required", and Cohen's kappa;
overall: runs whose required sets are equal, and runs where each labeller's required set is
within the other's required + allowed (neither would call the other's reading wrong).

usage: python corpus/real/agreement.py
"""

from __future__ import annotations

import json
import os

from extract import entries

HERE = os.path.dirname(os.path.abspath(__file__))
RULES = ("lr_too_low", "lr_too_high", "early_decay", "overfitting", "underfitting", "train_longer")


def main() -> None:
    first = {e["run"]: e for e in entries(os.path.join(HERE, "labels")) if "required" in e}
    with open(os.path.join(HERE, "agreement", "B.jsonl")) as f:
        second = {e["run"]: e for e in map(json.loads, filter(str.strip, f))}
    runs = [r for r in second if r in first]
    print(f"runs labelled by both: {len(runs)}")
    print("| rule | both required | only first | only second | neither | agreement | kappa |\n|---|---|---|---|---|---|---|")
    for rule in RULES:
        a = [rule in first[r]["required"] for r in runs]
        b = [rule in second[r]["required"] for r in runs]
        both = sum(x and y for x, y in zip(a, b))
        neither = sum(not x and not y for x, y in zip(a, b))
        n = len(runs)
        po = (both + neither) / n
        pa, pb = sum(a) / n, sum(b) / n
        pe = pa * pb + (1 - pa) * (1 - pb)
        kappa = (po - pe) / (1 - pe) if pe < 1 else float("nan")
        print(f"| `{rule}` | {both} | {sum(a) - both} | {sum(b) - both} | {neither} | {po:.2f} | {kappa:.2f} |")
    same = sum(set(first[r]["required"]) == set(second[r]["required"]) for r in runs)
    compatible = sum(set(first[r]["required"]) <= set(second[r]["required"]) | set(second[r].get("allowed", []))
                     and set(second[r]["required"]) <= set(first[r]["required"]) | set(first[r].get("allowed", []))
                     for r in runs)
    print(f"\nsame required findings: {same} of {len(runs)} ({same / len(runs):.0%}); "
          f"compatible (each within the other's required + allowed): {compatible} of {len(runs)} "
          f"({compatible / len(runs):.0%})")


if __name__ == "__main__":
    main()
