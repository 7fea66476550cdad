"""TensorBoard logdirs as traindoc runs: discovery, incremental reading, a cache, series.

A run is a folder that holds event files; its split subfolders (Keras' `train/` and
`validation/`, a TensorFlow 2 loop's `train/` and `test/`) and the subfolders that
`add_scalars` writes (`Loss_train/`, `Loss_val/`, each holding tag `Loss`) belong to it,
not to runs of their own. Where a run was resumed and logged a step again, the newest
value wins and the steps logged after it by the abandoned attempt are dropped, as
TensorBoard does. Each event file is read from
the byte offset where the last read stopped; what was read is cached (numpy arrays in
the cache folder, `$TRAINDOC_CACHE` or `~/.cache/traindoc/tb`), so a second open
reads the cache and only the bytes appended since.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from traindoc import format as fmt
from traindoc import paths
from traindoc.series import RunFormatError, RunSeries
from traindoc.windows import window_stats

from .events import read_scalars
from .mapping import load_overrides, loss_part, map_tags

KERAS_SPLITS = ("train", "validation")
#: Sibling folders that are one run's splits: Keras writes train/ and validation/,
#: TensorFlow 2 custom loops commonly train/ and test/ (or val/, eval/).
SPLITS = ("train", "validation", "val", "valid", "eval", "evaluation", "test")
LIVE_SECS = fmt.LIVE_SECS
CACHE_VERSION = 2  # 2: records verified by CRC; caches parsed without the check are read again


def _event_files(folder: str) -> list[str]:
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    return [os.path.join(folder, n) for n in names if ".tfevents." in n and os.path.isfile(os.path.join(folder, n))]


def _keras_splits(folder: str) -> list[str]:
    return [s for s in KERAS_SPLITS if _event_files(os.path.join(folder, s))]


def _splits(folder: str) -> list[str]:
    """Split subfolders with event files, when there are two or more and `train` is one of them."""
    found = [s for s in SPLITS if _event_files(os.path.join(folder, s))]
    return found if len(found) >= 2 and "train" in found else []


def _first_tags(path: str, limit: int = 1 << 16) -> set[str]:
    """Scalar tags among the first records of an event file (cheap: one small read)."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit)
    except OSError:
        return set()
    return set(read_scalars(data).tags)


def _scalars_child_key(child: str, tag: str) -> str | None:
    """The key of an add_scalars child folder for `tag` (Loss_train holds tag Loss: "train")."""
    head = tag.replace("/", "_") + "_"
    name = os.path.basename(child)
    return name[len(head):] if name.startswith(head) and len(name) > len(head) else None


def _scalars_children(folder: str) -> list[str]:
    """Subfolders that `add_scalars(main_tag, {key: ...})` wrote beside the folder's own events:
    each holds only the main tag, in a folder named `<main_tag>_<key>`."""
    if not _event_files(folder):
        return []
    out = []
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    for n in names:
        child = os.path.join(folder, n)
        files = _event_files(child) if os.path.isdir(child) else []
        if not files:
            continue
        tags = _first_tags(files[0])
        if tags and all(_scalars_child_key(child, t) for t in tags):
            out.append(child)
    return out


def is_tb_run(path: str) -> bool:
    """True for a folder with event files, or a run made of split folders (train/ and validation/ or test/)."""
    return os.path.isdir(path) and bool(_event_files(path) or _keras_splits(path) or _splits(path))


def find_tb_runs(root: str, max_depth: int = 5) -> list[str]:
    """Every TensorBoard run under `root` (split and add_scalars folders fold into their parent)."""
    found: set[str] = set()
    base = root.rstrip(os.sep).count(os.sep)
    children: set[str] = set()
    for dirpath, dirnames, _ in os.walk(root, followlinks=False):
        dirnames.sort()
        if dirpath.count(os.sep) - base >= max_depth:
            dirnames[:] = []
        if not _event_files(dirpath):
            continue
        if dirpath in children:
            continue
        parent = os.path.dirname(dirpath)
        if dirpath != root and (os.path.basename(dirpath) in KERAS_SPLITS and _keras_splits(parent)
                                or os.path.basename(dirpath) in _splits(parent)) and not _event_files(parent):
            found.add(parent)
        else:
            found.add(dirpath)
            children.update(_scalars_children(dirpath))
    return sorted(found)


@dataclass
class _File:
    path: str
    prefix: str  # "train/" or "validation/" for Keras runs
    offset: int = 0
    tags: list = field(default_factory=list)  # tag names; tag_ids index into it
    chunks: list = field(default_factory=list)  # (tag_ids, steps, walls, values) arrays
    read_since_save: int = 0
    saved_at: float = 0.0
    head: bytes = b""
    problem: str | None = None


class TBRunReader:
    """Incremental reader of one TensorBoard run; same surface as traindoc.reader.RunReader."""

    def __init__(self, path: str, use_cache: bool = True):
        if not os.path.isdir(path):
            raise RunFormatError(f"not a folder: {path}")
        if not is_tb_run(path):
            raise RunFormatError(f"no TensorBoard event files in {path}")
        self.path = path
        self.use_cache = use_cache
        self.splits = _splits(path) or _keras_splits(path)
        # Keras' callback writes train/ (and validation/); a test/ or eval/ folder is a TF2 loop's
        self.keras = bool(self.splits) and set(self.splits) <= set(KERAS_SPLITS)
        self.children = _scalars_children(path)
        self._files: dict[str, _File] = {}
        self.overrides, self.ignore, self.run_meta = load_overrides(path, os.path.dirname(os.path.normpath(path)))
        self._series: RunSeries | None = None

    # ---- reading --------------------------------------------------------------------
    def _paths(self):
        """(event file, how its tags are named): a split's files prefix theirs with the split;
        an add_scalars child's name its main tag's key ("@" + folder name)."""
        for s in self.splits:
            for f in _event_files(os.path.join(self.path, s)):
                yield f, s + "/"
        for child in self.children:
            for f in _event_files(child):
                yield f, "@" + child
        for f in _event_files(self.path):
            yield f, ""

    @staticmethod
    def _tag(st: "_File", tag: str) -> str:
        if st.prefix.startswith("@"):
            key = _scalars_child_key(st.prefix[1:], tag)
            return f"{tag}/{key}" if key else os.path.basename(st.prefix[1:]) + "/" + tag
        return st.prefix + tag

    def poll(self) -> int:
        """Read what was appended to any event file since the last poll; returns new points."""
        new = 0
        for path, prefix in self._paths():
            st = self._files.get(path)
            if st is None:
                st = self._files[path] = self._from_cache(path, prefix)
            new += self._read(st)
        if new:
            self._series = None
        return new

    def _read(self, st: _File) -> int:
        try:
            size = os.path.getsize(st.path)
            with open(st.path, "rb") as f:
                head = f.read(64)
                if size < st.offset or (st.head and head[:len(st.head)] != st.head):
                    st.offset, st.tags, st.chunks = 0, [], []  # the file was replaced: start over
                st.head = head
                f.seek(st.offset)
                data = f.read()
        except OSError as exc:
            st.problem = f"{self._rel(st.path)}: cannot read: {exc.strerror or exc}"
            return 0
        if not data:
            return 0
        chunk = read_scalars(data, 0, st.offset)
        st.offset = chunk.end
        st.problem = self._describe(st, chunk)
        if not chunk.values:
            return 0
        index = {t: i for i, t in enumerate(st.tags)}
        ids = np.fromiter((index.setdefault(t, len(index)) for t in chunk.tags), dtype=np.int32,
                          count=len(chunk.tags))
        st.tags = list(index)
        st.chunks.append((ids, np.asarray(chunk.steps, dtype=np.int64), np.asarray(chunk.walls, dtype=float),
                          np.asarray(chunk.values, dtype=float)))
        st.read_since_save += len(data)
        if st.read_since_save > (1 << 20) or time.time() - st.saved_at > 30:
            self._save_cache(st)
        return len(chunk.values)

    def _describe(self, st: _File, chunk) -> str | None:
        rel = self._rel(st.path)
        parts = []
        if chunk.corrupt_records:
            parts.append(f"{chunk.corrupt_records} corrupt record(s) skipped")
        if chunk.unreadable_from is not None:
            parts.append(f"unreadable from byte {chunk.unreadable_from} ({chunk.size - chunk.unreadable_from} bytes)")
        elif chunk.end < chunk.size and time.time() - os.path.getmtime(st.path) > LIVE_SECS:
            parts.append(f"the last {chunk.size - chunk.end} bytes are an incomplete record (the writer stopped)")
        return f"{rel}: " + "; ".join(parts) if parts else None

    def _rel(self, p: str) -> str:
        return os.path.relpath(p, self.path)

    # ---- cache ----------------------------------------------------------------------
    def _cache_path(self, path: str) -> str:
        key = hashlib.sha1(os.path.realpath(path).encode("utf-8", "surrogateescape")).hexdigest()
        return os.path.join(paths.tb_cache_dir(), key + ".npz")

    def _from_cache(self, path: str, prefix: str) -> _File:
        """What an earlier read cached of `path`; an empty _File (read from the start, cache
        written again) where there is no cache or it cannot be used: truncated or garbage
        (BadZipFile, EOFError, zlib.error, ValueError), another version, missing or
        mismatched arrays. A cache only ever saves time: none of its failures is the run's."""
        st = _File(path, prefix)
        if not self.use_cache:
            return st
        try:
            with np.load(self._cache_path(path), allow_pickle=False) as z:
                info = json.loads(str(z["info"]))
                if not isinstance(info, dict) or info.get("version") != CACHE_VERSION:
                    return st
                offset, tags, head = int(info["offset"]), list(info["tags"]), bytes.fromhex(info["head"])
                arrays = tuple(np.asarray(z[k]) for k in ("ids", "steps", "walls", "values"))
            ids = arrays[0]
            if (offset < 0 or not all(isinstance(t, str) for t in tags) or any(a.ndim != 1 for a in arrays)
                    or len({len(a) for a in arrays}) != 1 or ids.dtype.kind not in "iu"
                    or any(a.dtype.kind not in "iuf" for a in arrays)
                    or (len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= len(tags)))):
                return st
        except Exception:  # noqa: BLE001 - whatever is wrong with a cache file, the event file is there
            return st
        st.offset, st.tags, st.head = offset, tags, head
        st.chunks = [(ids.astype(np.int32), arrays[1].astype(np.int64), arrays[2].astype(float),
                      arrays[3].astype(float))]
        st.saved_at = time.time()
        return st

    def _save_cache(self, st: _File) -> None:
        if not self.use_cache:
            return
        try:
            os.makedirs(paths.tb_cache_dir(), exist_ok=True)
            ids, steps, walls, values = self._arrays(st)
            target = self._cache_path(st.path)
            tmp = target + f".{os.getpid()}.tmp.npz"
            info = json.dumps({"version": CACHE_VERSION, "offset": st.offset, "tags": st.tags, "head": st.head.hex(),
                               "source": st.path})
            np.savez(tmp, ids=ids, steps=steps, walls=walls, values=values, info=np.array(info))
            os.replace(tmp, target)
            st.chunks = [(ids, steps, walls, values)]
            st.read_since_save, st.saved_at = 0, time.time()
        except OSError:
            pass  # a read-only home: no cache, still correct

    @staticmethod
    def _arrays(st: _File):
        if not st.chunks:
            return (np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
        if len(st.chunks) > 1:
            st.chunks = [tuple(np.concatenate([c[i] for c in st.chunks]) for i in range(4))]
        return st.chunks[0]

    # ---- results --------------------------------------------------------------------
    @property
    def problems(self) -> list[str]:
        """One line per event file that had unreadable parts."""
        return [f.problem for f in self._files.values() if f.problem]

    @property
    def records(self) -> int:
        """Scalar points read so far."""
        return sum(len(c[0]) for f in self._files.values() for c in f.chunks)

    @property
    def meta(self) -> dict:
        """Metadata in the shape of a traindoc run's meta.json."""
        mtimes = [os.path.getmtime(p) for p, _ in self._paths()]
        newest = max(mtimes) if mtimes else 0.0
        return {
            "schema_version": fmt.SCHEMA_VERSION, "name": os.path.basename(os.path.normpath(self.path)),
            "source": "tensorboard", "keras": self.keras,
            "status": fmt.STATUS_RUNNING if time.time() - newest < LIVE_SECS else fmt.STATUS_NO_END,
            "updated": newest, "start_time": min(mtimes) if mtimes else None, "config": {},
            "warnings": self.problems, "event_files": len(mtimes), **self.run_meta,
        }

    def raw(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """tag -> (steps, values, walls), in order of first appearance (Keras tags prefixed with their split)."""
        out: dict[str, list] = {}
        for st in self._files.values():
            ids, steps, walls, values = self._arrays(st)
            if not len(ids):
                continue
            order = np.argsort(ids, kind="stable")
            bounds = np.flatnonzero(np.diff(ids[order])) + 1
            groups = sorted(np.split(order, bounds), key=lambda g: g[0])  # first appearance in the file
            for grp in groups:
                tag = self._tag(st, st.tags[ids[grp[0]]])
                out.setdefault(tag, []).append((steps[grp], values[grp], walls[grp]))
        return {t: _newest_per_step(*(np.concatenate([p[i] for p in parts]) for i in range(3)))
                for t, parts in out.items()}

    def series(self) -> RunSeries:
        """The run as traindoc series (mapped names, windows for per-step series)."""
        if self._series is None:
            self._series = build_series(self.raw(), self.meta, self.path, self.keras, self.overrides, self.ignore)
        return self._series


def _newest_per_step(steps: np.ndarray, values: np.ndarray, walls: np.ndarray):
    """Points in logging order, keeping only those that no later point superseded: a step
    logged again replaces the old value, and a resumed run that went back to step s drops
    what the abandoned attempt logged at s and after (TensorBoard's purge of orphans)."""
    if len(steps) < 2:
        return steps, values, walls
    later_min = np.minimum.accumulate(steps[::-1])[::-1]  # min over i..end
    keep = np.append(steps[:-1] < later_min[1:], True)
    return steps[keep], values[keep], walls[keep]


def build_series(raw: dict, meta: dict, path: str, keras: bool, overrides=None, ignore=()) -> RunSeries:
    """Map tags to traindoc names and add rolling windows where the run logged per step."""
    mapping = map_tags(list(raw), keras=keras, overrides=overrides, ignore=ignore)
    if keras:
        raw = _keras_epochs_on_batch_axis(raw)
    data = {}
    sources = {}
    for tag, targets in mapping.items():
        steps, values, walls = raw[tag]
        order = np.argsort(steps, kind="stable")
        for target in targets:
            data[target] = (steps[order], values[order], walls[order])
            sources[target] = tag
    readings = _say_sources(sources, mapping)
    readings += sum_loss_parts(data, raw, mapping)
    readings += align_epochs(data)
    _add_windows(data)
    meta = {**meta, "readings": readings} if readings else meta
    return RunSeries(name=meta["name"], path=path, meta=meta, _data=data)


def _say_sources(sources: dict, mapping: dict) -> list[str]:
    """Which tag the validation series come from, where the run logged several candidates
    (several evaluation sets, a test and a validation split)."""
    out = []
    for target in (fmt.VAL_LOSS, fmt.VAL_ACC):
        if target not in sources:
            continue
        metric = target.split("/")[1]
        others = [t for t, m in mapping.items() if m and m[0].startswith(fmt.CUSTOM_PREFIX)
                  and _looks_held_out(t, metric)]
        if others:
            out.append(f"{target} is read from `{sources[target]}`; also logged, not judged: "
                       + ", ".join(f"`{t}`" for t in others[:5]))
    return out


def _looks_held_out(tag: str, metric: str) -> bool:
    """A tag named like another held-out set's loss or accuracy (eval/de_loss, test/acc)."""
    words = [w for w in tag.lower().replace("/", "_").replace("-", "_").split("_") if w]
    held = {"eval", "val", "valid", "validation", "test", "dev", "v"}
    names = {"loss": {"loss"}, "acc": {"acc", "accuracy", "top1"}}[metric]
    return bool(held & set(words)) and bool(names & set(words))


def sum_loss_parts(data: dict, raw: dict, mapping: dict) -> list[str]:
    """Where a run logged no loss for a split but two or more of its terms (YOLO's box, cls and
    dfl losses; a detector's rpn and roi losses), that split's loss is their sum at the steps
    where every term was logged: what the optimiser minimised, as the frameworks add them up.
    The terms stay custom scalars too. Changes `data` in place; returns a line per summed loss."""
    parts: dict[str, dict[str, str]] = {}
    for tag, targets in mapping.items():
        if targets and all(t.startswith(fmt.CUSTOM_PREFIX) for t in targets):
            found = loss_part(tag)
            if found:
                parts.setdefault(found[0], {}).setdefault(found[1], tag)
    out = []
    for split, target in (("train", fmt.LOSS_RAW), ("val", fmt.VAL_LOSS)):
        terms = parts.get(split, {})
        if len(terms) < 2 or target in data or (split == "train" and fmt.LOSS_EPOCH + "/mean" in data):
            continue
        tags = list(terms.values())
        per = []
        for tag in tags:
            steps, values, walls = raw[tag]
            order = np.argsort(steps, kind="stable")
            per.append(pd.Series(values[order], index=steps[order]).groupby(level=0).last())
        frame = pd.concat(per, axis=1, join="inner")
        if len(frame) < 2:
            continue
        total = frame.sum(axis=1, skipna=False)
        steps = total.index.to_numpy(dtype=np.int64)
        data[target] = (steps, total.to_numpy(dtype=float), np.full(len(steps), np.nan))
        out.append(f"{target} is the sum of the {len(tags)} loss terms logged for it: "
                   + " + ".join(f"`{t}`" for t in tags))
    return out


#: Series that a script may log once per epoch, at the epoch's number instead of the train step.
_PER_EPOCH = (fmt.VAL_LOSS, fmt.VAL_ACC, fmt.TRAIN_ACC_EPOCH, fmt.LOSS_EPOCH + "/mean")


def align_epochs(data: dict) -> list[str]:
    """Put series logged per epoch *at the epoch's number* on the train loss's step axis.

    A loop that logs the train loss per step (thousands of points) and validation once per epoch
    with `step = epoch` puts every validation point in the first few dozen steps. A series is
    taken for epoch-numbered when its steps are consecutive small numbers (0..E-1 or 1..E, at
    most one point each) and the per-step train loss runs at least 4x further. Epoch e is then
    placed where it ended: from the run's own epoch series where it has one (the last step
    before the epoch counter passed e), else at e/E of the run's last step. Changes `data` in
    place; returns a line per aligned series, for the page to say so."""
    if fmt.LOSS_RAW not in data or not len(data[fmt.LOSS_RAW][0]):
        return []
    train_steps = data[fmt.LOSS_RAW][0]
    last = int(train_steps.max())
    epoch = data.get(fmt.EPOCH)
    out = []
    for key in _PER_EPOCH:
        if key not in data:
            continue
        steps, values, walls = data[key]
        if not _epoch_numbered(steps, last, len(train_steps)):
            continue
        one_based = int(steps.min()) >= 1
        ends = steps.astype(float) + (0 if one_based else 1)  # epochs completed when it was logged
        placed = _by_epoch_series(ends, epoch, last) if epoch is not None else None
        how = "the run's epoch counter"
        if placed is None:
            total = float(steps.max()) + (0 if one_based else 1)
            placed = np.round(ends / total * last).astype(np.int64)
            how = f"the ratio of lengths ({last} steps / {int(total)} epochs)"
        data[key] = (placed, values, walls)
        out.append(f"{key} was logged per epoch at the epoch's number; placed at the step where each "
                   f"epoch ended, by {how}")
    return out


def _epoch_numbered(steps: np.ndarray, last_train: int, n_train: int) -> bool:
    if len(steps) < 2 or n_train < 4 * len(steps):
        return False
    d = np.diff(np.sort(steps))
    top = int(steps.max())
    return bool((d == 1).all() and int(steps.min()) in (0, 1) and last_train >= 4 * (top + 1))


def _by_epoch_series(ends: np.ndarray, epoch, last: int):
    """Steps where the epoch counter (step -> epochs done, fractional or whole) reached each of
    `ends`; None when the counter does not cover them (it stops early, or never moves)."""
    e_steps, e_vals, _ = epoch
    order = np.argsort(e_steps, kind="stable")
    e_steps, e_vals = e_steps[order], e_vals[order].astype(float)
    if len(e_vals) < 2 or not np.isfinite(e_vals).all() or e_vals[-1] <= e_vals[0]:
        return None
    whole = np.allclose(e_vals, np.round(e_vals))
    out = []
    for e in ends:
        if whole:  # an integer counter logged during each epoch: epoch e ends at its last step
            k = np.flatnonzero(np.round(e_vals) == e - 1 + (1 if e_vals.min() >= 1 else 0))
            if not len(k):
                return None
            out.append(int(e_steps[k[-1]]))
        else:  # fractional epochs (the Hugging Face Trainer): the first step at or past e
            k = np.flatnonzero(e_vals >= e - 1e-6)
            if len(k):
                out.append(int(e_steps[k[0]]))
            elif e_vals[-1] >= e - 1:  # the last epoch, ended after the counter's last log
                out.append(last)
            else:
                return None
    return np.asarray(out, dtype=np.int64)


def _keras_epochs_on_batch_axis(raw: dict) -> dict:
    """Keras logs epoch_* at the epoch index and batch_* at the batch: put both on batches."""
    batch = [v[0] for t, v in raw.items() if "/batch_" in t]
    epoch = [v[0] for t, v in raw.items() if "/epoch_" in t]
    if not batch or not epoch:
        return raw
    n_epochs = int(max(e.max() for e in epoch)) + 1
    per_epoch = max(1, round((max(int(b.max()) for b in batch) + 1) / n_epochs))
    return {t: ((v[0] + 1) * per_epoch, v[1], v[2]) if "/epoch_" in t else v for t, v in raw.items()}


def _add_windows(data: dict) -> None:
    """Per-step train loss/accuracy get window mean, variance and count, as the collector writes."""
    if fmt.LOSS_RAW in data and fmt.LOSS_WINDOW + "/mean" not in data:
        steps, values, walls = data[fmt.LOSS_RAW]
        w = max(1, len(steps) // 120)
        if w > 1:
            last, stat = window_stats(values, w)
            for k, arr in stat.items():
                data[f"{fmt.LOSS_WINDOW}/{k}"] = (steps[last], arr, walls[last])
    if fmt.TRAIN_ACC in data and len(data[fmt.TRAIN_ACC][0]) > 240:
        steps, values, walls = data[fmt.TRAIN_ACC]
        w = len(steps) // 120
        last, stat = window_stats(values, w)
        data[fmt.TRAIN_ACC] = (steps[last], stat["mean"], walls[last])


def read_tb_run(path: str) -> RunSeries:
    """Load a whole TensorBoard run."""
    r = TBRunReader(path)
    r.poll()
    return r.series()
