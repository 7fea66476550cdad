"""Shared pieces of the real-browser tests: chromium via Playwright, a real `traindoc serve`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def require_chromium() -> None:
    """Skip where there is no chromium, but never in CI: there the browser tests must run."""
    if shutil.which("chromium") or os.path.exists(CHROMIUM):
        return
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true but /usr/bin/chromium is missing: .ci/run installs it (apt-get install chromium)")
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, proc=None, timeout: float = 60.0, log_path: str | None = None) -> None:
    """Poll `url` until it answers 200. Raises RuntimeError (with the tail of `log_path`) when
    `timeout` seconds pass or the server process `proc` exits first."""
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.time() > deadline or (proc is not None and proc.poll() is not None):
            tail = open(log_path, errors="replace").read()[-2000:] if log_path and os.path.exists(log_path) else ""
            raise RuntimeError(f"{url} did not answer" + (f"; {log_path} ends with:\n{tail}" if log_path else ""))
        time.sleep(0.1)


class Server:
    """`traindoc serve ROOT` in a subprocess, on a free loopback port."""

    def __init__(self, root: str, log_path: str, code: str = ROOT):
        """`code`: the folder traindoc is imported from (this checkout unless told otherwise: the
        benchmarks also serve an older install of it, side by side)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "traindoc.cli", "serve", root, "--headless", "--port", str(self.port)],
            cwd=code, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": code})
        try:
            wait_for_http(self.url + "/_stcore/health", self.proc, log_path=log_path)
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


_DRAWN = ("() => [document.querySelectorAll('.js-plotly-plot').length, document.querySelectorAll("
          "'.js-plotly-plot g.trace, .js-plotly-plot .heatmaplayer image, .js-plotly-plot canvas').length]")


def drawn_in(frame) -> tuple[int, int]:
    """(plotly charts, drawn traces) in one frame; (0, 0) for a frame that is navigating or gone."""
    try:
        return tuple(frame.evaluate(_DRAWN))
    except Exception:
        return 0, 0


def chart_counts(page) -> tuple[int, int]:
    """(plotly charts, drawn traces) over the page and its frames (live charts sit in a component frame)."""
    counts = [drawn_in(f) for f in page.frames]
    return sum(c for c, _ in counts), sum(t for _, t in counts)


def wait_for_charts(page, count: int, timeout_ms: int = 30000) -> None:
    """Wait until `count` plotly charts have drawn their traces (polled on a timer: live pages
    keep the main thread busy, so animation-frame polling would starve)."""
    deadline = time.time() + timeout_ms / 1000
    while True:
        charts, traces = chart_counts(page)
        if charts >= count and traces > 0:
            return
        if time.time() > deadline:
            raise TimeoutError(f"{charts} charts, {traces} traces drawn; wanted {count} charts")
        time.sleep(0.1)
