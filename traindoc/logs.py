"""Logs people already have, read as traindoc runs: Hugging Face `trainer_state.json`,
Lightning's CSVLogger `metrics.csv` (with `hparams.yaml`), a plain per-epoch CSV (Keras'
CSVLogger, or any table with an epoch or step column), and MLflow's file store
(`mlruns/<experiment>/<run>/metrics/*`, `params/*`).

Each becomes {name: (steps, values, walls)}, whose names are mapped onto traindoc's
series exactly as TensorBoard tags are (`tb.mapping`, with the same override file).
The files are small: a reader reads the whole file again when its size or mtime changed.
A file that is one of these formats but does not parse raises RunFormatError with one
line; nothing here ever returns a value it could not read.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import re
import time

import numpy as np

from . import format as fmt
from .series import RunFormatError, RunSeries

HF_STATE = "trainer_state.json"
PL_METRICS = "metrics.csv"
PL_HPARAMS = "hparams.yaml"
LIVE_SECS = fmt.LIVE_SECS
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
#: Columns that index a table rather than measure anything.
_INDEX_COLUMNS = ("step", "global_step", "epoch", "iteration", "iter", "batch")
_HF_SKIP = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "train_runtime",
            "train_samples_per_second", "train_steps_per_second", "total_flos", "train_loss", "step", "epoch")


# ---- which paths are runs ------------------------------------------------------------
def kind_of(path: str) -> str | None:
    """'hf', 'lightning', 'mlflow' or 'csv' for a run of one of these formats, else None."""
    if os.path.isfile(path):
        return "csv" if path.lower().endswith((".csv", ".log", ".tsv")) and _looks_like_table(path) else None
    if not os.path.isdir(path):
        return None
    if os.path.isfile(os.path.join(path, HF_STATE)) or _hf_checkpoints(path):
        return "hf"
    if os.path.isfile(os.path.join(path, PL_METRICS)):
        return "lightning"
    if os.path.isdir(os.path.join(path, "metrics")) and os.path.isfile(os.path.join(path, "meta.yaml")):
        return "mlflow"
    return None


def _hf_checkpoints(path: str) -> list[str]:
    """checkpoint-N folders of a Trainer output_dir that hold a trainer_state.json, newest last."""
    try:
        names = os.listdir(path)
    except OSError:
        return []
    found = [(int(m.group(1)), n) for n in names if (m := _CHECKPOINT.match(n))
             and os.path.isfile(os.path.join(path, n, HF_STATE))]
    return [os.path.join(path, n) for _, n in sorted(found)]


def _looks_like_table(path: str) -> bool:
    """A CSV whose header has an epoch or step column and at least one other column, or, with no
    such column, a loss column and a first row of numbers only (a hand-written history with one
    row per epoch, as `csv.writer` loops leave them)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head, first = f.readline(), f.readline()
    except OSError:
        return False
    cols = [c.strip().lower() for c in re.split(r"[,\t]", head)]
    if len(cols) >= 2 and any(c in _INDEX_COLUMNS for c in cols):
        return True
    return _row_numbered(cols, [c.strip() for c in re.split(r"[,\t]", first)])


def _row_numbered(cols: list[str], first: list[str]) -> bool:
    """A header with a loss column and no index column, over a row of as many numbers."""
    return (len(cols) >= 2 and any("loss" in c for c in cols) and len(first) == len(cols)
            and all(_number(v) is not None for v in first))


# ---- parsing -------------------------------------------------------------------------
def _points(rows: list[tuple[int, float, str, float]]) -> dict:
    """[(step, wall, name, value)] -> {name: (steps, values, walls)}, in first-seen order."""
    out: dict[str, list] = {}
    for step, wall, name, value in rows:
        out.setdefault(name, []).append((step, value, wall))
    return {k: (np.array([p[0] for p in v], dtype=np.int64), np.array([p[1] for p in v], dtype=float),
                np.array([p[2] for p in v], dtype=float)) for k, v in out.items()}


def _number(text) -> float | None:
    if isinstance(text, bool) or text is None:
        return None
    if isinstance(text, (int, float)):
        return float(text)
    try:
        return float(str(text).strip())
    except ValueError:
        return None


def read_hf(path: str) -> tuple[dict, dict]:
    """trainer_state.json (of the folder, or of its newest checkpoint-N): its log_history."""
    state_path = os.path.join(path, HF_STATE)
    if not os.path.isfile(state_path):
        state_path = os.path.join(_hf_checkpoints(path)[-1], HF_STATE)
    try:
        with open(state_path, encoding="utf-8") as f:
            state = json.load(f)
        history = state["log_history"]
        if not isinstance(history, list):
            raise TypeError("log_history is not a list")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunFormatError(f"{state_path}: not a readable trainer_state.json ({exc})") from None
    rows = []
    for entry in history:
        if not isinstance(entry, dict) or _number(entry.get("step")) is None:
            continue
        step = int(entry["step"])
        for k, v in entry.items():
            x = _number(v)
            if x is None or k in _HF_SKIP:
                continue
            if k.startswith("eval_"):
                name = "eval/" + k[5:]
            elif k == "learning_rate":
                name = "train/learning_rate"
            else:
                name = "train/" + k
            rows.append((step, float("nan"), name, x))
        if _number(entry.get("epoch")) is not None and "loss" in entry:
            rows.append((step, float("nan"), "train/epoch", float(entry["epoch"])))
    config = {k: state[k] for k in ("train_batch_size", "num_train_epochs", "max_steps", "logging_steps",
                                    "eval_steps", "save_steps") if isinstance(state.get(k), (int, float))}
    # the Trainer logs its run time (train_runtime) once, when train() returns
    ended = any(isinstance(e, dict) and "train_runtime" in e for e in history)
    return _points(rows), {"config": config, "source_file": os.path.relpath(state_path, path), "ended": ended}


def _read_table(path: str) -> list[dict]:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise RunFormatError(f"{path}: unreadable ({exc})") from None
    dialect = "excel-tab" if "\t" in text.split("\n", 1)[0] else "excel"
    try:
        return list(csv.DictReader(io.StringIO(text), dialect=dialect))
    except csv.Error as exc:
        raise RunFormatError(f"{path}: not a readable CSV ({exc})") from None


def read_table(path: str) -> tuple[dict, dict]:
    """A CSV with one row per step or epoch (Lightning's metrics.csv, Keras' CSVLogger, ...).
    The step is the `step` column where there is one, else the epoch (counted from 1)."""
    rows = _read_table(path)
    if not rows:
        return {}, {}
    columns = [c for c in rows[0] if c is not None]
    lower = {c.strip().lower(): c for c in columns}
    step_col = next((lower[c] for c in _INDEX_COLUMNS if c != "epoch" and c in lower), None)
    epoch_col = lower.get("epoch")
    by_row = step_col is None and epoch_col is None
    if by_row and not _row_numbered(list(lower), [str(v) for v in rows[0].values()]):
        raise RunFormatError(f"{path}: no step or epoch column among {columns[:8]}")
    points = []
    for n, row in enumerate(rows, 1):
        if by_row:
            step = n  # one row per epoch, counted from 1
        elif step_col is not None:
            step = _number(row.get(step_col))
        else:
            epoch = _number(row.get(epoch_col))
            step = None if epoch is None else epoch + 1  # Keras counts epochs from 0
        if step is None:
            continue
        for c in columns:
            if c == step_col or (c == epoch_col and step_col is None):
                continue  # the index itself
            x = _number(row.get(c))
            if x is not None:
                points.append((int(step), float("nan"), c.strip(), x))
    return _points(points), {}


def read_hparams(path: str) -> dict:
    """Lightning's hparams.yaml as a flat config: PyYAML where installed (safe_load: a tag such
    as !!python/object is refused, never run), else `key: value` lines. Raises ValueError, with
    one line saying why, for a file that cannot be read as YAML."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return {}
    try:
        import yaml

        data = yaml.safe_load(text)
        return {str(k): v for k, v in data.items() if isinstance(v, (int, float, str, bool))} \
            if isinstance(data, dict) else {}
    except ImportError:
        out = {}
        for line in text.splitlines():
            m = re.match(r"^([A-Za-z_][\w.]*):\s*(.+?)\s*$", line)
            if m:
                x = _number(m.group(2))
                out[m.group(1)] = x if x is not None else m.group(2).strip("'\"")
        return out
    except Exception as exc:  # noqa: BLE001 - yaml's errors have no common base worth naming
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{os.path.basename(path)}: not read as YAML ({first}); hyperparameters left out") from None


def read_mlflow(path: str) -> tuple[dict, dict]:
    """One run of MLflow's file store: metrics/<name> lines "timestamp value step", params/<name>."""
    rows = []
    metrics_dir = os.path.join(path, "metrics")
    for file in sorted(glob.glob(os.path.join(metrics_dir, "**", "*"), recursive=True)):
        if not os.path.isfile(file):
            continue
        name = os.path.relpath(file, metrics_dir).replace(os.sep, "/")
        try:
            with open(file, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise RunFormatError(f"{file}: unreadable MLflow metric ({exc})") from None
        for line in lines:
            parts = line.split()
            if len(parts) < 2:
                continue
            ts, value = _number(parts[0]), _number(parts[1])
            step = _number(parts[2]) if len(parts) > 2 else 0.0
            if ts is None or value is None or step is None:
                raise RunFormatError(f"{file}: not an MLflow metric line: {line[:60]!r}")
            rows.append((int(step), ts / 1000.0, name, value))
    config = {}
    for file in sorted(glob.glob(os.path.join(path, "params", "*"))):
        try:
            with open(file, encoding="utf-8") as f:
                text = f.read().strip()
        except (OSError, UnicodeDecodeError):
            continue
        x = _number(text)
        config[os.path.basename(file)] = x if x is not None else text
    name = None
    tag = os.path.join(path, "tags", "mlflow.runName")
    if os.path.isfile(tag):
        with open(tag, encoding="utf-8", errors="replace") as f:
            name = f.read().strip() or None
    return _points(rows), {"config": config, "run_name": name, "ended": _mlflow_ended(path)}


def _mlflow_ended(path: str) -> bool:
    """MLflow's meta.yaml gives an end_time (and status 3, FINISHED) once the run ended."""
    try:
        with open(os.path.join(path, "meta.yaml"), encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return False
    m = re.search(r"^end_time:\s*(\S+)", text, re.M)
    return bool(m) and m.group(1) not in ("null", "~", "None", "''")


# ---- the reader ----------------------------------------------------------------------
class LogRunReader:
    """A run in one of the formats above; the same surface as RunReader and TBRunReader."""

    def __init__(self, path: str):
        self.path = path
        self.kind = kind_of(path)
        if self.kind is None:
            raise RunFormatError(f"{path}: not a Hugging Face, Lightning, MLflow or CSV log")
        from .tb.mapping import load_overrides

        folder = path if os.path.isdir(path) else os.path.dirname(path)
        self.overrides, self.ignore, self.run_meta = load_overrides(folder, os.path.dirname(folder))
        self._sig = None
        self._raw: dict = {}
        self._extra: dict = {}
        self._series: RunSeries | None = None
        self.problems: list[str] = []

    def _files(self) -> list[str]:
        if self.kind == "csv":
            return [self.path]
        if self.kind == "hf":
            own = os.path.join(self.path, HF_STATE)
            return [own] if os.path.isfile(own) else [os.path.join(_hf_checkpoints(self.path)[-1], HF_STATE)]
        if self.kind == "lightning":
            return [os.path.join(self.path, PL_METRICS)]
        return sorted(glob.glob(os.path.join(self.path, "metrics", "**", "*"), recursive=True))

    def poll(self) -> int:
        """Read again if any file changed; returns the number of points now read (0: nothing new)."""
        sig = []
        for f in self._files():
            try:
                st = os.stat(f)
                sig.append((f, st.st_size, st.st_mtime_ns))
            except OSError:
                continue
        if sig == self._sig:
            return 0
        if self.kind == "hf":
            raw, extra = read_hf(self.path)
        elif self.kind == "mlflow":
            raw, extra = read_mlflow(self.path)
        else:
            raw, extra = read_table(self._files()[0])
            if self.kind == "lightning":
                try:
                    extra = {"config": read_hparams(os.path.join(self.path, PL_HPARAMS))}
                except ValueError as exc:  # the metrics are still read; the page and the CLI say why
                    extra = {"config": {}}
                    if str(exc) not in self.problems:
                        self.problems.append(str(exc))
        self._sig, self._raw, self._extra, self._series = sig, raw, extra, None
        return self.records

    @property
    def records(self) -> int:
        """Points read."""
        return sum(len(v[0]) for v in self._raw.values())

    @property
    def meta(self) -> dict:
        """Metadata in the shape of a traindoc run's meta.json."""
        mtimes = [s[2] / 1e9 for s in self._sig or []]
        newest = max(mtimes) if mtimes else 0.0
        name = self._extra.get("run_name") or os.path.basename(os.path.normpath(self.path))
        return {"schema_version": fmt.SCHEMA_VERSION, "name": name, "source": self.kind,
                "status": fmt.STATUS_RUNNING if time.time() - newest < LIVE_SECS else
                (fmt.STATUS_ENDED if self._extra.get("ended") else fmt.STATUS_NO_END),
                "updated": newest, "config": self._extra.get("config", {}), "warnings": self.problems,
                **self.run_meta}

    def series(self) -> RunSeries:
        """The run as traindoc series (mapped names, windows where a loss was logged per step)."""
        if self._series is None:
            from .tb.logdir import build_series

            self._series = build_series(self._raw, self.meta, self.path, False, self.overrides, self.ignore)
        return self._series
