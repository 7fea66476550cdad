"""Dashboard speed in headless chromium, with TensorBoard serving the same data for comparison.

Measures, in one run:
  1. traindoc: navigation -> every chart of a 1,000,000-point run drawn (target <= 3 s),
     cold (first open after the server started: read + diagnose + draw) and warm;
  2. traindoc: a live point's latency, from the collector taking the value to the page
     showing it (target <= 3 s), with the collector's default 1 s flush;
  3. TensorBoard (`tensorboard --logdir`, default settings) on the same 1,000,000 points
     written as event files: server start -> first charts drawn, and a warm navigation.
usage: python benchmarks/app_speed.py [--points 1000000] [--skip-tensorboard]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.synth import series_for, write_run  # noqa: E402
from tests.browser import ROOT, Server, free_port, launch, wait_for_charts  # noqa: E402


def traindoc_open(page, url: str) -> float:
    t0 = time.perf_counter()
    page.goto(url)
    wait_for_charts(page, 4, timeout_ms=60000)
    return time.perf_counter() - t0


def live_latency(page, server: Server, root: str, samples: int = 8) -> list[float]:
    """Seconds from a loss window being taken (trainer's clock) to the page showing its step."""
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "train_script.py"), root, "live",
                             "1000000", "1.0", "0.02"], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": ROOT})
    walls: dict[int, float] = {}
    assert proc.stdout.readline().strip() == "started"

    def read():
        for line in proc.stdout:
            parts = line.split()
            if parts and parts[0] == "window":
                walls[int(parts[1])] = float(parts[2])
    threading.Thread(target=read, daemon=True).start()
    try:
        time.sleep(1.0)
        page.goto(server.url + "/run?run=live")
        wait_for_charts(page, 2)
        caption = page.get_by_text(re.compile(r"status live · step \d+"))
        caption.wait_for(timeout=20000)
        out, last = [], None
        deadline = time.time() + 60
        while len(out) < samples and time.time() < deadline:
            step = int(re.search(r"step (\d+)", caption.inner_text()).group(1))
            if step != last and last is not None and step in walls:
                out.append(time.time() - walls[step])
            last = step
            time.sleep(0.05)
        return out
    finally:
        proc.kill()
        proc.wait()


def write_tensorboard(logdir: str, n_points: int) -> int:
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(logdir)
    total = 0
    for key, (steps, values) in series_for(n_points).items():
        for s, v in zip(steps.tolist(), values.tolist()):
            w.add_scalar(key, v, s)
        total += len(steps)
    w.close()
    return total


def tensorboard_times(page, logdir: str) -> tuple[float, float]:
    """(server start -> first screenful of charts drawn, warm navigation -> drawn)."""
    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", logdir, "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/#timeseries"
    drawn = ("() => { const cards = document.querySelectorAll('card-view');"
             " const lines = document.querySelectorAll('line-chart canvas, line-chart svg path.line, "
             "line-chart svg path');"
             " return cards.length >= 4 && lines.length >= 4; }")
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        page.goto(url)
        while True:  # TensorBoard loads the event files in the background; reload until the tags are in
            try:
                page.wait_for_function(drawn, timeout=5000)
                break
            except Exception:
                if time.perf_counter() - t0 > 300:
                    raise
                page.reload()
        cold = time.perf_counter() - t0
        t1 = time.perf_counter()
        page.goto("about:blank")
        page.goto(url)
        page.wait_for_function(drawn, timeout=60000)
        return cold, time.perf_counter() - t1
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--skip-tensorboard", action="store_true")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        root = os.path.join(tmp, "root")
        n = write_run(os.path.join(root, "big"), args.points)
        browser = launch(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        t_start = time.perf_counter()
        server = Server(root, os.path.join(tmp, "serve.log"))
        try:
            page.goto(server.url + "/")  # a cold browser and a fresh server session, no run data yet
            page.get_by_role("heading", name="Runs").wait_for()
            ready = time.perf_counter() - t_start
            cold = traindoc_open(page, server.url + "/run?run=big")
            cold_total = time.perf_counter() - t_start
            warm = [traindoc_open(page, server.url + "/run?run=big") for _ in range(3)]
            lat = live_latency(page, server, root)
        finally:
            server.stop()
        print(f"points: {n}")
        print(f"traindoc  server start -> runs page shown: {ready:.2f} s")
        print(f"traindoc  first open of the run (read + diagnose + draw): {cold:.2f} s   "
              f"server start -> run drawn: {cold_total:.2f} s")
        print(f"traindoc  navigation -> all charts drawn, warm (median of 3): {statistics.median(warm):.2f} s"
              "   (target <= 3 s)")
        if lat:
            print(f"traindoc  live point latency: median {statistics.median(lat):.2f} s, max {max(lat):.2f} s "
                  f"over {len(lat)} points   (target <= 3 s)")
        if not args.skip_tensorboard:
            logdir = os.path.join(tmp, "tb")
            t0 = time.perf_counter()
            write_tensorboard(logdir, args.points)
            print(f"tensorboard event files written in {time.perf_counter() - t0:.1f} s (not timed below)")
            tb_cold, tb_warm = tensorboard_times(page, logdir)
            print(f"tensorboard server start -> first charts drawn: {tb_cold:.2f} s   "
                  f"warm navigation -> drawn: {tb_warm:.2f} s")
            print(f"ratio server start -> drawn, tensorboard / traindoc = {tb_cold / cold_total:.2f}")
            print(f"ratio warm navigation, tensorboard / traindoc = {tb_warm / statistics.median(warm):.2f}")
        browser.close()


if __name__ == "__main__":
    main()
