"""The run's metadata at start: who, where, what."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time

import torch

from traindoc import format as fmt
from traindoc.jsonsafe import plain


def initial_meta(name: str, config, model, optimizers, num_classes, log_every: int,
                 ratio_every: int, world_size: int) -> dict:
    """Metadata written to meta.json when the run starts."""
    params = _model_params(model)
    device = str(params[0].device) if params else "cpu"
    return {
        "schema_version": fmt.SCHEMA_VERSION,
        "name": name,
        "status": fmt.STATUS_RUNNING,
        "config": plain(dict(config or {})),  # exotic values as their text
        "start_time": time.time(),
        "end_time": None,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "python": platform.python_version(),
        "torch_version": torch.__version__,
        "device": device,
        "world_size": world_size,
        "model_class": type(model).__name__ if model is not None else None,
        "num_params": int(sum(p.numel() for p in params)),
        "num_classes": num_classes,
        "optimizers": [type(o).__name__ for o in optimizers],
        # what the loss curves depend on beside the LR, for telling sweeps apart
        "weight_decay": [float(g.get("weight_decay") or 0.0) for o in optimizers for g in o.param_groups],
        "log_every": log_every,
        "ratio_every": ratio_every,
        "git_commit": _git_commit(),
        "argv": list(sys.argv),
    }


def _model_params(model) -> list:
    models = model if isinstance(model, (list, tuple)) else ([model] if model is not None else [])
    seen, out = set(), []
    for m in models:
        for p in m.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def _git_commit() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=2)
        return r.stdout.strip() or None if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None
