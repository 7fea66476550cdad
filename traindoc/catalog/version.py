"""Which code wrote a catalog row: the row layout (SCHEMA) and a hash of the sources that decide
what a row holds (readers, rules). New code, new rows."""

from __future__ import annotations

import hashlib
import os

SCHEMA = 2

_CODE_VERSION: str | None = None


def code_version() -> str:
    """A hash of the sources that decide what a row holds (readers, rules): new code, new rows."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # traindoc/
        h = hashlib.sha1(f"schema {SCHEMA}".encode())
        for sub in ("", "rules", "tb", "catalog"):
            folder = os.path.join(here, sub)
            for name in sorted(os.listdir(folder)):
                if name.endswith(".py"):
                    with open(os.path.join(folder, name), "rb") as f:
                        h.update(name.encode() + f.read())
        _CODE_VERSION = h.hexdigest()[:16]
    return _CODE_VERSION
