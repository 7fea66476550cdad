"""Label the corpus from how each run was made and what the run itself measured (its own
validation losses), never from traindoc's rules; then write the TensorBoard copies.

Reads corpus/outcomes.json (written by generate.py), writes corpus/labels.json and the
event files under corpus/tb/. The rule is stated in LABELS.md; this file is that rule.
usage: python corpus/label.py [--labels-only]   (--labels-only: relabel, keep the event files)
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

TRAIL = 1.05  # "trails the best": its best validation loss at least 5% worse ...
TRAIL_ABS = 0.01  # ... and at least 0.01 worse
ROSE = 1.05  # the run's own validation loss ended 5% above its best: it overfit
CLASSIFIERS = {"clusters", "glyphs", "sequence", "tabular", "charlm"}


def _worse(loss: float, best: float) -> bool:
    return not math.isfinite(loss) or loss >= TRAIL * best + TRAIL_ABS


def _own_curve(o: dict) -> tuple[bool, bool]:
    """(overfit, still improving) by the run's own validation loss."""
    if o.get("diverged") or not math.isfinite(o.get("best_val_loss", float("nan"))):
        return False, False
    rose = o["best_val_epoch"] < o["epochs_run"] - 1 and o["final_val_loss"] >= ROSE * o["best_val_loss"]
    improving = o["best_val_epoch"] >= o["epochs_run"] - 1
    return rose, improving


def label(outcomes: list[dict]) -> list[dict]:
    """One {run, family, path, required, allowed, why} per run that was made."""
    sweeps = defaultdict(list)
    for o in outcomes:
        if "error" not in o and o["spec"]["kind"] == "sweep":
            sweeps[(o["family"], o["spec"]["extra"]["opt"])].append(o)
    from generate import FAMILY_OPT  # noqa: E402 (the families' own optimizers)

    best = {}
    for key, group in sweeps.items():
        by_mult = defaultdict(list)
        for o in group:
            by_mult[o["spec"]["lr_mult"]].append(o["best_val_loss"] if not o["diverged"] else float("inf"))
        mult = min(by_mult, key=lambda m: sum(by_mult[m]) / len(by_mult[m]))
        best[key] = (mult, min(v for v in by_mult[mult]))
    out = []
    for o in outcomes:
        if "error" in o:
            continue
        spec, fam = o["spec"], o["family"]
        required, allowed, why = set(), set(), ""
        rose, improving = _own_curve(o)
        if spec["kind"] == "sweep":
            m_best, loss_best = best[(fam, spec["extra"]["opt"])]
            ratio = spec["lr_mult"] / m_best
            if ratio <= 0.1 + 1e-9:
                (required if _worse(o["best_val_loss"], loss_best) else allowed).add("lr_too_low")
                allowed |= {"train_longer", "underfitting"}
                why = f"LR {ratio:g}x the sweep's best"
            elif ratio >= 10 - 1e-9:
                (required if o["diverged"] or _worse(o["best_val_loss"], loss_best) else allowed).add("lr_too_high")
                allowed |= {"underfitting"}
                why = f"LR {ratio:g}x the sweep's best"
            elif ratio < 1 / 3 - 1e-9:
                allowed |= {"lr_too_low", "train_longer"}
                why = f"LR {ratio:g}x the best: between, not labelled"
            elif ratio > 3 + 1e-9:
                allowed |= {"lr_too_high"}
                why = f"LR {ratio:g}x the best: between, not labelled"
            else:
                why = f"LR {ratio:g}x the sweep's best: healthy"
        elif spec["kind"] == "schedule-early":
            required.add("early_decay")
            allowed |= {"underfitting", "train_longer", "lr_too_high"}
            why = f"{spec['schedule']}: the LR reaches its floor at 15% of the budget"
        elif spec["kind"] == "schedule-end":
            why = f"{spec['schedule']}: a schedule that ends at the end"
        elif spec["kind"] == "overfit":
            (required if rose else allowed).add("overfitting")
            why = "4% of the data, a big model, 3x the epochs" + ("" if rose else " (its val loss did not rise)")
        elif spec["kind"] == "underfit":
            if fam in CLASSIFIERS:
                required.add("underfitting")
            else:
                allowed.add("underfitting")
            allowed |= {"lr_too_low", "train_longer", "lr_too_high"}
            why = "tiny capacity" if spec["capacity"] == "tiny" else "weight decay 0.3"
        elif spec["kind"] == "short":
            (required if improving else allowed).add("train_longer")
            allowed |= {"lr_too_low", "underfitting"}
            why = "a sixth of the budget" + ("" if improving else " (its val loss had stopped improving)")
        if spec["kind"] != "sweep":
            # the sweep of the same family and optimizer says where this run's LR stands too
            key = (fam, spec["extra"].get("opt", FAMILY_OPT[fam]))
            ratio = spec["lr_mult"] / best[key][0] if key in best else 1.0
            if ratio <= 0.1 + 1e-9:
                allowed |= {"lr_too_low", "train_longer", "underfitting"}
            elif ratio >= 10 - 1e-9:
                allowed |= {"lr_too_high", "underfitting"}
        if rose:
            allowed.add("overfitting")
        if improving:
            allowed.add("train_longer")
        out.append({"run": o["name"], "family": fam, "path": o["path"], "kind": spec["kind"],
                    "required": sorted(required), "allowed": sorted(allowed - required), "why": why,
                    "tb_style": spec.get("tb_style")})
    return out


def write_tb(entry: dict) -> str | None:
    """A TensorBoard copy of a run under another library's tag names (what people have)."""
    from torch.utils.tensorboard import SummaryWriter

    from traindoc.reader import read_run

    style = entry["tb_style"]
    if not style:
        return None
    s = read_run(os.path.join(HERE, entry["path"]))
    names = {"plain": ("Loss/train", "Loss/val", "Accuracy/train", "Accuracy/val", "Learning Rate"),
             "hf": ("train/loss", "eval/loss", None, "eval/accuracy", "train/learning_rate"),
             "lightning": ("train_loss_step", "val_loss", "train_acc_step", "val_acc", "lr-SGD"),
             "keras": ("train/batch_loss", "validation/epoch_loss", "train/batch_accuracy",
                       "validation/epoch_accuracy", "train/epoch_learning_rate")}[style]
    target = os.path.join(HERE, "tb", entry["family"], entry["run"])
    shutil.rmtree(target, ignore_errors=True)
    writers = {}

    def w(tag):
        split = tag.split("/", 1)[0] if style == "keras" else ""
        if split not in writers:
            writers[split] = SummaryWriter(os.path.join(target, split) if split else target)
        return writers[split], (tag.split("/", 1)[1] if style == "keras" else tag)
    series = [("train/loss/mean", names[0]), ("val/loss", names[1]), ("train/acc", names[2]),
              ("val/acc", names[3]), ("lr/pg0", names[4])]
    for key, tag in series:
        if tag is None or not s.has(key):
            continue
        writer, name = w(tag)
        for step, v in s.get(key).items():
            writer.add_scalar(name, v, int(step))
    for writer in writers.values():
        writer.close()
    return os.path.relpath(target, HERE)


def main() -> None:
    with open(os.path.join(HERE, "outcomes.json")) as f:
        outcomes = json.load(f)
    labels = label(outcomes)
    if "--labels-only" in sys.argv:  # keep the TensorBoard copies as they are; relabel them
        with open(os.path.join(HERE, "labels.json")) as f:
            old = [e for e in json.load(f) if e["format"] == "tensorboard"]
        by_run = {e["run"]: e for e in labels}
        copies = [{**by_run[e["run"].split("@tb-")[0]], "run": e["run"], "path": e["path"], "format": "tensorboard"}
                  for e in old]
        for e in labels:
            e["format"] = "collector"
        with open(os.path.join(HERE, "labels.json"), "w") as f:
            json.dump(labels + copies, f, indent=1)
        print(f"{len(labels)} runs and {len(copies)} TensorBoard copies relabelled")
        return
    shutil.rmtree(os.path.join(HERE, "tb"), ignore_errors=True)
    copies = []
    for e in labels:
        tb = write_tb(e)
        if tb:
            copies.append({**e, "run": e["run"] + "@tb-" + e["tb_style"], "path": tb, "format": "tensorboard"})
    for e in labels:
        e["format"] = "collector"
    with open(os.path.join(HERE, "labels.json"), "w") as f:
        json.dump(labels + copies, f, indent=1)
    print(f"{len(labels)} runs and {len(copies)} TensorBoard copies labelled")


if __name__ == "__main__":
    main()
