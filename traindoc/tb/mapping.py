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

Nothing else goes in it (`ignore` may also stand at the top); a file of any other shape, a
pattern that is no regular expression or a `[run]` key that traindoc reads from the logs is
refused in one line naming the file (OverrideError, which the readers report per run).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re

from traindoc import format as fmt
from traindoc import paths

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
    m = re.match(r"^(?:[A-Za-z]+/)?lr[_-]?(\d+)$", tag)
    if m:  # one LR per parameter group, numbered: YOLO's x/lr0, x/lr1 ...
        yield f"lr/pg{int(m.group(1))}", 4
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


def loss_part(tag: str):
    """('train' or 'val', part) for a tag that names one term of a split's loss, as detectors
    log them (`train/box_loss`, `val/cls_loss`, `train_loss_rpn`, `val/dfl_loss`); else None."""
    words = _tokens(tag)
    if len(words) != 3 or "loss" not in words or words.count("loss") != 1:
        return None
    split = [w for w in words if w in _SPLITS]
    if len(split) != 1 or _SPLITS[split[0]] not in ("train", "val"):
        return None
    part = [w for w in words if w not in ("loss", split[0])]
    if len(part) != 1 or part[0] in _SPLITS or part[0] in _METRICS or part[0].isdigit():
        return None
    return _SPLITS[split[0]], part[0]


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


class OverrideError(ValueError):
    """An override file that cannot be used, in one line: the file, where in it, what is wrong.
    A ValueError, so that every reader reports it as the run's own error and goes on."""


#: Metadata that traindoc reads from the logs themselves: a `[run]` table may not replace it.
_READER_META = ("schema_version", "name", "source", "status", "updated", "start_time", "end_time", "warnings",
                "event_files", "readings", "keras", "run_id")
_CLASS_KEYS = ("num_classes", "n_classes", "classes")
_MAX_DEPTH = 32  # tables and arrays nested deeper than this are no hand-written mapping


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _name(key: str) -> str:
    """A key as the message shows it: as written where it is plain, quoted where it is not."""
    return key if key.isprintable() and 0 < len(key) <= 60 and " " not in key else _short(key)


def _kind(v) -> str:
    if isinstance(v, dict):
        return "a table"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, bool):
        return f"the boolean {_short(v)}"
    if isinstance(v, (int, float)):
        return f"the number {_short(v)}"
    if v is None:
        return "null"
    return _short(v)


def _depth(v, level: int = 0) -> int:
    """How deep tables and lists nest in `v` (stops counting past _MAX_DEPTH)."""
    if level > _MAX_DEPTH:
        return level
    items = v.values() if isinstance(v, dict) else v if isinstance(v, list) else ()
    return max((_depth(x, level + 1) for x in items), default=level)


def _parse(path: str) -> dict:
    """An override file's content as a dict, or OverrideError naming the file and what is wrong."""
    kind = path.rsplit(".", 1)[1].upper()
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise OverrideError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        if kind == "JSON":
            data = json.loads(raw)
        else:
            import tomllib

            data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise OverrideError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except ValueError as exc:  # json.JSONDecodeError, tomllib.TOMLDecodeError
        raise OverrideError(f"{path}: not valid {kind}: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise OverrideError(f"{path}: nested too deeply to be read") from None
    if not isinstance(data, dict):
        raise OverrideError(f"{path}: expected a table of [map] and [run], got {_kind(data)}")
    if _depth(data) > _MAX_DEPTH:
        raise OverrideError(f"{path}: nested more than {_MAX_DEPTH} levels deep")
    return data


def _patterns(path: str, where: str, value) -> list:
    if not isinstance(value, list):
        raise OverrideError(f"{path}: {where}: expected a list of regular expressions, got {_kind(value)}")
    out = []
    for i, p in enumerate(value):
        if not isinstance(p, str):
            raise OverrideError(f"{path}: {where}[{i}]: expected a regular expression (a string), got {_kind(p)}")
        try:
            out.append(re.compile(p))
        except (re.error, RecursionError, OverflowError, ValueError) as exc:
            raise OverrideError(f"{path}: {where}[{i}]: {_short(p)} is not a regular expression: {exc}") from None
    return out


def _check(path: str, data: dict) -> tuple[dict, list, dict]:
    """({tag: series}, [ignore regexes], {run metadata}) of a parsed override file; OverrideError
    for anything in it that is not what the module docstring describes."""
    unknown = [k for k in data if k not in ("map", "ignore", "run")]
    if unknown:
        raise OverrideError(f"{path}: unknown key {_name(unknown[0])} (expected [map], [run] or ignore)")
    table = data.get("map", {})
    if not isinstance(table, dict):
        raise OverrideError(f"{path}: map: expected a table of tag = series name, got {_kind(table)}")
    mapping = {}
    for tag, target in table.items():
        if tag == "ignore":
            continue
        if isinstance(target, dict):  # TOML's dotted key: train.loss = ... is a table
            raise OverrideError(f"{path}: map.{_name(tag)}: expected a series name, got a table (a tag with dots or "
                                f"slashes is written in quotes: \"a.b\" = \"train/loss\")")
        if not isinstance(target, str) or not target:
            raise OverrideError(f"{path}: map.{_name(tag)}: expected a series name (a string such as \"val/acc\"), "
                                f"got {_kind(target)}")
        mapping[tag] = target
    ignore = []
    if "ignore" in data:
        ignore += _patterns(path, "ignore", data["ignore"])
    if "ignore" in table:
        ignore += _patterns(path, "map.ignore", table["ignore"])
    run = data.get("run", {})
    if not isinstance(run, dict):
        raise OverrideError(f"{path}: run: expected a table (num_classes = 10, config = {{...}}), got {_kind(run)}")
    for key in run:
        if key in _READER_META:
            raise OverrideError(f"{path}: run.{key}: traindoc reads this from the logs; an override file cannot "
                                "set it")
    if "config" in run and not isinstance(run["config"], dict):
        raise OverrideError(f"{path}: run.config: expected a table of hyperparameters, got {_kind(run['config'])}")
    for where, source in (("run", run), ("run.config", run.get("config") or {})):
        for key in _CLASS_KEYS:
            v = source.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and (v != v or abs(v) == float("inf")):
                raise OverrideError(f"{path}: {where}.{key}: expected a number of classes, got {_kind(v)}")
    return mapping, ignore, run


def override_file(folder: str) -> str | None:
    """The override file that applies in `folder` itself (the TOML one where both are there)."""
    for name in OVERRIDE_FILES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def load_overrides(*folders: str) -> tuple[dict, list, dict]:
    """({tag: series}, [ignore regexes], {run metadata}) from the first override file in `folders`.

    The `run` table adds to the run's metadata, e.g. `num_classes = 10` for the
    initial-loss check, or `config = {...}` for the dashboard. A file that is not what the
    module docstring describes raises OverrideError (a ValueError): one line naming the file
    and what is wrong in it, which the readers report as the run's error."""
    for folder in folders:
        path = override_file(folder)
        if path is not None:
            return _check(path, _parse(path))
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
    """Add {tag: series} (and tags to ignore) to the override file in `folder`, keeping every
    key and value it already holds (TOML is written back by a TOML writer: tables, arrays, numbers,
    booleans and dates stay what they were; comments and layout do not survive). Written whole to
    a temporary file and renamed. Returns its path. A file there that is not a valid override
    file raises OverrideError and is left as it is."""
    path = override_file(folder) or os.path.join(folder, OVERRIDE_FILES[0])
    with _lock(path):
        data: dict = {}
        if os.path.isfile(path):
            data = _parse(path)
            _check(path, data)
        table = dict(data.get("map", {}))
        table.update({str(k): str(v) for k, v in mapping.items()})
        if ignore:
            old = list(table.get("ignore", []))
            table["ignore"] = old + sorted({"^" + re.escape(t) + "$" for t in ignore} - set(old))
        data["map"] = table
        if path.endswith(".json"):
            try:
                raw = (json.dumps(data, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate (JSON's "\\udcff"): kept as JSON's escape
                raw = (json.dumps(data, indent=1) + "\n").encode("ascii")
        else:
            import tomli_w

            try:
                raw = tomli_w.dumps(data).encode("utf-8")
            except UnicodeEncodeError:
                raise OverrideError(f"{path}: a tag is not valid UTF-8 text; TOML cannot hold it") from None
        tmp = path + f".{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(raw)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return path


def _lock(path: str):
    """A lock on one override file between processes (two dashboards saving at once), kept in
    traindoc's cache folder, not beside the logs; no lock where that folder cannot be written."""
    try:
        import filelock

        folder = os.path.join(paths.cache_root(), "locks")
        os.makedirs(folder, exist_ok=True)
        key = hashlib.sha1(os.path.realpath(path).encode("utf-8", "surrogateescape")).hexdigest()[:16]
        return filelock.FileLock(os.path.join(folder, f"overrides-{key}.lock"), timeout=30)
    except (ImportError, OSError):
        return contextlib.nullcontext()


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
