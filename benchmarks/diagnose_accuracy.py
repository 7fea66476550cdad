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

usage: python benchmarks/diagnose_accuracy.py [--corpus corpus] [--real corpus/real] [--only real|corpus] [--runs]

The real-world set (corpus/real/, logs from public repositories and runs of third-party scripts,
labelled from their raw series by corpus/real/LABELS.md) is scored the same way, held out by
source: each repository or script is judged with thresholds chosen on all the others.
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

from traindoc.discovery import load  # noqa: E402
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
    exact = healthy = healthy_alarms = undiagnosed = 0
    for entry, fired, diagnosed in verdicts:
        undiagnosed += not diagnosed
        required, allowed = set(entry["required"]), set(entry["allowed"])
        for r in CURVE_RULES:
            if r in required:
                (tp if r in fired else fn)[r] += 1
            elif r in fired and r not in allowed:
                fp[r] += 1
        exact += diagnosed and required <= fired <= required | allowed  # silence on an unjudged run is no match
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
            "healthy": healthy, "healthy_alarms": healthy_alarms, "undiagnosed": undiagnosed}


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


def _verdicts(runs: list, configs: list, memo: MemoJudge) -> list[list]:
    """Per config: per run (label entry, curve rules that fired, diagnosed). `runs` is a list of
    (entry, series or None); a run that could not be read fires nothing and is not diagnosed.
    Runs are judged together (sweeps, tasks) as the CLI judges a root."""
    readable = [i for i, (_, s) in enumerate(runs) if s is not None]
    siblings = together.study([runs[i][1] for i in readable])
    out = []
    for cfg in configs:
        diagnoses = together.apply(siblings, [diagnose_run(runs[i][1], cfg, memo) for i in readable], cfg)
        got = dict(zip(readable, diagnoses))
        out.append([(e, ({f.rule for f in got[i].findings} & set(CURVE_RULES)) if i in got else set(),
                     got[i].diagnosed if i in got else False) for i, (e, _) in enumerate(runs)])
    return out


def _sample_candidates(configs: list, memo: MemoJudge) -> list[int]:
    """Indices of the configs under which every sample_runs/ run gets exactly its labelled findings
    (the hand-labelled demo runs bound the choice); all configs if none does."""
    samples = _sample_runs()
    sample_study = together.study([s for _, s in samples])
    keep = []
    for c, cfg in enumerate(configs):
        diagnoses = together.apply(sample_study, [diagnose_run(s, cfg, memo) for _, s in samples], cfg)
        if all(set(lab["findings"]) <= {f.rule for f in d.findings} <= set(lab["findings"]) | set(lab.get("allowed", ()))
               for (lab, _), d in zip(samples, diagnoses)):
            keep.append(c)
    return keep or list(range(len(configs)))


def held_out(verdicts: list[list], groups: list[str], candidates: list[int], configs: list) -> tuple[dict, dict, list]:
    """(score of every group judged with the thresholds that scored best on the other groups,
    the thresholds chosen per group, each run's verdict so judged). `groups[i]` is run i's family
    or source."""
    def pick(idx):
        return max(candidates, key=lambda c: (score([verdicts[c][i] for i in idx])["macro_f1"],
                                              configs[c] == DEFAULT))

    out, chosen = [None] * len(groups), {}
    for g in sorted(set(groups)):
        best = pick([i for i, h in enumerate(groups) if h != g])
        chosen[g] = {k: getattr(configs[best], k) for k in GRID}
        for i, h in enumerate(groups):
            if h == g:
                out[i] = verdicts[best][i]
    return score(out), chosen, out


def evaluate(corpus: str) -> tuple[dict, dict, dict]:
    """The corpus: (held-out score by family, in-sample score with the defaults, chosen thresholds)."""
    with open(os.path.join(corpus, "labels.json")) as f:
        labels = json.load(f)
    runs = [(e, load(os.path.join(corpus, e["path"]))[0]) for e in labels]
    configs = list(_configs())
    memo = MemoJudge()
    verdicts = _verdicts(runs, configs, memo)
    candidates = _sample_candidates(configs, memo)
    held, chosen, _ = held_out(verdicts, [e["family"] for e, _ in runs], candidates, configs)
    chosen["all families"] = {k: getattr(configs[max(candidates, key=lambda c: (score(verdicts[c])["macro_f1"],
                                                                                  configs[c] == DEFAULT))], k)
                              for k in GRID}
    chosen["configs that keep sample_runs exact"] = f"{len(candidates)} of {len(configs)}"
    return held, score(verdicts[configs.index(DEFAULT)]), chosen


def load_real(real: str) -> list[tuple[dict, object]]:
    """The real-world set (corpus/real): (label entry, series or None) per labelled run, withdrawn
    labels left out. Logs are read from data/ (made by extract.py from the fetched repositories),
    runs made here by third-party scripts from where they are committed. A run that is missing
    or that traindoc cannot read is kept with None: it counts as diagnosing nothing."""
    from traindoc.discovery import InputError, is_run
    from traindoc.tb import is_tb_run

    sys.path.insert(0, real)
    from extract import entries, materialise, run_path  # noqa: E402  (corpus/real/extract.py)

    out = []
    labelled = entries(os.path.join(real, "labels"))
    withdrawn = {e["run"] for e in labelled if e.get("withdrawn")}
    for e in labelled:
        if e["run"] in withdrawn or "required" not in e:
            continue
        materialise(e, "/work/.mirror", os.path.join(real, "data"))
        series = None
        try:
            path = run_path(e, real)
            if not (os.path.isfile(path) or is_run(path) or is_tb_run(path)):
                raise InputError(f"no run at {path}")
            series = load(path)[0]
        except (InputError, OSError, ValueError) as exc:  # noqa: F841 - unreadable: counted as such
            pass
        except Exception:  # noqa: BLE001 - a reader bug on a real file is a finding of this benchmark
            import traceback

            print(f"# reading {e['run']} raised:\n{traceback.format_exc()}", file=sys.stderr)
        out.append((e, series))
    return out


def evaluate_real(real: str) -> tuple[dict, dict, dict, list]:
    """The real-world set: (held-out score by source, in-sample score with the defaults, chosen
    thresholds, per-run rows of (run, required, allowed, fired, diagnosed) with the defaults, and what fired
    held out where it differs)."""
    runs = load_real(real)
    configs = list(_configs())
    memo = MemoJudge()
    verdicts = _verdicts(runs, configs, memo)
    candidates = _sample_candidates(configs, memo)
    held, chosen, held_verdicts = held_out(verdicts, [e["source"] for e, _ in runs], candidates, configs)
    default = verdicts[configs.index(DEFAULT)]
    rows = [(e["run"], e["required"], e.get("allowed", []), sorted(fired), diag,
             sorted(h[1]) if h[1] != fired else "same") for (e, fired, diag), h in zip(default, held_verdicts)]
    return held, score(default), chosen, rows


def table(result: dict) -> str:
    lines = ["| rule | labelled runs | precision | recall | F1 |", "|---|---|---|---|---|"]
    for r, v in result["rules"].items():
        p = f"{v['precision']:.2f} ({v['tp']}/{v['tp'] + v['fp']})" if v["tp"] + v["fp"] else "-"
        rc = f"{v['recall']:.2f} ({v['tp']}/{v['labelled']})" if v["labelled"] else "-"
        lines.append(f"| `{r}` | {v['labelled']} | {p} | {rc} | {v['f1']:.2f} |")
    lines.append(f"\nmacro-F1 {result['macro_f1']:.2f}; exact match {result['exact']:.2f} of {result['runs']} runs; "
                 f"false alarms on healthy runs: {result['healthy_alarms']} of {result['healthy']}; "
                 f"not diagnosed: {result['undiagnosed']} of {result['runs']}")
    return "\n".join(lines)


def main() -> None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=os.path.join(root, "corpus"))
    ap.add_argument("--real", default=os.path.join(root, "corpus", "real"))
    ap.add_argument("--only", choices=("real", "corpus"), help="score one set only")
    ap.add_argument("--runs", action="store_true", help="also list every real run with what fired")
    args = ap.parse_args()
    if args.only != "corpus":
        held, insample, chosen, rows = evaluate_real(args.real)
        print("## Real-world set, held out by source: each repository or script diagnosed with thresholds "
              "chosen on the others\n")
        print(table(held))
        print(f"\nsources: {len(chosen)}")
        print("\n## Real-world set, the shipped default thresholds on every run\n")
        print(table(insample))
        if args.runs:
            print("\n| run | required | allowed | fired | diagnosed | fired held out |\n|---|---|---|---|---|---|")
            for run, req, allowed, fired, diag, held_fired in rows:
                held_fired = held_fired if held_fired == "same" else ",".join(held_fired)
                print(f"| {run} | {','.join(req)} | {','.join(allowed)} | {','.join(fired)} | {diag} | {held_fired} |")
    if args.only != "real":
        held, insample, chosen = evaluate(args.corpus)
        print("\n## Held out: each family diagnosed with thresholds chosen on the other families\n")
        print(table(held))
        print("\nthresholds chosen per held-out family:", json.dumps(chosen))
        print("\n## The shipped default thresholds on every run (in-sample: they were chosen on all six families)\n")
        print(table(insample))


if __name__ == "__main__":
    main()
