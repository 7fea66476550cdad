"""The one way traindoc turns values into JSON: configs, findings' evidence, catalog rows and
page payloads hold numpy numbers, tuples, sets, tensors of one value and NaN. Below everything
else: it imports nothing of traindoc's (the collector uses it too)."""

from __future__ import annotations

import json
import math
import numbers


def plain(v, strict: bool = False):
    """`v` as JSON data: dict keys as text, tuples and sets as lists, numpy numbers and one-value
    tensors as Python numbers, anything else unknown as its text. `strict`: NaN and infinities
    as text too (strict JSON, what a browser parses); otherwise kept (Python's json writes them)."""
    if isinstance(v, dict):
        return {str(k): plain(x, strict) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [plain(x, strict) for x in (sorted(v, key=repr) if isinstance(v, (set, frozenset)) else v)]
    if isinstance(v, (bool, str)) or v is None:
        return v
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        v = float(v)
        return str(v) if strict and not math.isfinite(v) else v
    item = getattr(v, "item", None)
    if callable(item) and (getattr(v, "size", None) == 1 or _one(v)):
        try:
            return plain(item(), strict)
        except (TypeError, ValueError, RuntimeError):
            pass
    return str(v)


def _one(v) -> bool:
    """A one-value tensor or array (`numel()` of 1)."""
    numel = getattr(v, "numel", None)
    try:
        return callable(numel) and numel() == 1
    except Exception:  # noqa: BLE001 - an exotic object: not a one-value tensor
        return False


def dumps(v, strict: bool = False, **kwargs) -> str:
    """`json.dumps` of `plain(v, strict)`."""
    return json.dumps(plain(v, strict), allow_nan=not strict, **kwargs)
