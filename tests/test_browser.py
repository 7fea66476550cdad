"""The dashboard in Debian's chromium, driven by Playwright, against a real `traindoc serve`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from urllib.parse import quote, urlparse

import pytest

from tests.browser import ROOT, Server, launch, require_chromium, wait_for_charts

pytestmark = pytest.mark.browser
SAMPLES = os.path.join(ROOT, "sample_runs")
XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def pw():
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    for name in ("overfit-mlp-adam", "healthy-mlp-sgd", "early-decay-mlp-sgd"):
        shutil.copytree(os.path.join(SAMPLES, name), root / name)
    shutil.copytree(os.path.join(SAMPLES, "lr-high-cnn-adam"), root / XSS)
    meta = (root / XSS / "meta.json").read_text().replace('"lr-high-cnn-adam"', '"<img src=x onerror=alert(1)>"')
    (root / XSS / "meta.json").write_text(meta)
    server = Server(str(root), str(root.parent / "serve.log"))
    yield server, root
    server.stop()


@pytest.fixture
def page(pw, site):
    browser = launch(pw)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.requests_seen = []
    page.dialogs = []
    page.on("request", lambda r: page.requests_seen.append(r.url))
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    yield page
    context.close()
    browser.close()


def test_runs_page_click_into_a_run_see_charts_and_findings(page, site, tmp_path):
    server, _ = site
    page.goto(server.url + "/")
    page.get_by_role("heading", name="Runs").wait_for()
    page.wait_for_selector("[data-testid='stDataFrame']")
    page.screenshot(path=str(tmp_path / "runs.png"), full_page=True)
    page.get_by_role("link", name="overfit-mlp-adam").click()
    page.wait_for_url(re.compile(r".*/run\?run=overfit-mlp-adam"))
    wait_for_charts(page, 4)
    finding = page.get_by_text(re.compile(r"overfitting \(warning"))
    finding.wait_for()
    assert "stop early at step" in finding.inner_text()
    # the finding is drawn on the charts: its label sits in the loss and accuracy figures
    assert page.locator(".js-plotly-plot .annotation-text", has_text="overfitting").count() >= 2
    page.screenshot(path=str(tmp_path / "run.png"), full_page=True)
    page.goto(server.url + "/run?run=early-decay-mlp-sgd")  # the LR cut is marked on the LR chart
    wait_for_charts(page, 4)
    page.get_by_text(re.compile(r"early_decay \(warning")).wait_for()
    assert page.locator(".js-plotly-plot .annotation-text", has_text="×0.01").count() == 1
    page.screenshot(path=str(tmp_path / "run-early-decay.png"), full_page=True)


def test_shared_link_and_compare(page, site, tmp_path):
    server, _ = site
    page.goto(server.url + "/compare?runs=overfit-mlp-adam,healthy-mlp-sgd")
    wait_for_charts(page, 4)
    assert page.get_by_text("Hyperparameters and results").is_visible()
    page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)


def test_names_are_shown_as_text_never_run(page, site, tmp_path):
    server, _ = site
    page.goto(server.url + "/")
    page.get_by_role("link", name=XSS).wait_for()
    page.goto(server.url + "/run?run=" + quote(XSS))
    page.get_by_role("heading", name=XSS).wait_for()
    wait_for_charts(page, 2)
    time.sleep(1)
    assert page.dialogs == []
    assert page.locator("img[src='x']").count() == 0
    page.screenshot(path=str(tmp_path / "xss.png"), full_page=True)


def test_path_in_query_is_refused(page, site, tmp_path):
    server, root = site
    outside = tmp_path / "outside-run"
    shutil.copytree(os.path.join(SAMPLES, "healthy-cnn-sgd"), outside)
    link = root / "escape"
    if not link.exists():
        os.symlink(outside, link)  # a run reachable only through a symlink that leaves ROOT
    for bad in ("../../etc", "/etc/passwd", "..", "escape", str(outside)):
        page.goto(server.url + "/run?run=" + quote(bad))
        page.get_by_text("No run named").wait_for()
        assert page.locator(".js-plotly-plot").count() == 0


def test_nothing_leaves_the_machine(page, site):
    server, _ = site
    page.goto(server.url + "/run?run=overfit-mlp-adam")
    wait_for_charts(page, 4)
    page.goto(server.url + "/compare?runs=overfit-mlp-adam,healthy-mlp-sgd")
    wait_for_charts(page, 4)
    hosts = {urlparse(u).hostname for u in page.requests_seen if urlparse(u).scheme in ("http", "https", "ws", "wss")}
    assert hosts == {"127.0.0.1"}, hosts


def test_live_run_updates_by_itself(page, site, tmp_path):
    server, root = site
    trainer = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "train_script.py"), str(root), "live",
                                "200000", "0.2", "0.01"], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": ROOT})
    try:
        assert trainer.stdout.readline().strip() == "started"
        time.sleep(1.5)
        page.goto(server.url + "/run?run=live")
        wait_for_charts(page, 2)
        caption = page.get_by_text(re.compile(r"status live · step \d+"))
        caption.wait_for(timeout=10000)
        first = int(re.search(r"step (\d+)", caption.inner_text()).group(1))
        url = page.url
        seen = [first]
        deadline = time.time() + 12
        while time.time() < deadline and len(set(seen)) < 4:
            time.sleep(0.5)
            seen.append(int(re.search(r"step (\d+)", caption.inner_text()).group(1)))
        assert len(set(seen)) >= 4 and seen == sorted(seen)  # new points kept arriving, in order
        assert page.url == url  # no navigation, no full reload
        # zoom into the loss chart by dragging, as a user would; live refreshes must keep it
        (frame,) = [f for f in page.frames if f.locator(".js-plotly-plot").count() and
                    "Loss" in (f.locator(".gtitle").first.text_content() or "")]
        box = frame.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5, steps=5)
        page.mouse.up()
        rng = "() => JSON.stringify(document.querySelector('.js-plotly-plot').layout.xaxis.range)"
        zoomed = frame.evaluate(rng)
        assert zoomed != "null"
        before = int(re.search(r"step (\d+)", caption.inner_text()).group(1))
        time.sleep(3.5)
        after = int(re.search(r"step (\d+)", caption.inner_text()).group(1))
        assert after > before  # the page refreshed meanwhile ...
        assert frame.evaluate(rng) == zoomed  # ... and the zoom is still there
        page.screenshot(path=str(tmp_path / "live.png"), full_page=True)
        hosts = {urlparse(u).hostname for u in page.requests_seen if urlparse(u).scheme.startswith(("http", "ws"))}
        assert hosts == {"127.0.0.1"}, hosts  # the live charts' plotly.js is served locally too
    finally:
        trainer.kill()
        trainer.wait()


def test_run_page_settings_live_in_the_link(page, site):
    """Log scale and smoothing redraw the charts in place and are kept in the URL, so a shared
    link or a reload shows the same view."""
    server, _ = site
    page.goto(server.url + "/run?run=overfit-mlp-adam")
    wait_for_charts(page, 4)
    ytype = "() => document.querySelector('.js-plotly-plot').layout.yaxis.type"
    assert page.evaluate(ytype) != "log"
    page.get_by_label("Log-scale loss").check()
    page.wait_for_function(ytype + " === 'log'")
    page.locator("#smoothing").fill("0.9")  # a range input: fill sets it and fires change
    page.wait_for_url(re.compile(r".*smoothing=0\.90.*log=1|.*log=1.*smoothing=0\.90"))
    page.reload()
    wait_for_charts(page, 4)
    assert page.evaluate(ytype) == "log" and page.get_by_label("Log-scale loss").is_checked()
    assert page.locator("#smoothing-value").inner_text() == "0.90"


def test_unplaced_series_are_given_a_meaning_in_the_page(page, site, tmp_path):
    """A logdir under tags nobody can place: the user picks what two of them are in the form,
    the choice is saved beside the logs and the run is diagnosed again in place."""
    import tomllib

    from tests.test_cli import _unreadable_tb_run

    server, root = site
    _unreadable_tb_run(root / "opaque")
    page.goto(server.url + "/run?run=opaque")
    page.get_by_text("Not diagnosed").wait_for()
    assert page.get_by_text("No problems found").count() == 0
    page.get_by_label("metric_a").select_option("train loss, per step")
    page.get_by_label("metric_b").select_option("ignore")
    page.get_by_role("button", name="Save and diagnose again").click()
    page.get_by_text(re.compile(r"lr_too_high \(")).wait_for(timeout=20000)
    assert page.get_by_text("Not diagnosed").count() == 0
    saved = tomllib.loads((root / "opaque" / "traindoc-tb.toml").read_text())
    assert saved["map"]["metric_a"] == "train/loss" and saved["map"]["ignore"] == ["^metric_b$"]
    page.screenshot(path=str(tmp_path / "mapped.png"), full_page=True)


def test_run_page_http(site):
    """The run page's routes over real HTTP: an unchanged run answers 304 to its ETag, plotly.js
    and the page's script are cached for good, a name from the URL is only ever data, and the
    mapping route takes JSON from the page's own origin only."""
    import json
    import urllib.error
    import urllib.request

    server, _ = site
    with urllib.request.urlopen(server.url + "/api/run?run=healthy-mlp-sgd") as r:
        etag = r.headers["ETag"]
        assert json.loads(r.read())["state"] == "run"
    req = urllib.request.Request(server.url + "/api/run?run=healthy-mlp-sgd", headers={"If-None-Match": etag})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 304
    with urllib.request.urlopen(server.url + "/run?run=" + quote(XSS)) as r:
        html = r.read().decode()
    assert XSS not in html and "<img" not in html  # the name sits in the inline JSON as \u003c...
    js = [m for m in re.findall(r'src="(assets/[^"]+)"', html)]
    assert len(js) == 2
    for src in js:
        with urllib.request.urlopen(server.url + "/" + src) as r:
            assert "immutable" in r.headers["Cache-Control"]
    body = json.dumps({"run": "healthy-mlp-sgd", "map": {"x": "validation loss"}}).encode()
    for headers in ({"Content-Type": "application/x-www-form-urlencoded"},
                    {"Content-Type": "application/json", "Origin": "http://evil.example"}):
        req = urllib.request.Request(server.url + "/api/mapping", data=body, headers=headers, method="POST")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req)
        assert e.value.code == 403
    req = urllib.request.Request(server.url + "/api/mapping", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:  # no such tag in that run: refused, nothing written
        urllib.request.urlopen(req)
    assert e.value.code == 400 and "unknown tags" in json.loads(e.value.read())["error"]


def test_a_run_page_opened_before_the_run_exists_shows_it_when_it_appears(page, site):
    server, root = site
    page.goto(server.url + "/run?run=soon")
    page.get_by_text("No run named").wait_for()
    shutil.copytree(os.path.join(SAMPLES, "healthy-mlp-sgd"), root / "soon")
    wait_for_charts(page, 4, timeout_ms=20000)
    assert page.get_by_role("heading", name="soon").is_visible()
    assert page.get_by_text("No problems found by the diagnostics.").is_visible()


def test_zooming_shows_the_range_at_full_resolution(page, site, tmp_path):
    """A 400,000-point run: the whole-run view holds 2,000 min/max points per trace. Dragging a
    zoom box on the loss chart shows that step range on every chart, rebuilt from the range's own
    points (here: every one of them), keeps it in the link, and a double click goes back."""
    from benchmarks.synth import write_run
    from traindoc import format as fmt
    from traindoc.reader import read_run

    server, root = site
    write_run(str(root / "big"), 400_000)
    steps = read_run(str(root / "big")).get(fmt.LOSS_WINDOW + "/mean").index.to_numpy()
    page.goto(server.url + "/run?run=big")
    wait_for_charts(page, 4)
    count = ("([a, b]) => { const d = document.querySelector('.js-plotly-plot'); const t = d._fullData.find("
             "t => t.name === 'train loss (raw)'); let n = 0; for (const x of t.x) if (x >= a && x <= b) n++; return n; }")
    ranges = "() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(d => d.layout.xaxis.range)"
    box = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.40, box["y"] + box["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.5, steps=5)
    page.mouse.up()
    page.wait_for_url(re.compile(r".*x0=[\d.]+&x1=[\d.]+"))
    q = dict(p.split("=") for p in page.url.split("?")[1].split("&"))
    a, b = float(q["x0"]), float(q["x1"])
    every = int(((steps >= a) & (steps <= b)).sum())
    assert every > 4 * 100  # the whole view gave this 5% of the run about 2,000 * 5% = 100 points
    deadline = time.time() + 20
    while page.evaluate(count, [a, b]) < every and time.time() < deadline:
        time.sleep(0.2)
    assert page.evaluate(count, [a, b]) == every  # all of them, none thinned away
    assert all(r is not None and abs(r[0] - a) < 1 and abs(r[1] - b) < 1 for r in page.evaluate(ranges))
    page.screenshot(path=str(tmp_path / "zoomed.png"), full_page=True)
    page.reload()  # the link keeps the range
    wait_for_charts(page, 4)
    assert page.evaluate(count, [a, b]) == every
    page.locator(".js-plotly-plot .nsewdrag").first.dblclick()
    page.wait_for_url(lambda url: "x0=" not in url)
    deadline = time.time() + 20
    while page.evaluate(count, [a, b]) >= every and time.time() < deadline:
        time.sleep(0.2)
    assert page.evaluate(count, [a, b]) < every / 2  # back to the whole run's thinned view


def test_loss_spikes_are_counted_on_the_run_page(page, site, tmp_path):
    """A real loop with three bad steps: the page says how many spikes and at which steps, and the
    loss chart marks each one."""
    from tests.test_spikes import BAD_STEPS, _train
    from traindoc.reader import read_run
    from traindoc.rules.spikes import loss_spikes

    server, root = site
    spikes = loss_spikes(read_run(_train(str(root), "spiky", BAD_STEPS)))
    assert len(spikes) == len(BAD_STEPS)
    page.goto(server.url + "/run?run=spiky")
    wait_for_charts(page, 2)
    note = page.locator("#spikes")
    note.wait_for(timeout=10000)
    text = note.inner_text()
    assert text.startswith(f"Loss spikes ({len(spikes)})")
    for s in spikes:
        assert f"step {s.step:,}" in text
    marks = ("() => { const d = document.querySelector('.js-plotly-plot'); const t = d._fullData.find("
             "t => (t.name || '').startsWith('loss spikes')); return t ? Array.from(t.x) : null; }")
    assert page.evaluate(marks) == [s.step for s in spikes]
    page.screenshot(path=str(tmp_path / "spikes.png"), full_page=True)
