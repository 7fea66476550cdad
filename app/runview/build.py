"""What the run page shows, computed on the server: facts, findings and plotly figures of one
run, kept per run and view (these imports take about a second: the page server loads them in
the background at start, see warm_up)."""

from __future__ import annotations

import hashlib
import json
import os
import math
import threading
import time
from collections import OrderedDict
from functools import partial

from traindoc import format as fmt
from traindoc.jsonsafe import plain
from traindoc.rules.spikes import describe, loss_spikes
from traindoc.tb.mapping import MEANINGS, save_overrides

from .. import charts
from ..thin import window
from traindoc.provider import provider_for
from traindoc.status import STALE_SECS, last_alive, status_of

from ..data import Loaded, discover, not_diagnosed_text, root_dir, shared_store, with_siblings

MAX_CUSTOM = 24  # custom scalars drawn on one page
MAX_PICK = 2000  # runs listed when no run is named
MAX_TAGS = 40  # series offered in the mapping form
#: Figures kept ready, by run and view; a figure set of a 1,000,000-point run is ~1 MB of JSON.
FIGURE_CACHE_SIZE = 32

_cache: OrderedDict[str, str] = OrderedDict()
#: (root, run, view settings) -> (fingerprint of the files before the read, ETag, valid until)
_built: OrderedDict[tuple, tuple] = OrderedDict()
_cache_lock = threading.Lock()


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def _findings(findings: list, meta: dict | None = None) -> list[dict]:
    """The findings as the page shows them; `raised`: when live diagnosis inside training first
    raised that rule (meta.json's live_findings), if it did."""
    first: dict = {}
    for r in (meta or {}).get("live_findings") or []:
        if isinstance(r, dict) and r.get("rule") not in first:
            first[r.get("rule")] = r
    out = []
    for f in findings:
        d = {"rule": f.rule, "severity": f.severity, "steps": [int(f.steps[0]), int(f.steps[1])],
             "advice": f.advice, "evidence": ", ".join(f"{k} = {_fmt(v)}" for k, v in f.evidence.items())}
        if f.rule in first:
            d["raised"] = {"step": first[f.rule].get("raised_at_step"), "at": first[f.rule].get("raised_at")}
        out.append(d)
    return out


def _figure_key(ld: Loaded, status: str, smoothing: float, log_y: bool, steps) -> str:
    """What the figures depend on: the run's data (the store makes a new Loaded, with a version
    no other has, only when new bytes were read or the run was read afresh), the findings drawn
    on them, and the view settings (smoothing, scale, the steps shown)."""
    marks = [(f.rule, f.severity, tuple(f.steps)) for f in ld.findings or []]
    raw = repr((ld.version, status, round(smoothing, 2), log_y, steps, marks))
    return hashlib.sha1(raw.encode()).hexdigest()


def _figures_json(ld: Loaded, key: str, smoothing: float, log_y: bool, steps) -> str:
    """JSON of {charts: [[id, figure]], custom: [[tag, figure]]}, built once per key. With
    `steps` (first, last), every chart holds only that range, thinned as finely as a full view."""
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    run, findings = ld.series, ld.findings or []
    with window(steps):
        built, custom = charts.run_figures(run, findings, smoothing, log_y, MAX_CUSTOM)
    parts = [f'["{k}",{fig.to_json()}]' for k, fig in built]
    custom = [f"[{json.dumps(k)},{fig.to_json()}]" for k, fig in custom]
    text = '{"charts":[' + ",".join(parts) + '],"custom":[' + ",".join(custom) + "]}"
    with _cache_lock:
        _cache[key] = text
        while len(_cache) > FIGURE_CACHE_SIZE:
            _cache.popitem(last=False)
    return text


def view(name: str | None, smoothing: float = 0.6, log_y: bool = False,
         steps: tuple[float, float] | None = None) -> tuple[str, str]:
    """(JSON of everything the page shows for run `name`, its ETag); `steps`: the step range
    the charts are zoomed to (None: the whole run). `name` is only ever looked up among the
    runs found under ROOT, never joined onto a path."""
    root = root_dir()
    if not name:
        names = sorted(discover(root))
        out = {"state": "pick", "runs": names[:MAX_PICK], "more": max(0, len(names) - MAX_PICK)}
        return _done(out)
    provider = provider_for(root)
    path = provider.path_of(name)
    if path is None:
        return _done({"state": "missing", "name": name})
    before = provider.fingerprint(name)  # taken before reading: newer bytes only make it differ sooner
    ld = with_siblings(root, name, path)
    if ld.error:
        return _done({"state": "error", "name": name, "error": ld.error})
    run = ld.series
    meta = run.meta
    status = status_of(meta)
    spikes = loss_spikes(run)
    source = meta.get("source", "traindoc")
    out = {
        "state": "run", "name": name, "status": status, "live": status == "live", "step": run.last_step,
        "records": ld.records, "updated": meta.get("updated"),
        "device": meta.get("device"), "torch": meta.get("torch_version"), "tensorboard": source == "tensorboard",
        "problems": list(ld.problems or []), "diagnosed": ld.diagnosed,
        "readings": [str(r) for r in meta.get("readings") or []],
        "not_diagnosed": None if ld.diagnosed else not_diagnosed_text(ld),
        "skipped": [s["rule"] for s in ld.skipped or []], "findings": _findings(ld.findings or [], meta),
        "spikes": [s.to_dict() for s in spikes], "spikes_text": describe(spikes),
        "has_series": bool(run.keys), "smoothing": smoothing, "log_y": log_y,
        "steps": list(steps) if steps else None,
        "meta": meta,
        "mappable": ([k[len(fmt.CUSTOM_PREFIX):] for k in run.with_prefix(fmt.CUSTOM_PREFIX)][:MAX_TAGS]
                     if source != "traindoc" else []),
        "meanings": list(MEANINGS),
    }
    key = _figure_key(ld, status, smoothing, log_y, steps)
    figures = _figures_json(ld, key, smoothing, log_y, steps)
    light = json.dumps(jsonable(out), allow_nan=False)
    etag = hashlib.sha1((key + light).encode()).hexdigest()[:20]
    until = last_alive(meta) + STALE_SECS if status == "live" else math.inf
    with _cache_lock:
        _built[(root, name, smoothing, log_y, steps)] = (before, etag, until)
        while len(_built) > FIGURE_CACHE_SIZE * 8:
            _built.popitem(last=False)
    return light[:-1] + ',"figures":' + figures + "}", etag


def unchanged(name: str | None, smoothing: float, log_y: bool, steps, etag: str) -> bool:
    """True when `etag` is the view `view` built last for these settings and nothing it showed
    can have changed since: the run's and its siblings' files have the same sizes and mtimes
    (`RunProvider.fingerprint`, no read, no walk of ROOT) and a live run is still inside its live
    window. Lets a polling tab get its 304 without the view being rebuilt."""
    if not name:
        return False
    root = root_dir()
    with _cache_lock:
        got = _built.get((root, name, smoothing, log_y, steps))
    if got is None or got[1] != etag or time.time() >= got[2]:
        return False
    return provider_for(root).fingerprint(name) == got[0]


jsonable = partial(plain, strict=True)  # strict JSON: the browser parses it


def _done(out: dict) -> tuple[str, str]:
    text = json.dumps(out, allow_nan=False)
    return text, hashlib.sha1(text.encode()).hexdigest()[:20]


def save_mapping(name: str, chosen: dict, ignored: list) -> str:
    """Give tags of a run traindoc did not write a meaning (or ignore them); the run is read
    and diagnosed again on its next view. Returns the override file's name. Only tags the run
    has and meanings traindoc knows are accepted."""
    path = provider_for(root_dir()).path_of(name)
    if path is None:
        raise ValueError(f"no run named {name!r}")
    ld = shared_store().load(name, path)
    if ld.error:
        raise ValueError(ld.error)
    tags = {k[len(fmt.CUSTOM_PREFIX):] for k in ld.series.with_prefix(fmt.CUSTOM_PREFIX)}
    if not isinstance(chosen, dict) or not isinstance(ignored, list):
        raise ValueError("expected {map: {tag: meaning}, ignore: [tag]}")
    bad = [t for t in [*chosen, *ignored] if t not in tags] + [m for m in chosen.values() if m not in MEANINGS]
    if bad:
        raise ValueError(f"unknown tags or meanings: {', '.join(map(str, bad[:5]))}")
    if not chosen and not ignored:
        raise ValueError("nothing chosen")
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    saved = save_overrides(folder, {t: MEANINGS[m] for t, m in chosen.items()}, ignored)
    shared_store().forget(path)
    return os.path.basename(saved)


def rehearse() -> None:
    """Diagnose and draw a small made-up run, as a first view would, and throw it away: the
    rules' and plotly's first-use costs (validators built lazily, first calls into pandas) are
    paid here, at server start, instead of by the first page opened."""
    import numpy as np
    import pandas as pd

    from traindoc.rules import diagnose_run
    from traindoc.series import RunSeries

    steps = np.arange(1, 301) * 10
    fall = 0.5 + 2.0 * np.exp(-steps / 800.0)
    keys = {f"{fmt.LOSS_WINDOW}/mean": fall, f"{fmt.LOSS_WINDOW}/var": fall * 0.01,
            f"{fmt.LOSS_WINDOW}/min": fall * 0.9, f"{fmt.LOSS_WINDOW}/max": fall * 1.1,
            f"{fmt.LOSS_WINDOW}/count": np.full(len(steps), 10.0), fmt.LOSS_FIRST: fall[:1],
            fmt.TRAIN_ACC: 1 - fall / 3, fmt.VAL_LOSS: fall * 1.05, fmt.VAL_ACC: 1 - fall / 2.9,
            fmt.LR_PREFIX + "pg0": np.where(steps < 2000, 0.1, 0.01),
            fmt.RATIO_PREFIX + "layer.weight": np.full(len(steps), 1e-3), fmt.RATIO_GLOBAL: np.full(len(steps), 1e-3)}
    run = RunSeries.from_dict("rehearsal", {k: pd.Series(v, index=steps[:len(v)]) for k, v in keys.items()},
                              {"source": "traindoc", "status": fmt.STATUS_FINISHED})
    findings = diagnose_run(run).findings
    loss_spikes(run)
    built, custom = charts.run_figures(run, findings, 0.6, False, MAX_CUSTOM)
    for _, fig in built + custom:
        fig.to_json()
