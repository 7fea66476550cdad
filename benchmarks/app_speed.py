"""Dashboard speed in headless chromium, with TensorBoard serving the same data for comparison.

Measures, in one run, with an empty cache folder:
  1. traindoc: server start (`traindoc serve`) -> every chart of a 1,000,000-point run drawn,
     going straight to the run page as the TensorBoard figure goes straight to its charts; each
     cold start in a fresh browser, with an empty cache, taking turns with TensorBoard's
     (median of --cold starts of each);
  2. traindoc: a warm navigation to that run page -> every chart drawn (target <= 1 s), with
     where the time went in the browser (response, plotly.js + script, drawing) and on the
     server (read + diagnose + figures on a first view, a view of an unchanged run);
  3. traindoc: a live point's latency, from the collector taking the value to the page
     showing it (target <= 3 s), with the collector's default 1 s flush;
  4. the baseline of the run page's design: a Streamlit page (as the run page was until this
     wave) showing the same four figures, built beforehand, so it reads nothing: warm navigation;
  5. TensorBoard (`tensorboard --logdir`, default settings) on the same 1,000,000 points
     written as event files: server start -> first charts drawn (each in a fresh browser, as
     traindoc's), and a warm navigation.
Target: TensorBoard / traindoc >= 2 on both figures.
usage: python benchmarks/app_speed.py [--points 1000000] [--cold 3] [--skip-tensorboard] [--also DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.synth import series_for, write_run  # noqa: E402
from tests.browser import ROOT, Server, free_port, launch, wait_for_http  # noqa: E402


DRAWN = "(n) => document.querySelectorAll('.js-plotly-plot').length >= n && document.querySelectorAll('.js-plotly-plot g.trace').length > 0"
#: In-page timings of the last navigation, ms from its start.
PHASES = ("() => { const t = performance.getEntriesByType('navigation')[0]; const m = (n) => "
          "(performance.getEntriesByName(n)[0] || {}).startTime; return {response: t.responseEnd, "
          "script: m('traindoc-script'), drawn: m('traindoc-drawn')}; }")


def traindoc_open(page, url: str) -> float:
    t0 = time.perf_counter()
    page.goto(url)
    page.wait_for_function(DRAWN, arg=4, polling=20, timeout=120000)
    return time.perf_counter() - t0


def server_side(root: str, name: str) -> tuple[float, float]:
    """(first view of the run: read + diagnose + figures + JSON, a view with nothing changed),
    in this process, as the server's route computes them."""
    os.environ["TRAINDOC_ROOT"] = root
    from traindoc.app import runview

    t0 = time.perf_counter()
    first, _ = runview.view(name)
    t1 = time.perf_counter()
    again, _ = runview.view(name)
    assert first == again
    return t1 - t0, time.perf_counter() - t1


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
        page.wait_for_function(DRAWN, arg=2, polling=20, timeout=60000)
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


STREAMLIT_PAGE = """
import json, sys
import plotly.io as pio
import streamlit as st

st.set_page_config(layout="wide")
figs = st.cache_resource(lambda: [pio.from_json(json.dumps(f)) for _, f in json.load(open(sys.argv[1]))])()
cols = st.columns(2)
for i, fig in enumerate(figs):
    with cols[i % 2]:
        st.plotly_chart(fig, key=f"c{i}")
"""


def streamlit_baseline(page, tmp: str, root: str) -> float:
    """Warm navigation (median of 5) to a plain Streamlit page drawing the run page's four figures."""
    from traindoc.app.runview import build

    os.environ["TRAINDOC_ROOT"] = root
    figures = json.loads(build.view("big")[0])["figures"]["charts"]
    with open(os.path.join(tmp, "figs.json"), "w") as f:
        json.dump(figures, f)
    with open(os.path.join(tmp, "st_page.py"), "w") as f:
        f.write(STREAMLIT_PAGE)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", os.path.join(tmp, "st_page.py"),
                             "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
                             "--browser.gatherUsageStats", "false", "--", os.path.join(tmp, "figs.json")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for_http(url + "_stcore/health", proc)
        traindoc_open(page, url)
        return statistics.median(traindoc_open(page, url) for _ in range(5))
    finally:
        proc.terminate()
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


TB_DRAWN = ("() => { const cards = document.querySelectorAll('card-view');"
            " const lines = document.querySelectorAll('line-chart canvas, line-chart svg path.line, "
            "line-chart svg path');"
            " return cards.length >= 4 && lines.length >= 4; }")


class TensorBoard:
    """`tensorboard --logdir` (default settings) on a free loopback port; `t0` is its start."""

    def __init__(self, logdir: str):
        port = free_port()
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", logdir, "--host",
                                      "127.0.0.1", "--port", str(port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{port}/#timeseries"
        wait_for_http(f"http://127.0.0.1:{port}/", self.proc, timeout=300)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def tensorboard_cold(pw, logdir: str) -> float:
    """A fresh browser and a fresh TensorBoard: server start -> first screenful of charts drawn."""
    browser = launch(pw)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    tb = TensorBoard(logdir)
    try:
        page.goto(tb.url)
        while True:  # TensorBoard loads the event files in the background; reload until the tags are in
            try:
                page.wait_for_function(TB_DRAWN, timeout=5000)
                break
            except Exception:
                if time.perf_counter() - tb.t0 > 300:
                    raise
                page.reload()
        return time.perf_counter() - tb.t0
    finally:
        tb.stop()
        browser.close()


def tensorboard_warm(page, logdir: str) -> float:
    """Warm navigation -> first screenful drawn, median of 5, after one open."""
    tb = TensorBoard(logdir)
    try:
        page.goto(tb.url)
        page.wait_for_function(TB_DRAWN, timeout=300000)
        warm = []
        for _ in range(5):
            page.goto("about:blank")
            t1 = time.perf_counter()
            page.goto(tb.url)
            page.wait_for_function(TB_DRAWN, timeout=60000)
            warm.append(time.perf_counter() - t1)
        return statistics.median(warm)
    finally:
        tb.stop()


def traindoc_cold(pw, root: str, cache: str, log: str, code: str = ROOT) -> tuple[float, float, float, dict]:
    """A fresh browser, a fresh server and an empty cache: (server start -> answering, -> the run's
    charts all drawn, the first open alone, where the first open's time went in the browser).
    `code`: where traindoc is imported from (this checkout, or an older install: --also)."""
    os.environ["TRAINDOC_CACHE"] = cache
    browser = launch(pw)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    t_start = time.perf_counter()
    server = Server(root, log, code)
    try:
        up = time.perf_counter() - t_start
        first = traindoc_open(page, server.url + "/run?run=big")
        return up, time.perf_counter() - t_start, first, page.evaluate(PHASES)
    finally:
        server.stop()
        browser.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--cold", type=int, default=3, help="cold starts of each server (median reported)")
    ap.add_argument("--skip-tensorboard", action="store_true")
    ap.add_argument("--also", metavar="DIR", help="another traindoc, installed in DIR (pip install --no-deps "
                    "--target DIR, e.g. an older commit): its cold starts taken in the same turns")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        root = os.path.join(tmp, "root")
        n = write_run(os.path.join(root, "big"), args.points)
        print(f"points: {n}")
        logdir = os.path.join(tmp, "tb")
        if not args.skip_tensorboard:
            t0 = time.perf_counter()
            write_tensorboard(logdir, args.points)
            print(f"tensorboard event files written in {time.perf_counter() - t0:.1f} s (not timed below)")
        # Cold starts, each in a fresh browser with a fresh server (and, for traindoc, an empty
        # cache), the two servers taking turns so a slow spell of the machine hits both.
        colds, tb_colds, also = [], [], []
        for i in range(args.cold):
            colds.append(traindoc_cold(pw, root, os.path.join(tmp, f"cache-cold{i}"), os.path.join(tmp, "serve.log")))
            if args.also:
                also.append(traindoc_cold(pw, root, os.path.join(tmp, f"cache-also{i}"),
                                          os.path.join(tmp, "also.log"), os.path.abspath(args.also))[1])
            if not args.skip_tensorboard:
                tb_colds.append(tensorboard_cold(pw, logdir))
        up = statistics.median(c[0] for c in colds)
        cold_total = statistics.median(c[1] for c in colds)
        cold = statistics.median(c[2] for c in colds)
        cold_phases = {k: statistics.median(c[3][k] for c in colds) for k in colds[0][3]}

        os.environ["TRAINDOC_CACHE"] = os.path.join(tmp, "cache")  # nothing indexed or built before
        browser = launch(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        server = Server(root, os.path.join(tmp, "serve.log"))
        try:
            traindoc_open(page, server.url + "/run?run=big")
            t0 = time.perf_counter()
            page.goto(server.url + "/")
            page.get_by_role("heading", name="Runs").wait_for()
            runs_page = time.perf_counter() - t0
            warm, phases = [], []
            for _ in range(5):
                warm.append(traindoc_open(page, server.url + "/run?run=big"))
                phases.append(page.evaluate(PHASES))
            lat = live_latency(page, server, root)
        finally:
            server.stop()
        also_warm = None
        if args.also:  # the other install's warm navigation, in the same browser
            os.environ["TRAINDOC_CACHE"] = os.path.join(tmp, "cache-also-warm")
            other = Server(root, os.path.join(tmp, "also.log"), os.path.abspath(args.also))
            try:
                traindoc_open(page, other.url + "/run?run=big")
                also_warm = statistics.median(traindoc_open(page, other.url + "/run?run=big") for _ in range(5))
            finally:
                other.stop()
        first_view, unchanged_view = server_side(root, "big")
        baseline = streamlit_baseline(page, tmp, root)
        print(f"traindoc  cold starts (fresh browser, server and cache; median of {len(colds)}): "
              f"server start -> answering: {up:.2f} s; -> run drawn: {cold_total:.2f} s "
              f"(first open of the run: {cold:.2f} s); each: {', '.join(f'{c[1]:.2f}' for c in colds)} s")
        print(f"traindoc  first open, in the browser: page received {cold_phases['response'] / 1000:.3f} s, "
              f"plotly.js + script evaluated {(cold_phases['script'] - cold_phases['response']) / 1000:.3f} s, "
              f"charts drawn {(cold_phases['drawn'] - cold_phases['script']) / 1000:.3f} s")
        print(f"traindoc  runs page (Streamlit) after a run page: {runs_page:.2f} s")
        print(f"traindoc  navigation -> all charts drawn, warm (median of 5): {statistics.median(warm):.2f} s"
              "   (target <= 1 s)")
        med = {k: statistics.median(p[k] for p in phases) / 1000 for k in phases[0]}
        print(f"traindoc  warm navigation, in the browser (median): page received {med['response']:.3f} s, "
              f"plotly.js + script evaluated {med['script'] - med['response']:.3f} s, "
              f"charts drawn {med['drawn'] - med['script']:.3f} s")
        print(f"traindoc  server side: first view of the run (read + diagnose + figures + JSON) "
              f"{first_view:.3f} s, unchanged run {unchanged_view:.4f} s")
        print(f"baseline  the same four figures in a Streamlit page, nothing read: warm navigation -> drawn "
              f"{baseline:.2f} s; Streamlit page / traindoc = {baseline / statistics.median(warm):.2f}")
        if lat:
            print(f"traindoc  live point latency: median {statistics.median(lat):.2f} s, max {max(lat):.2f} s "
                  f"over {len(lat)} points   (target <= 3 s)")
        if not args.skip_tensorboard:
            tb_cold = statistics.median(tb_colds)
            tb_warm = tensorboard_warm(page, logdir)
            print(f"tensorboard cold starts (fresh browser and server; median of {len(tb_colds)}): server start -> "
                  f"first charts drawn: {tb_cold:.2f} s; each: {', '.join(f'{t:.2f}' for t in tb_colds)} s")
            print(f"tensorboard warm navigation -> drawn (median of 5): {tb_warm:.2f} s")
            pairs = [t / c[1] for t, c in zip(tb_colds, colds)]
            print(f"ratio server start -> drawn, tensorboard / traindoc = {tb_cold / cold_total:.2f} "
                  f"(the medians; turn by turn: {', '.join(f'{p:.2f}' for p in pairs)})")
            print(f"ratio warm navigation, tensorboard / traindoc = {tb_warm / statistics.median(warm):.2f}")
            if also_warm is not None:
                print(f"also      {args.also}: warm navigation -> drawn (median of 5): {also_warm:.2f} s; "
                      f"tensorboard / it = {tb_warm / also_warm:.2f}")
            if also:
                print(f"also      {args.also}: server start -> run drawn (median of {len(also)}): "
                      f"{statistics.median(also):.2f} s; each: {', '.join(f'{a:.2f}' for a in also)} s; "
                      f"tensorboard / it = {tb_cold / statistics.median(also):.2f} "
                      f"(turn by turn: {', '.join(f'{t / a:.2f}' for t, a in zip(tb_colds, also))})")
        browser.close()


if __name__ == "__main__":
    main()
