"""One run's catalog row: read and diagnosed alone, summarised (status, best figures, config,
its own findings, what could not be judged) with the small digest that sibling judgements need."""

from __future__ import annotations

import os

from .. import format as fmt
from ..discovery import load
from ..rules import Finding, diagnose_run, series_found, together
from ..series import RunFormatError
from .changes import quick, signature

THIN = 64  # points kept per digest curve (bucket minima)


def is_text(s: str) -> bool:
    """True for a name SQLite can hold as text (no undecodable bytes from the file system)."""
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def shown(s: str) -> str:
    """A file-system name as text, its undecodable bytes escaped (for messages, never for reading)."""
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def finding(d: dict) -> Finding:
    """A finding from its row form (`Finding.to_dict`)."""
    return Finding(d["rule"], d["severity"], tuple(d["steps"]), d["evidence"], d["advice"])


def index_one(path: str) -> dict:
    """Read and diagnose one run (alone): the catalog row's content. Errors become the row's `error`."""
    sig, mtime = signature(path), quick(path)
    try:
        run, problems = load(path)
    except (RunFormatError, OSError, ValueError) as exc:
        return {"sig": sig, "quick": None, "error": str(exc)}
    d = diagnose_run(run)
    meta = run.meta
    va = run.get(fmt.VAL_ACC).dropna() if run.has(fmt.VAL_ACC) else None
    vl = run.get(fmt.VAL_LOSS).dropna() if run.has(fmt.VAL_LOSS) else None
    updated = meta.get("updated") or meta.get("end_time") or meta.get("start_time")
    if not updated:
        try:
            updated = os.stat(path).st_mtime
        except OSError:
            updated = None
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    return {
        "sig": sig, "quick": mtime if meta.get("source", "traindoc") == "traindoc" else None, "error": None,
        "status": meta.get("status") or "unknown", "updated": updated,
        "steps": run.last_step,
        "best_val_acc": float(va.max()) if va is not None and len(va) else None,
        "best_step": int(va.idxmax()) if va is not None and len(va) else None,
        "best_val_loss": float(vl.min()) if vl is not None and len(vl) else None,
        "config": config, "meta": {k: meta.get(k) for k in ("status", "updated", "start_time", "end_time", "source",
                                                             "device", "torch_version") if k in meta},
        "own": [f.to_dict() for f in d.findings], "skipped": d.skipped, "diagnosed": d.diagnosed,
        "spikes": [s.to_dict() for s in d.spikes],
        "found": series_found(run), "problems": list(problems), "name": run.name,
        "digest": together.digest(run, THIN),
    }




def short_config(config: dict, limit: int = 4) -> str:
    """The first few scalar hyperparameters as 'lr=0.1, batch_size=32' (the runs table shows and filters on it)."""
    items = [(k, v) for k, v in (config or {}).items() if isinstance(v, (int, float, str, bool))]
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in items[:limit])
