"""How the six curve rules fare on runs they were not tuned on: the corpus (corpus/), scored
leave-one-family-out.

For each task family in turn, seven thresholds are chosen from a grid to maximise macro-F1
on the other families, among the settings under which every sample_runs/ run still gets
exactly its labelled findings, and the held-out family is diagnosed with them; the table
adds up those held-out verdicts. Sweeps and tasks are judged together, as the CLI does.
The same table with the shipped defaults (the same choice made on all six families) on
every run is printed too. Each rule is remembered per run and per value of the thresholds
it reads (`MemoJudge`), so the whole grid takes about a minute. Labels come from corpus/labels.json (how
each run was made, LABELS.md); a finding the label allows is no false alarm.

usage: python benchmarks/diagnose_accuracy.py [--corpus corpus]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from traindoc.diagnose import load  # noqa: E402
from traindoc.rules import CURVE_RULES, DEFAULT, diagnose_run, judge  # noqa: E402
from traindoc.rules import together  # noqa: E402

#: The thresholds calibrated per fold, and the values tried (the defaults among them).
GRID = {
    "low_late_share": (0.1, 0.15, 0.25),
    "high_stall_level": (0.25, 0.35, 0.5),
    "overfit_loss_rise": (0.05, 0.1, 0.2),
    "rising_min": (0.01, 0.03, 0.05),
    "gap_small": (0.02, 0.03, 0.05),
    "low_progress": (0.6, 0.75, 0.9),
    "sweep_trail": (0.02, 0.05, 0.1),
}


class _Reads:
    """A Thresholds that notes which fields a rule read (for the memo below)."""

    def __init__(self, cfg):
        self._cfg, self.read = cfg, set()

    def __getattr__(self, name):
        self.read.add(name)
        return getattr(self._cfg, name)


class MemoJudge:
    """`rules.judge` remembered per (run, rule) and the values of the thresholds that the rule
    read. A rule is a deterministic function of the run and the values it reads, so the same
    values give the same verdict; one rule's thresholds then cost only their own grid axis."""

    def __init__(self):
        self.memo: dict[tuple[int, str], list] = {}

    def __call__(self, rule, run, cfg):
        entries = self.memo.setdefault((id(run), rule.ID), [])
        for names, values, verdict in entries:
            if all(getattr(cfg, n) == v for n, v in zip(names, values)):
                return verdict
        rec = _Reads(cfg)
        verdict = judge(rule, run, rec)
        names = tuple(sorted(rec.read))
        entries.append((names, tuple(getattr(cfg, n) for n in names), verdict))
        return verdict


def score(verdicts: list[tuple[dict, set, bool]]) -> dict:
    """Per-rule precision/recall/F1, macro-F1, exact-match rate and false alarms on healthy runs.

    `verdicts`: (label entry, curve rules that fired, diagnosed) per run. A required rule that
    did not fire is a miss; a fired rule that is neither required nor allowed is a false alarm."""
    tp, fp, fn = Counter(), Counter(), Counter()
    exact = healthy = healthy_alarms = 0
    for entry, fired, _diagnosed in verdicts:
        required, allowed = set(entry["required"]), set(entry["allowed"])
        for r in CURVE_RULES:
            if r in required:
                (tp if r in fired else fn)[r] += 1
            elif r in fired and r not in allowed:
                fp[r] += 1
        exact += required <= fired <= required | allowed
        if not required:
            healthy += 1
            healthy_alarms += bool(fired - allowed)
    rules = {}
    for r in CURVE_RULES:
        p = tp[r] / (tp[r] + fp[r]) if tp[r] + fp[r] else float("nan")
        rc = tp[r] / (tp[r] + fn[r]) if tp[r] + fn[r] else float("nan")
        f1 = 2 * p * rc / (p + rc) if p == p and rc == rc and p + rc else 0.0
        rules[r] = {"labelled": tp[r] + fn[r], "tp": tp[r], "fp": fp[r], "fn": fn[r], "precision": p, "recall": rc,
                    "f1": f1}
    judged = [v["f1"] for v in rules.values() if v["labelled"]]
    return {"rules": rules, "macro_f1": sum(judged) / len(judged) if judged else float("nan"),
            "exact": exact / len(verdicts) if verdicts else float("nan"), "runs": len(verdicts),
            "healthy": healthy, "healthy_alarms": healthy_alarms}


def _configs():
    keys = list(GRID)
    for values in itertools.product(*(GRID[k] for k in keys)):
        yield dataclasses.replace(DEFAULT, **dict(zip(keys, values)))


def _sample_runs() -> list:
    """(label, series) of every run in sample_runs/."""
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sample_runs")
    out = []
    for name in sorted(os.listdir(here)):
        if os.path.isfile(os.path.join(here, name, "expected.json")):
            with open(os.path.join(here, name, "expected.json")) as f:
                out.append((json.load(f), load(os.path.join(here, name))[0]))
    return out


def evaluate(corpus: str) -> tuple[dict, dict, dict]:
    """(held-out score, in-sample score with the defaults, chosen thresholds per family)."""
    with open(os.path.join(corpus, "labels.json")) as f:
        labels = json.load(f)
    runs = []
    for e in labels:
        series, _ = load(os.path.join(corpus, e["path"]))
        runs.append((e, series))
    configs = list(_configs())
    siblings = together.study([s for _, s in runs])
    memo = MemoJudge()
    verdicts = []  # per config: per run (entry, fired, diagnosed)
    for cfg in configs:
        diagnoses = together.apply(siblings, [diagnose_run(s, cfg, memo) for _, s in runs], cfg)
        verdicts.append([(e, {f.rule for f in d.findings} & set(CURVE_RULES), d.diagnosed)
                         for (e, _), d in zip(runs, diagnoses)])
    # the hand-labelled sample runs (the demo, and a test of their exact findings) bound the choice:
    # only thresholds under which every one of them gets its findings are candidates
    samples = _sample_runs()
    sample_study = together.study([s for _, s in samples])
    fits_samples = []
    for cfg in configs:
        diagnoses = together.apply(sample_study, [diagnose_run(s, cfg, memo) for _, s in samples], cfg)
        fits_samples.append(all(set(lab["findings"]) <= {f.rule for f in d.findings}
                                <= set(lab["findings"]) | set(lab.get("allowed", ()))
                                for (lab, _), d in zip(samples, diagnoses)))
    candidates = [c for c in range(len(configs)) if fits_samples[c]] or list(range(len(configs)))

    def pick(idx):
        return max(candidates, key=lambda c: (score([verdicts[c][i] for i in idx])["macro_f1"],
                                              configs[c] == DEFAULT))

    families = sorted({e["family"] for e in labels})
    held_out, chosen = [], {}
    for fam in families:
        best = pick([i for i, (e, _) in enumerate(runs) if e["family"] != fam])
        chosen[fam] = {k: getattr(configs[best], k) for k in GRID}
        held_out += [verdicts[best][i] for i, (e, _) in enumerate(runs) if e["family"] == fam]
    chosen["all families"] = {k: getattr(configs[pick(range(len(runs)))], k) for k in GRID}
    chosen["configs that keep sample_runs exact"] = f"{len(candidates)} of {len(configs)}"
    default = verdicts[configs.index(DEFAULT)]
    return score(held_out), score(default), chosen


def table(result: dict) -> str:
    lines = ["| rule | labelled runs | precision | recall | F1 |", "|---|---|---|---|---|"]
    for r, v in result["rules"].items():
        p = f"{v['precision']:.2f} ({v['tp']}/{v['tp'] + v['fp']})" if v["tp"] + v["fp"] else "-"
        rc = f"{v['recall']:.2f} ({v['tp']}/{v['labelled']})" if v["labelled"] else "-"
        lines.append(f"| `{r}` | {v['labelled']} | {p} | {rc} | {v['f1']:.2f} |")
    lines.append(f"\nmacro-F1 {result['macro_f1']:.2f}; exact match {result['exact']:.2f} of {result['runs']} runs; "
                 f"false alarms on healthy runs: {result['healthy_alarms']} of {result['healthy']}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                     "corpus"))
    args = ap.parse_args()
    held, insample, chosen = evaluate(args.corpus)
    print("## Held out: each family diagnosed with thresholds chosen on the other families\n")
    print(table(held))
    print("\nthresholds chosen per held-out family:", json.dumps(chosen))
    print("\n## The shipped default thresholds on every run (in-sample: they were chosen on all six families)\n")
    print(table(insample))


if __name__ == "__main__":
    main()
