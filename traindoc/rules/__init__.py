"""The training notes' rules as code: a registry of pure functions run -> findings.

Each rule module has ID, NEEDS, CHARTS (where the run page shades its findings) and
check(run, cfg) -> list[Finding]. `diagnose_run`
checks each rule's NEEDS first (`needs.py`): a rule that lacks an input is skipped and
says what it lacked, so that silence is never read as health. No I/O, no global state.
"""

from __future__ import annotations

from . import (early_decay, initial_loss, lr_too_high, lr_too_low, overfitting, train_longer, underfitting,
               update_ratio)
from . import together
from .base import DEFAULT, SEVERITIES, Finding, Thresholds, drop_explained, severity_rank
from .spikes import loss_spikes
from .needs import CURVE_RULES, Diagnosis, curve_gaps, missing, series_found

RULES = (lr_too_low, lr_too_high, early_decay, overfitting, underfitting, train_longer, initial_loss, update_ratio)
RULE_IDS = tuple(r.ID for r in RULES)
#: rule id -> the charts of the run page that shade its findings (each rule module's CHARTS)
CHARTS_OF = {r.ID: r.CHARTS for r in RULES}
#: After a divergence the curves are no longer about fitting or schedules; these rules
#: would only re-describe the blow-up, so they stay silent and the divergence speaks.
MOOT_AFTER_DIVERGENCE = {lr_too_low.ID, early_decay.ID, overfitting.ID, underfitting.ID, train_longer.ID,
                         update_ratio.ID}


def judge(rule, run, cfg: Thresholds) -> tuple[list[str], list[Finding]]:
    """One rule on one run: (what it lacked, its findings); it runs only when nothing lacked."""
    gaps = missing(rule, run, cfg)
    return gaps, ([] if gaps else rule.check(run, cfg))


def diagnose_run(run, cfg: Thresholds = DEFAULT, judge_one=judge) -> Diagnosis:
    """Every rule that has its inputs, in registry order; the others listed as skipped.
    `judge_one` is `judge` or a stand-in with its signature (the calibration memoises it)."""
    out: list[Finding] = []
    skipped = []
    for rule in RULES:
        gaps, found = judge_one(rule, run, cfg)
        if gaps:
            skipped.append({"rule": rule.ID, "missing": gaps})
        else:
            out.extend(found)
    if any(f.rule == lr_too_high.ID and f.evidence.get("diverged") for f in out):
        out = [f for f in out if f.rule not in MOOT_AFTER_DIVERGENCE]
    return Diagnosis(drop_explained(out), skipped, loss_spikes(run))


def diagnose_runs(runs, cfg: Thresholds = DEFAULT) -> list[Diagnosis]:
    """Each run alone, then together (`together.py`): sweeps over the LR, and tasks' ceilings."""
    return together.diagnose_runs(list(runs), cfg, diagnose_run)


def run_rules(run, cfg: Thresholds = DEFAULT) -> list[Finding]:
    """Every rule's findings for one run, in registry order."""
    return diagnose_run(run, cfg).findings


__all__ = ["CHARTS_OF", "CURVE_RULES", "DEFAULT", "RULES", "RULE_IDS", "SEVERITIES", "Diagnosis", "Finding", "Thresholds",
           "curve_gaps", "diagnose_run", "diagnose_runs", "judge", "run_rules", "series_found", "severity_rank"]
