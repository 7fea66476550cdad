"""What each rule needs from a run, checked before it runs, so that silence is never health.

A rule that lacks an input is "skipped", with what was missing; a run on which no curve
rule could run is "not diagnosed" (the CLI, the JSON and the app say so, and
`--fail-on` fails on it), never "no problems found".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from traindoc import format as fmt
from traindoc.series import RunSeries

from .base import Thresholds
from .curves import loss_curve, lr_series, num_classes, raw_loss_curve

#: The rules that read the curves; a run none of them could judge is not diagnosed.
CURVE_RULES = ("lr_too_low", "lr_too_high", "early_decay", "overfitting", "underfitting", "train_longer")


def _enough(c, cfg: Thresholds) -> str | None:
    if c is None:
        return "train loss"
    if len(c) < cfg.min_windows:
        return f"train loss with {cfg.min_windows}+ points (has {len(c)})"
    return None


def _loss(run: RunSeries, cfg: Thresholds) -> str | None:
    return _enough(loss_curve(run), cfg)


def _loss_windows(run: RunSeries, cfg: Thresholds) -> str | None:
    """Enough windows of the train loss, NaN/inf ones counted: a run that blew up to NaN early
    has few finite windows, and its divergence is still what it shows."""
    return _enough(raw_loss_curve(run), cfg)


def _has(run: RunSeries, *keys: str) -> bool:
    return any(run.has(k) for k in keys)


def _series(label: str, *keys: str):
    return lambda run, cfg: None if _has(run, *keys) else label


def _points(run: RunSeries, key: str) -> int:
    return len(run.get(key).dropna()) if run.has(key) else 0


def _trend(run: RunSeries, cfg: Thresholds) -> str | None:
    """A train loss with enough points for its shape to mean something, or 3+ evaluations of a
    validation series (a short per-epoch log is judged from its validation loss)."""
    if _loss(run, cfg) is None or _evaluations(run, cfg) is None:
        return None
    return f"train loss with {cfg.min_windows}+ points, or 3+ validation evaluations"


def _evaluations(run: RunSeries, cfg: Thresholds) -> str | None:
    """3+ points of a validation series: what a rise from the best, a constant prediction or
    accuracies ending low are read from (a run with two evaluations is not judged, never healthy)."""
    if _points(run, fmt.VAL_LOSS) >= 3 or _points(run, fmt.VAL_ACC) >= 3:
        return None
    return "3+ validation evaluations"


#: need (as the rules' NEEDS name it) -> check(run, cfg) giving what is missing, or None
CHECKS = {
    "3+ validation evaluations": _evaluations,
    "a trend in the train loss or 3+ evaluations": _trend,
    "train loss": _loss,
    "train loss, NaN windows counted": _loss_windows,
    "learning rate": lambda run, cfg: None if lr_series(run) is not None else "learning rate",
    "first train loss": _series("first train loss", fmt.LOSS_FIRST, fmt.LOSS_RAW, fmt.LOSS_WINDOW + "/mean"),
    "number of classes": lambda run, cfg: None if num_classes(run) else "number of classes",
    "validation accuracy or loss": _series("validation accuracy or loss", fmt.VAL_ACC, fmt.VAL_LOSS),
    "train accuracy or loss": _series("train accuracy or loss", fmt.TRAIN_ACC, fmt.TRAIN_ACC_EPOCH,
                                      fmt.LOSS_WINDOW + "/mean", fmt.LOSS_RAW, fmt.LOSS_EPOCH + "/mean"),
    "train accuracy": _series("train accuracy", fmt.TRAIN_ACC, fmt.TRAIN_ACC_EPOCH),
    "validation accuracy": _series("validation accuracy", fmt.VAL_ACC),
    "update ratios": lambda run, cfg: None if run.with_prefix(fmt.RATIO_PREFIX) else "update ratios",
}


def missing(rule, run: RunSeries, cfg: Thresholds) -> list[str]:
    """What `rule` needs and `run` lacks ([] when the rule can run)."""
    out = []
    for need in rule.NEEDS:
        gap = CHECKS[need](run, cfg)
        if gap:
            out.append(gap)
    return out


@dataclass
class Diagnosis:
    """The rules' verdict on one run: findings, and what could not be judged."""

    findings: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # [{"rule": id, "missing": [...]}]
    spikes: list = field(default_factory=list)  # recovered loss spikes (`spikes.Spike`), in step order

    @property
    def diagnosed(self) -> bool:
        """True when at least one curve rule had its inputs, or a curve finding was given anyway
        (a sweep's verdict on a run that diverged in its first window)."""
        judged = {r for r in CURVE_RULES} - {s["rule"] for s in self.skipped}
        return bool(judged) or any(f.rule in CURVE_RULES for f in self.findings)


def curve_gaps(skipped: list) -> list[str]:
    """What the curve rules lacked, each once, in the rules' order (for "not diagnosed" messages)."""
    return list(dict.fromkeys(m for s in skipped if s["rule"] in CURVE_RULES for m in s["missing"]))


def series_found(run: RunSeries) -> list[str]:
    """The run's series, grouped as a person would name them (for "not diagnosed" messages)."""
    return [k for k in run.keys if not k.startswith((fmt.RATIO_PREFIX,))][:12] + \
        (["update_ratio/..."] if run.with_prefix(fmt.RATIO_PREFIX) else [])
