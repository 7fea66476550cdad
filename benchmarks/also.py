"""`--also DIR`: time another traindoc install (an older commit, `pip install --no-deps --target
DIR`) beside this checkout, each in a fresh process that imports traindoc from its own folder."""

from __future__ import annotations

import os
import subprocess
import sys


def seconds_in(code: str, source: str, *args: str) -> float:
    """Run `python -c source args` with traindoc imported from `code`; the last word it prints is
    the seconds it measured."""
    out = subprocess.run([sys.executable, "-c", source, *args], cwd=code, env={**os.environ, "PYTHONPATH": code},
                         capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])
