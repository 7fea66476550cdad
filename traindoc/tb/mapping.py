"""Map the public TensorBoard tag conventions onto traindoc's series names.

Conventions understood (first match wins, most specific first):
  * traindoc's own names (a run exported with `traindoc export-tb` reads back as itself);
  * Keras' TensorBoard callback: `train/` and `validation/` folders of one run with
    `epoch_loss`, `epoch_accuracy`, `epoch_learning_rate`, `batch_loss`, ...;
  * Hugging Face Trainer: `train/loss`, `train/learning_rate`, `train/epoch`, `eval/loss`,
    `eval/accuracy`, `eval/<metric>`;
  * PyTorch Lightning: `train_loss[_step|_epoch]`, `val_loss`, `val_acc`, `train_acc[_step|_epoch]`,
    `epoch`, and LearningRateMonitor's `lr-<Optimizer>[/pg<N>]`, `lr-<Optimizer>-momentum`;
  * plain names: `loss`, `acc`/`accuracy`, `lr`/`learning_rate` with train/val/valid/validation/
    eval/test as a prefix or suffix, joined by `/`, `_` or `-`.
Where two tags claim one series, the more specific wins and the other stays a custom
scalar; anything unmapped is shown as `custom/<tag>`. A user file overrides all of it:
`traindoc-tb.toml` (or `.json`) in the logdir or the run folder:

    [map]
    "holdout/top1" = "val/acc"
    ignore = ["timing/.*"]
    [run]
    num_classes = 10
"""

from __future__ import annotations

import json
import os
import re

from traindoc import format as fmt

OVERRIDE_FILES = fmt.OVERRIDE_FILES
# traindoc's own names; `val/<x>` and `lr/<x>` only in the forms the collector writes, so
# that `val/accuracy`, `val/top1` or `lr/Adam` are read for their meaning, not kept as-is.
_NATIVE = re.compile(r"^(train/loss/(mean|var|min|max|count|nonfinite|first)|train_epoch/loss/(mean|var|min|max|count|"
                     r"nonfinite)|train/acc|train_epoch/acc|epoch|val/(loss|acc)|(lr|momentum|beta[12])/(opt\d+/)?pg\d+|"
                     r"update_ratio/.+|custom/.+)$")
_SPLITS = {"train": "train", "training": "train", "tr": "train", "val": "val", "valid": "val", "validation": "val",
           "eval": "val", "evaluation": "val", "dev": "val", "v": "val", "test": "test", "testing": "test"}
_METRICS = {"loss": "loss", "losses": "loss", "cost": "loss", "acc": "acc", "accuracy": "acc", "accuracies": "acc",
            "top1": "acc", "acc1": "acc", "prec1": "acc", "lr": "lr"}
#: A loss named by its kind: the validation loss in `val_ce` or `valid_nll`, where it stands alone.
_LOSS_NAMES = {"ce", "nll", "xent", "crossentropy"}
_LEVELS = {"step": "step", "steps": "step", "batch": "step", "iter": "step", "iteration": "step", "inner": "step",
           "epoch": "epoch", "epochs": "epoch"}
#: Words that say nothing about which series a tag is: scopes, averaging, the total of a loss.
_NEUTRAL = {"metrics", "metric", "scalars", "scalar", "charts", "avg", "average", "mean", "total", "overall", "per",
            "on", "of", "the", "score", "hyperparameters", "hparams", "hparam", "sparse", "categorical", "binary",
            "top", "at", "all", "set", "data", "main"}
_OPTIMIZERS = {"sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta", "lamb", "lion", "adafactor", "lars",
               "nadam", "radam", "group", "pg", "param", "0"}
_IF_VAL_ACC = "?if-val-acc:"  # a claim that holds only when another tag is the validation accuracy
_LIGHTNING_LR = re.compile(r"^lr-([A-Za-z0-9_]+?(?:-\d+)?)(-momentum)?(?:/pg(\d+))?$")


def _tokens(tag: str) -> list[str]:
    """Lower-case words of a tag: camelCase and digits split off, parentheses and
    separators (/ _ - . : @ space) dropped, "learning rate" as one word."""
    t = re.sub(r"\([^)]*\)", " ", tag)
    t = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", t)
    t = re.sub(r"(?i)learning[\s_\-]*rate", " lr ", t).lower()
    t = re.sub(r"\b(top|acc|prec)[\s_\-@]*1\b", r"\g<1>1", t)  # top-1, acc@1, prec_1
    return [w for w in re.split(r"[/_\-\s.:@,]+", t) if w]


def _plain(tag: str):
    """(split, metric, level) for plain names: val_loss, loss/train, Training loss,
    epoch_train_loss, Train/EpochLoss, Learning rate SGD, val_sparse_categorical_accuracy.
    None when any word is not understood: such a tag stays a custom scalar."""
    words = _tokens(tag)
    if not words or len(words) > 8:
        return None
    splits, metrics, levels = set(), set(), set()
    named_loss = False
    is_lr = "lr" in words
    for w in words:
        if w in _METRICS:
            metrics.add(_METRICS[w])
        elif w in _SPLITS:
            splits.add(_SPLITS[w])
        elif w in _LOSS_NAMES:
            named_loss = True
        elif w in _LEVELS:
            levels.add(_LEVELS[w])
        elif w in _NEUTRAL or (is_lr and (w in _OPTIMIZERS or w.isdigit())):
            continue
        else:
            return None
    if named_loss and (splits != {"val"} or any(_METRICS.get(w) == "loss" for w in words)):
        return None  # a bare `nll`, a `train/ce_loss` beside other terms: a part of some loss, not the loss
    if named_loss:
        metrics.add("loss")
    if splits == {"val", "test"}:  # a test/ folder's v_loss, a val/test_acc: held-out data either way
        splits = {"val"}
    if len(metrics) != 1 or len(splits) > 1 or len(levels) > 1:
        return None
    return (next(iter(splits)) if splits else None), next(iter(metrics)), (next(iter(levels)) if levels else None)


def _candidates(tag: str, keras: bool):
    """(target, priority) proposals for one tag; lower priority wins."""
    if _NATIVE.match(tag):
        yield tag, 0
        return
    if keras:
        split, _, name = tag.partition("/")
        if split in ("train", "validation") and name.startswith(("epoch_", "batch_", "evaluation_")):
            level, _, metric = name.partition("_")
            plain = _plain(metric)  # accuracy, sparse_categorical_accuracy, learning_rate ...
            metric = plain[1] if plain and plain[0] is None else metric
            if split == "train":
                if metric == "loss":
                    yield (fmt.LOSS_RAW, 1) if level == "batch" else ("train_epoch/loss/mean", 1)
                    if level == "epoch":
                        yield fmt.LOSS_RAW, 5  # only if there is no per-batch loss
                elif metric == "acc":
                    yield (fmt.TRAIN_ACC, 1) if level == "batch" else (fmt.TRAIN_ACC_EPOCH, 1)
                elif metric == "lr":
                    yield "lr/pg0", 1
            elif level == "epoch":
                if metric in ("loss", "acc"):
                    yield f"val/{metric}", 1
            return
        # any other name in a split folder is read as a plain name: train/loss, validation/acc
    hf = {"train/loss": (fmt.LOSS_RAW, 1), "train/learning_rate": ("lr/pg0", 1), "train/epoch": ("epoch", 1),
          "eval/loss": ("val/loss", 1), "eval/accuracy": ("val/acc", 1), "eval/acc": ("val/acc", 1)}
    if tag in hf:
        yield hf[tag]
        return
    m = re.match(r"^eval/([A-Za-z0-9_]+)$", tag)
    if m and m.group(1) not in ("runtime", "samples_per_second", "steps_per_second"):
        named = _eval_set(m.group(1))
        if named:  # one of several evaluation sets: eval/<set>_loss
            yield named
        else:
            yield f"val/{m.group(1)}", 3
        return
    m = re.match(r"^(.+)/dataloader_idx_(\d+)$", tag)
    if m:  # Lightning with several validation loaders: the first one is the validation set
        for target, prio in _candidates(m.group(1), keras):
            if target.startswith("val/"):
                yield target, prio + 1 + int(m.group(2))
        return
    m = _LIGHTNING_LR.match(tag)
    if m:
        opt, mom, pg = m.groups()
        yield f"{'momentum' if mom else 'lr'}/{{opt:{opt}}}pg{pg or 0}", 2
        return
    if tag == "epoch":
        yield "epoch", 1
        return
    p = _plain(tag)
    if p:
        split, metric, level = p
        if metric == "lr":
            if split in (None, "train"):
                yield "lr/pg0", 4
            return
        if split in (None, "train"):
            vague = split is None  # a bare "loss" yields to an explicit "loss/train"
            if metric == "loss":
                if level == "epoch":
                    yield "train_epoch/loss/mean", 2 + vague
                    yield fmt.LOSS_RAW, 6
                else:
                    yield fmt.LOSS_RAW, (2 if level == "step" else 3) + vague
            elif vague and level is None:
                # a bare "accuracy" is the train set's in some scripts, the test set's in others:
                # the train one only beside an explicit validation accuracy
                yield _IF_VAL_ACC + fmt.TRAIN_ACC, 8
            elif level == "epoch":
                yield fmt.TRAIN_ACC_EPOCH, 2 + vague
            else:
                yield fmt.TRAIN_ACC, (2 if level == "step" else 3) + vague
        elif split == "val":
            yield f"val/{metric}", 2 if level != "step" else 4
        elif split == "test":
            yield f"val/{metric}", 7  # test as validation only when there is nothing better


#: Names of an evaluation set that make it the validation set, before test sets and others.
_VAL_SETS = {"val", "valid", "validation", "dev", "eval", "evaluation", "heldout", "holdout"}


def _eval_set(rest: str):
    """(val/loss or val/acc, priority) for the Hugging Face Trainer's `eval_<set>_loss` /
    `eval_<set>_accuracy` of a run evaluated on several sets: a set named like a validation set
    first, a test set next, any other name (a language, a benchmark) after them, the first
    logged winning among equals. None when `rest` is no set's loss or accuracy."""
    words = _tokens(rest)
    if len(words) < 2 or _METRICS.get(words[-1]) not in ("loss", "acc"):
        return None
    metric, name = _METRICS[words[-1]], words[:-1]
    if len(name) == 1 and name[0] in _VAL_SETS:
        prio = 4
    elif len(name) == 1 and name[0] in ("test", "testing"):
        prio = 7
    else:
        prio = 9
    return f"val/{metric}", prio


def load_overrides(*folders: str) -> tuple[dict, list, dict]:
    """({tag: series}, [ignore regexes], {run metadata}) from the first override file in `folders`.

    The `run` table adds to the run's metadata, e.g. `num_classes = 10` for the
    initial-loss check, or `config = {...}` for the dashboard."""
    for folder in folders:
        for name in OVERRIDE_FILES:
            path = os.path.join(folder, name)
            if not os.path.isfile(path):
                continue
            with open(path, "rb") as f:
                raw = f.read()
            try:
                if name.endswith(".json"):
                    data = json.loads(raw)
                else:
                    import tomllib

                    data = tomllib.loads(raw.decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise ValueError(f"{path}: not valid {name.rsplit('.', 1)[1].upper()}: {exc}") from None
            table = data.get("map", {}) if isinstance(data, dict) else {}
            mapping = {str(k): str(v) for k, v in table.items() if k != "ignore" and isinstance(v, str)}
            ignore = table.get("ignore", data.get("ignore", []))
            run = data.get("run", {}) if isinstance(data, dict) else {}
            return mapping, [re.compile(str(p)) for p in ignore], run if isinstance(run, dict) else {}
    return {}, [], {}


#: What a person can say a series is, in the app's words -> the traindoc series it feeds.
MEANINGS = {
    "train loss, per step": fmt.LOSS_RAW,
    "train loss, per epoch": fmt.LOSS_EPOCH + "/mean",
    "validation loss": fmt.VAL_LOSS,
    "train accuracy": fmt.TRAIN_ACC,
    "validation accuracy": fmt.VAL_ACC,
    "learning rate": fmt.LR_PREFIX + "pg0",
}


def save_overrides(folder: str, mapping: dict[str, str], ignore: list[str] = ()) -> str:
    """Add {tag: series} (and tags to ignore) to the override file in `folder`, keeping what
    it already says; written whole to a temporary file and renamed. Returns its path."""
    path = next((os.path.join(folder, n) for n in OVERRIDE_FILES if os.path.isfile(os.path.join(folder, n))),
                os.path.join(folder, OVERRIDE_FILES[0]))
    data: dict = {}
    if os.path.isfile(path):
        with open(path, "rb") as f:
            raw = f.read()
        if path.endswith(".json"):
            data = json.loads(raw)
        else:
            import tomllib

            data = tomllib.loads(raw.decode("utf-8"))
    table = dict(data.get("map", {}))
    table.update({str(k): str(v) for k, v in mapping.items()})
    if ignore:
        table["ignore"] = sorted(set(table.get("ignore", [])) | {"^" + re.escape(t) + "$" for t in ignore})
    data["map"] = table
    text = json.dumps(data, indent=1) if path.endswith(".json") else _toml(data)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def _toml(data: dict) -> str:
    """The override file's small TOML: tables of strings, numbers, booleans and string lists."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(str(v))  # a JSON string is a valid TOML basic string
    lines = []
    for name, table in data.items():
        if not isinstance(table, dict):
            continue
        lines.append(f"[{name}]")
        lines += [f"{json.dumps(str(k))} = {value(v)}" for k, v in table.items()]
        lines.append("")
    return "\n".join(lines)


def map_tags(tags, keras: bool = False, overrides: dict | None = None, ignore=()) -> dict[str, list[str]]:
    """tag -> the traindoc series it feeds ([] = ignored). Unclaimed tags become custom scalars.

    `tags` come in the order they first appear in the logdir: among equals the first one
    wins, and Lightning's optimizers are numbered in that order."""
    overrides = overrides or {}
    claims: dict[str, tuple[int, str]] = {}
    result: dict[str, list[str]] = {}
    optimizers: list[str] = []
    for tag in tags:
        if any(p.search(tag) for p in ignore):
            result[tag] = []
        elif tag in overrides:
            result[tag] = [overrides[tag]]
            claims[overrides[tag]] = (-1, tag)
    for tag in tags:
        if tag in result:
            continue
        for target, prio in _candidates(tag, keras):
            m = re.search(r"\{opt:([^}]*)\}", target)
            if m:  # Lightning: the first optimizer is lr/pg*, the next lr/opt1/pg* ...
                if m.group(1) not in optimizers:
                    optimizers.append(m.group(1))
                k = optimizers.index(m.group(1))
                target = target.replace(m.group(0), "" if k == 0 else f"opt{k}/")
            held = claims.get(target)
            if held is None or prio < held[0]:
                claims[target] = (prio, tag)
    for target, (prio, tag) in claims.items():
        if target.startswith(_IF_VAL_ACC):
            target = target[len(_IF_VAL_ACC):]
            if "val/acc" not in claims or target in claims:
                continue
        if prio >= 0:
            result.setdefault(tag, []).append(target)
    for tag in tags:
        if tag not in result:
            result[tag] = [fmt.CUSTOM_PREFIX + tag]
    return result
