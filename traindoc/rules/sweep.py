"""Sweeps: runs under one folder that differ only in their learning rate, judged together.

A single run can only guess whether its LR was too low or too high from the shape of its
curve. A sweep measures it: if a sibling run with a higher LR reached a lower loss by the
same step, this run's LR was too low, and the sibling is the evidence. So

- a run whose loss trails the sweep's best by `sweep_trail` of the best run's progress,
  at an LR `sweep_lr_ratio` or more away from the best LR, gets `lr_too_low` or
  `lr_too_high` by which side of the best it is on, naming the sibling runs;
- a single-run `lr_too_low` is withdrawn when a sibling at a higher LR did no better (and a
  non-divergent `lr_too_high` when one at a lower LR did no better): the sweep measured
  what the curve shape only suggested.

Which runs form a sweep: those in one folder whose hyperparameters (`meta["config"]`:
the collector's `config=`, Lightning's hparams.yaml, MLflow params, the HF Trainer's
arguments) are equal but for the LR and the seed, and whose setup as the collector saw it
(model class and size, optimizer, weight decay, first momentum, LR schedule shape) matches:
a config rarely lists everything; a run whose steps per epoch differ from the others' trains on
other data and is judged alone. Seeds repeated at one LR are averaged to find the best LR. Runs
without hyperparameters (TensorBoard logs) form one when their logged LR schedules have the
same shape and length; runs there repeated at one LR must have ended alike (else something
else differs too, and the folder is not taken for a sweep). A sweep tries three LRs spanning a
decade, or two a decade apart where every run trains at one LR.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field, replace

import numpy as np

from traindoc import format as fmt

from .base import Finding, Thresholds, drop_explained
from .curves import loss_curve, lr_series
from .needs import Diagnosis

#: Hyperparameter names read as the learning rate (lower-cased, "-" and " " as "_").
LR_NAMES = ("lr", "learning_rate", "learningrate", "base_lr", "max_lr", "peak_lr", "init_lr", "lr0")
#: Names that differ between the runs of any sweep without being a hyperparameter.
NOT_HPARAMS = ("name", "run", "run_name", "run_id", "output_dir", "out_dir", "log_dir", "logdir", "logging_dir",
               "save_dir", "checkpoint_dir", "ckpt_dir", "wandb_run_name", "exp_name", "experiment",
               "experiment_name", "tags", "notes", "timestamp", "date", "seed", "random_seed")
#: Names of where a run writes (its checkpoints, logs, outputs): different in every run of a sweep.
OUTPUT_NAME = re.compile(r"^(save|out|output|work|log|logging|ckpt|checkpoint|run|exp|results?|tb|tensorboard|wandb)"
                         r"(_?(dir|path|folder|root|file|to))?$")
#: Names of how long a run trains: a sweep's runs may differ in it (they are compared at the step
#: they all reached), but a run much shorter than the others is left out of the comparison.
LENGTH_NAMES = ("max_steps", "steps", "num_steps", "total_steps", "train_steps", "max_train_steps", "max_iters",
                "max_iter", "iters", "iterations", "num_iterations", "epochs", "num_epochs", "n_epochs",
                "max_epochs", "num_train_epochs")
#: A member planned (its config's length) for less than this share of the group's median is not
#: compared: a run stopped early on purpose. Runs interrupted at different points are compared
#: at the step they all reached.
SHORT_RUN = 0.75
#: A member whose steps per epoch differ from the group's median by this factor or more trains on
#: other data (a size flag the logged arguments do not hold, e.g. a script's data arguments that
#: the HF Trainer's callback never sees): it is judged alone.
OTHER_DATA = 1.5
MIN_RUNS = 3  # a sweep has three LRs at least, or
MIN_PAIR = 2  # two, where each run trains all its parameters at one LR (the LR is then unambiguous)
#: Runs repeated at one LR without hyperparameters are compared when their best losses agree
#: within this share of the range the group's losses cover.
REPEAT_AGREE = 0.05
MIN_SPAN = 10.0  # spanning a decade at least


@dataclass
class Member:
    """One run of a sweep: its LR and the loss it is compared by."""

    index: int  # position in the list given to find_sweeps
    name: str
    lr: float
    losses: "np.ndarray"  # the comparison loss: (steps, values)
    steps: "np.ndarray"
    ended_nonfinite: bool  # the loss ended in NaN/inf: diverged


@dataclass
class Sweep:
    """Runs that differ only in the LR, and what the comparison is read from."""

    folder: str
    members: list = field(default_factory=list)
    metric: str = "validation loss"
    _scores: dict | None = field(default=None, repr=False)

    def scores(self) -> dict[int, float]:
        """Member index -> its best loss up to the step every finished member reached (inf if it diverged)."""
        if self._scores is None:
            self._scores = self._compute_scores()
        return self._scores

    def _compute_scores(self) -> dict[int, float]:
        alive = [m for m in self.members if not m.ended_nonfinite and len(m.steps)]
        if not alive:
            return {}
        common = min(float(m.steps[-1]) for m in alive)
        out = {}
        for m in self.members:
            k = np.isfinite(m.losses) & (m.steps <= common)
            out[m.index] = math.inf if m.ended_nonfinite or not k.any() else float(m.losses[k].min())
        return out


def _norm(name: str) -> str:
    return str(name).lower().replace("-", "_").replace(" ", "_")


def _hparams(run) -> tuple[float | None, tuple]:
    """(LR from the config or None, the other hyperparameters as a sorted tuple)."""
    cfg = run.meta.get("config") or {}
    if not isinstance(cfg, dict):
        return None, ()
    lr, rest = None, []
    for k, v in cfg.items():
        n = _norm(k)
        if n in LR_NAMES and isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
            lr = float(v)
        elif n not in NOT_HPARAMS and n not in LENGTH_NAMES and not OUTPUT_NAME.match(n) and \
                (v is None or isinstance(v, (int, float, str, bool))):
            rest.append((n, v if not isinstance(v, float) else round(v, 12)))
    return lr, tuple(sorted(rest, key=lambda kv: kv[0]))


def _setup(run) -> tuple:
    """What the collector recorded of the model and optimizer (class, size, optimizer, weight
    decay, first momentum): runs a config says differ only in the LR but that differ here are no
    sweep (a config rarely lists everything)."""
    meta, out = run.meta, []
    for k in ("model_class", "num_params", "optimizers", "weight_decay"):
        if meta.get(k) is not None:
            v = meta[k]
            out.append((f"_{k}", json.dumps(v) if isinstance(v, (list, dict)) else v))
    if run.has(fmt.MOMENTUM_PREFIX + "pg0"):
        m = run.get(fmt.MOMENTUM_PREFIX + "pg0")
        if len(m):
            out.append(("_momentum", round(float(m.iloc[0]), 6)))
    return tuple(out)


def _schedule_shape(run) -> tuple | None:
    """The LR schedule scaled by its peak at 9 points of the run, and the run's length in 2 figures."""
    lr = lr_series(run)
    if lr is None or len(lr) < 1:
        return None
    vals = lr.to_numpy(dtype=float)
    peak = float(np.nanmax(vals)) if np.isfinite(vals).any() else 0.0
    if peak <= 0:
        return None
    steps = lr.index.to_numpy(dtype=float)
    c = loss_curve(run)
    last = float(c.steps[-1]) if c is not None and len(c) else float(steps[-1])
    at = np.searchsorted(steps, np.linspace(0.1, 0.9, 9) * last, side="right") - 1
    shape = tuple(round(float(vals[max(i, 0)]) / peak, 1) for i in at)
    return shape, float(f"{last:.2g}")


def _thin_min(steps: np.ndarray, values: np.ndarray, n: int = 400) -> tuple[list, list]:
    """At most `n` points: each bucket's lowest value at the bucket's last step (a sweep compares
    best losses up to a step, which this keeps, never counting a value before its step)."""
    if len(steps) <= n:
        return [float(x) for x in steps], [float(v) for v in values]
    starts = np.linspace(0, len(steps), n + 1).astype(int)[:-1]
    ends = np.r_[starts[1:], len(steps)] - 1
    with np.errstate(invalid="ignore"):
        lows = np.fmin.reduceat(np.asarray(values, float), starts)
    return [float(x) for x in np.asarray(steps)[ends]], [float(v) for v in lows]


def digest(run, points: int = 400) -> dict | None:
    """What a sweep needs of a run, JSON-able (the run catalog stores it): where it is, its other
    hyperparameters, its LR (from the config, or the peak and shape of its logged schedule), its
    losses (validation, and train window means, each thinned to `points` bucket minima), and whether
    the loss ended in NaN/inf. None for a run with neither an LR in its config nor a logged LR."""
    lr, rest = _hparams(run)
    shape = _schedule_shape(run)
    inferred = lr is None
    if inferred:
        if shape is None:
            return None
        lr = float(np.nanmax(lr_series(run).to_numpy(dtype=float)))
    else:  # the config names the LR; what the collector saw of the setup must match too
        rest = rest + _setup(run)
        shape = None if shape is None else (shape[0], None)  # the same schedule, whatever length was run
    val = run.get(fmt.VAL_LOSS) if run.has(fmt.VAL_LOSS) else None  # NaNs kept: a diverged run still has one
    c = loss_curve(run)
    cfg = run.meta.get("config") if isinstance(run.meta.get("config"), dict) else {}
    planned = next((float(v) for k, v in cfg.items() if _norm(k) in LENGTH_NAMES
                    and isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0), None)
    return {"folder": os.path.dirname(os.path.normpath(run.path or "")), "name": run.name, "lr": lr,
            "planned": planned,
            "hparams": [list(kv) for kv in rest], "shape": [list(shape[0]), shape[1]] if shape else None,
            "inferred": inferred and not rest,
            "val": None if val is None else list(_thin_min(val.index.to_numpy(), val.to_numpy(dtype=float), points)),
            "train": None if c is None or not len(c) else list(_thin_min(c.steps, c.mean, points)),
            "ended_nonfinite": _ended_nonfinite(run), "one_lr": _one_lr(run), "epoch_steps": _epoch_steps(run)}


def _epoch_steps(run) -> float | None:
    """Optimizer steps per epoch, where the collector counted both (None elsewhere)."""
    steps, epochs = run.meta.get("steps"), run.meta.get("epochs")
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in (steps, epochs))
    return float(steps) / float(epochs) if ok and epochs >= 1 else None


def _one_lr(run) -> bool:
    """Every parameter group logged the same LR all along (or just one group was logged): the
    run's LR is one number. A run with per-layer LRs (a frozen or slowed layer) is not."""
    groups = [run.get(k).to_numpy(dtype=float) for k in run.with_prefix(fmt.LR_PREFIX)]
    groups = [g for g in groups if len(g)]
    if not groups:
        return False
    n = min(len(g) for g in groups)
    return all(np.allclose(g[:n], groups[0][:n], rtol=1e-3, equal_nan=True) for g in groups[1:])


def _ended_nonfinite(run) -> bool:
    """The train loss (windows or per-step) ends in NaN or inf."""
    for key in (fmt.LOSS_WINDOW + "/mean", fmt.LOSS_RAW, fmt.VAL_LOSS):
        if run.has(key):
            s = run.get(key)
            if len(s) and not np.isfinite(float(s.iloc[-1])):
                return True
    return False


def find_sweeps(runs: list) -> list[Sweep]:
    """The sweeps among `runs` (RunSeries), each with three or more LRs spanning a decade."""
    return sweeps_of([digest(r) for r in runs])


def _key(d: dict, coupled: frozenset = frozenset()) -> tuple:
    return (d["folder"], tuple(tuple(kv) for kv in d["hparams"] if kv[0] not in coupled),
            None if d["shape"] is None else (tuple(d["shape"][0]), d["shape"][1]))


def lr_coupled(digests: list) -> dict[str, frozenset]:
    """Per folder, the hyperparameters that are set from the LR: numbers whose ratio to the run's
    LR is the same in every run that has them while their values differ (`min_lr = lr / 10`, a
    warm-up's starting LR). Runs that change them with the LR still change only the LR."""
    by_folder: dict[str, list] = {}
    for d in digests:
        if d is not None:
            by_folder.setdefault(d["folder"], []).append(d)
    out = {}
    for folder, ds in by_folder.items():
        ratios: dict[str, list] = {}
        for d in ds:
            for k, v in d["hparams"]:
                if isinstance(v, (int, float)) and not isinstance(v, bool) and d["lr"] > 0:
                    ratios.setdefault(k, []).append((v, v / d["lr"]))
        out[folder] = frozenset(k for k, vr in ratios.items() if len(vr) >= 2 and len({v for v, _ in vr}) > 1
                                and all(math.isclose(r, vr[0][1], rel_tol=1e-6) for _, r in vr))
    return out


def _alike(digests: list, items: list, field: str, keep) -> list:
    """The `items` whose digest `field`, over the group's median of it, passes `keep`; all of them
    when any member lacks the field."""
    values = {i: digests[i].get(field) for i in items}
    if not all(values.values()):
        return items
    typical = float(np.median(list(values.values())))
    return [i for i in items if keep(values[i] / typical)]


def _enough_lrs(digests: list, items: list) -> bool:
    """Three LRs or more spanning a decade, or two a decade apart where every run has one LR (the
    ratio read with float32's precision: logged LRs of 5e-6 and 5e-5 are 9.9999998 apart)."""
    distinct = sorted({digests[i]["lr"] for i in items})
    need = MIN_PAIR if all(digests[i].get("one_lr") for i in items) else MIN_RUNS
    return len(distinct) >= need and distinct[-1] / distinct[0] >= MIN_SPAN * (1 - 1e-3)


def _disagreeing_lrs(digests: list, items: list, share: float = REPEAT_AGREE) -> set | None:
    """The LRs at which repeated runs reached different best losses: apart by more than `share`
    of the range that all the group's losses cover. Runs that agree differ at most in something
    that did not change the outcome (a seed), so the LRs can still be compared. None when a run
    has no loss to compare."""
    curves = [digests[i]["val"] or digests[i]["train"] for i in items]
    if not all(curves):
        return None
    values = [np.asarray(c[1], float) for c in curves]
    values = [v[np.isfinite(v)] for v in values]
    if not all(len(v) for v in values):
        return None
    span = max(float(v.max()) for v in values) - min(float(v.min()) for v in values)
    best: dict[float, list[float]] = {}
    for i, v in zip(items, values):
        best.setdefault(digests[i]["lr"], []).append(float(v.min()))
    return {lr for lr, b in best.items() if max(b) - min(b) > share * span}


def sweeps_of(digests: list) -> list[Sweep]:
    """The sweeps among runs given by their `digest` (None where a run has none); member indices
    are positions in `digests`."""
    groups: dict[tuple, list[int]] = {}
    coupled = lr_coupled(digests)
    for i, d in enumerate(digests):
        if d is not None:
            groups.setdefault(_key(d, coupled[d["folder"]]), []).append(i)
    sweeps = []
    for key, items in groups.items():
        items = _alike(digests, items, "planned", lambda r: r >= SHORT_RUN)  # a run planned short is judged alone
        items = _alike(digests, items, "epoch_steps", lambda r: 1 / OTHER_DATA < r < OTHER_DATA)  # other data: alone
        if not _enough_lrs(digests, items):
            continue
        if digests[items[0]]["inferred"] and len({digests[i]["lr"] for i in items}) < len(items) \
                and _disagreeing_lrs(digests, items) != set():
            continue  # repeats at one LR without hyperparameters ended apart: something else differs
        use_val = all(digests[i]["val"] for i in items)
        sweep = Sweep(key[0], metric="validation loss" if use_val else "train loss")
        for i in items:
            d = digests[i]
            curve = d["val"] if use_val else d["train"]
            steps, losses = (np.asarray(curve[0], float), np.asarray(curve[1], float)) if curve else \
                (np.zeros(0), np.zeros(0))
            sweep.members.append(Member(i, d["name"], d["lr"], losses, steps, d["ended_nonfinite"]))
        sweeps.append(sweep)
    return sweeps


def _sibling_finding(rule: str, m: Member, best: Member, scores: dict, sweep: Sweep, trail: float) -> Finding:
    ratio = best.lr / m.lr if rule == "lr_too_low" else m.lr / best.lr
    siblings = sorted(sweep.members, key=lambda x: x.lr)
    return Finding(rule, "warning", (0, int(best.steps[-1]) if len(best.steps) else 0), {
        "sweep_best_run": best.name, "sweep_best_lr": best.lr, "lr": m.lr, "lr_ratio_to_best": ratio,
        f"best_{sweep.metric.replace(' ', '_')}": scores[m.index],
        f"sweep_best_{sweep.metric.replace(' ', '_')}": scores[best.index],
        "sweep_runs": [f"{x.name} (lr {x.lr:.3g})" for x in siblings],
        "trails_best_by_share_of_its_progress": trail,
    }, (f"{'Raise' if rule == 'lr_too_low' else 'Lower'} the learning rate toward {best.lr:.3g}: in this sweep, "
        f"{best.name} at {ratio:.3g}x {'this' if rule == 'lr_too_low' else 'less than this'} LR reached a lower "
        f"{sweep.metric} by the same step."))


def _contradicted(f: Finding, m: Member, best: Member, trail: float, sweep: Sweep, scores: dict,
                  cfg: Thresholds) -> bool:
    """A single-run LR finding the sweep measured otherwise. `lr_too_low` ("raise it") is
    withdrawn when the sweep's best LR is lower than this run's, when a sibling at a higher LR
    (half a decade or more) did no better, or when this run is as good as the best and the best
    has a worse sibling above it; `lr_too_high` (not a divergence) the same way round."""
    if f.rule not in ("lr_too_low", "lr_too_high") or f.evidence.get("diverged") or "sweep_best_run" in f.evidence:
        return False
    s, r = scores[m.index], cfg.sweep_lr_ratio
    near_best = max(m.lr / best.lr, best.lr / m.lr) < r and trail < cfg.sweep_trail
    if f.rule == "lr_too_low":
        return (best.lr < m.lr or any(o.lr >= r * m.lr and scores[o.index] >= s for o in sweep.members)
                or (near_best and any(o.lr > best.lr and scores[o.index] > scores[best.index]
                                      for o in sweep.members)))
    return (best.lr > m.lr or any(o.lr * r <= m.lr and scores[o.index] >= s for o in sweep.members)
            or (near_best and any(o.lr < best.lr and scores[o.index] > scores[best.index] for o in sweep.members)))


def apply_sweeps(sweeps: list[Sweep], diagnoses: list[Diagnosis], cfg: Thresholds) -> list[Diagnosis]:
    """The diagnoses with each sweep's evidence added (new objects; the inputs are not changed)."""
    out = list(diagnoses)
    for sweep in sweeps:
        scores = sweep.scores()
        finite = {i: s for i, s in scores.items() if math.isfinite(s)}
        if len(finite) < MIN_PAIR:
            continue
        by_lr: dict[float, list[float]] = {}
        for m in sweep.members:  # seeds repeated at one LR are averaged (a divergence counts as inf)
            by_lr.setdefault(m.lr, []).append(scores[m.index])
        best_lr = min(by_lr, key=lambda lr: sum(by_lr[lr]) / len(by_lr[lr]))
        reference = sum(by_lr[best_lr]) / len(by_lr[best_lr])
        if not math.isfinite(reference):
            continue
        best = min((m for m in sweep.members if m.lr == best_lr), key=lambda m: scores[m.index])
        first = float(best.losses[np.isfinite(best.losses)][0])
        progress = first - reference
        if not progress > 0:
            continue
        for m in sweep.members:
            d = out[m.index]
            if any(f.rule == "lr_too_high" and f.evidence.get("diverged") for f in d.findings):
                continue
            s = scores[m.index]
            trail = (s - reference) / progress if math.isfinite(s) else math.inf
            findings = [f for f in d.findings if not _contradicted(f, m, best, trail, sweep, scores, cfg)]
            far = max(m.lr / best.lr, best.lr / m.lr) >= cfg.sweep_lr_ratio
            if far and trail >= cfg.sweep_trail:
                rule = "lr_too_low" if m.lr < best.lr else "lr_too_high"
                findings = drop_explained([x for x in findings if x.rule != rule]
                                          + [_sibling_finding(rule, m, best, scores, sweep, trail)])
            if findings != d.findings:
                out[m.index] = replace(d, findings=findings)
    return out

