"""What every rule shares: the Finding type, severities, and the threshold config."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ..format import SEVERITIES


def severity_rank(name: str) -> int:
    """0 for info, 1 for warning, 2 for error."""
    return SEVERITIES.index(name)


@dataclass
class Finding:
    """One problem a rule saw: data only, drawn by the CLI and the app alike."""

    rule: str
    severity: str
    steps: tuple[int, int]
    evidence: dict
    advice: str

    def to_dict(self) -> dict:
        """JSON-ready form (the `--json` schema)."""
        d = asdict(self)
        d["steps"] = [int(self.steps[0]), int(self.steps[1])]
        d["evidence"] = {k: _plain(v) for k, v in self.evidence.items()}
        return d


#: A too-low or too-high LR explains low, close accuracies (a network an LR far too high killed
#: sits at chance): the notes' order is to fix the LR first, so that reading waits for it. A run
#: still improving at the end is told both (raise the LR, or train longer): either is a fix.
EXPLAINED_BY = {"lr_too_low": {"underfitting"}, "lr_too_high": {"underfitting"}}


#: A network that learned nothing at all (underfitting's `never_learned` evidence) gains nothing
#: from more steps: "train longer" is no advice for it, whatever its last evaluations edged.
EXPLAINED_BY_EVIDENCE = {"never_learned": {"train_longer"}}


def drop_explained(findings: list) -> list:
    """The findings without those another finding among them explains (EXPLAINED_BY, and
    EXPLAINED_BY_EVIDENCE for a finding whose evidence says so)."""
    fired = {f.rule for f in findings}
    hidden = set().union(*(EXPLAINED_BY.get(r, set()) for r in fired))
    for f in findings:
        for key, rules in EXPLAINED_BY_EVIDENCE.items():
            if f.evidence.get(key):
                hidden |= rules - {f.rule}
    return [f for f in findings if f.rule not in hidden]


def _plain(v):
    if isinstance(v, float):
        return round(v, 6)
    if hasattr(v, "item"):
        return _plain(v.item())
    return v


def _why(default, why: str):
    return field(default=default, metadata={"why": why})


@dataclass(frozen=True)
class Thresholds:
    """Every number the rules judge by, each with the reason for its value.

    Values are relative to the run itself (its first loss, its best value, its noise)
    so the same config serves a 10-class MLP and a language model.
    """

    warmup_frac: float = _why(0.1, "the first 10% of steps are not judged: early curves are dominated by init and warm-up")
    min_windows: int = _why(8, "a loss curve needs 8 points before its shape means anything")
    noise_sigmas: float = _why(3.0, "a change must exceed 3 standard errors of the window means to count as a trend, not noise")

    # lr_too_low
    low_early_share: float = _why(0.5, "a healthy curve makes most of its progress early; under half of the drop in the first third means a nearly straight, slow descent")
    low_late_share: float = _why(0.15, "still falling steadily at the end: the last quarter still brings at least 15% of the total drop")

    low_thirds_ratio: float = _why(0.5, "a straight descent: its first and last thirds each fall at least half as far as the other")
    low_moved: float = _why(0.1, "a loss under 10% below its first value at the end has barely moved; a model too small to learn still drops further than that before it stalls")
    crawl_half_sigmas: float = _why(2.0, "and it is still falling in its second half by 2 standard errors: a crawl, not a stall")

    # lr_too_high
    explode_factor: float = _why(1.5, "a loss 1.5x above where it started, after the warm-up, has exploded")
    high_fast_share: float = _why(0.8, "80% of the best drop reached within the first quarter of the run is a fast drop")
    high_fast_frac: float = _why(0.25, "see high_fast_share; the stall and rebound tests keep healthy runs out")
    high_stall_level: float = _why(0.25, "a stall counts as high when the loss stays above 25% of its starting value (chosen on the corpus, benchmarks/diagnose_accuracy.py)")
    high_rebound: float = _why(0.1, "climbing back by 10% of the drop it had made is getting worse, not settling")
    prior_band: float = _why(0.03, "a loss within 3% of the labels' entropy (or within its noise) is the loss of predicting the class prior")
    high_osc_ratio: float = _why(3.0, "window means that scatter 3x more than their own standard errors oscillate, rather than wander by batch noise")

    # early_decay
    cut_factor: float = _why(0.2, "an LR change to a fifth or less within a short span is a cut, not a smooth schedule; ReduceLROnPlateau's halvings answer a plateau rather than cause one, and the step schedules that decay too early cut by 10x")
    cut_span_frac: float = _why(0.05, "cosine or linear schedules take far longer than 5% of the run to halve the LR")
    decay_pre_rate: float = _why(0.1, "before the cut the loss was still falling fast: at least 10% of its level over the span before the cut")
    decay_post_ratio: float = _why(0.25, "after the cut the loss flattens: its rate of fall is under a quarter of the rate before")
    floor_frac: float = _why(0.05, "an LR under 5% of its peak hardly moves the weights any more, whatever the schedule's shape")
    floor_by: float = _why(0.6, "reaching that floor with 40% of the budget left is long before the end; cosine or linear schedules meant to end there reach it in their last steps")

    # overfitting
    overfit_acc_drop: float = _why(0.02, "validation accuracy 2 points below its peak is a real fall, beyond eval noise on a few thousand samples")
    overfit_loss_rise: float = _why(0.1, "validation loss 10% above its minimum is a real rise")
    overfit_confirm: int = _why(2, "the fall must hold on at least 2 evaluations after the peak")
    overfit_train_rise: float = _why(0.01, "train accuracy keeps rising: at least 1 point above where it was at the validation peak")

    collapse_from: float = _why(0.2, "accuracy that had covered 20% of the way from chance to perfect has really learned something")
    collapse_to: float = _why(0.05, "back within 5% of that way from chance at the end: the model predicts the class prior again")

    # underfitting / train_longer
    gap_small: float = _why(0.02, "train and validation accuracy within 2 points: the gap is too small to say the model is fitting the data")
    low_progress: float = _why(0.75, "train accuracy that closed less than 75% of the distance from chance to perfect is low")
    sibling_gap: float = _why(0.04, "beside a sibling on the same task that reaches far more, a gap under 4 points is still too small to say the model fits its data")
    rising_min: float = _why(0.01, "still rising: at least 1 point of accuracy gained over the last third of the run")
    longer_loss_share: float = _why(0.15, "from the losses: the last third of the run still brings 15% of the loss's whole drop")
    longer_val_drop: float = _why(0.02, "from the losses: a last evaluation 2% below the one before is still real progress; near convergence an epoch gains far less")
    longer_step_share: float = _why(0.05, "from the losses: that last step down must also be 5% of the validation loss's whole fall; a curve settling onto its floor takes smaller steps")
    longer_gap: float = _why(0.02, "a gap of 2 points or more between train and validation accuracy")

    # sweeps (runs that differ only in the LR)
    sweep_trail: float = _why(0.02, "in a sweep, a run whose best loss is behind the best LR's by 2% of the progress the best run made from its first loss is far worse (chosen on the corpus)")
    sweep_lr_ratio: float = _why(3.16, "half a decade (sqrt 10) or more from the sweep's best LR; the neighbours of a 1-3-10 sweep are within noise of each other, and from there on the side of the best names the finding")

    # initial_loss
    init_low: float = _why(0.6, "a first loss under 0.6 ln C is too confident for a fresh model: labels may leak or be constant")
    init_high: float = _why(1.6, "a first loss over 1.6 ln C means large initial logits: check the init scale of the last layer")

    # update_ratio
    ratio_center: float = _why(1e-3, "the training notes' rule of thumb: updates are about 1e-3 of the weights")
    ratio_factor: float = _why(30.0, "far outside: more than 30x away from 1e-3, i.e. below 3.3e-5 or above 3e-2")
    ratio_persist: float = _why(0.6, "persistently: in at least 60% of the samples after the warm-up")
    ratio_min_samples: int = _why(3, "three samples at least before judging a layer")

    def reasons(self) -> dict[str, str]:
        """Name -> reason, for the docs and `traindoc rules`."""
        return {f.name: f.metadata.get("why", "") for f in fields(self)}


DEFAULT = Thresholds()
