"""Loss spikes the run recovered from: counted, each with its step, on a real training loop that
makes them (one step at 300x the LR, three times), and shown by the CLI, the run page and the
notebook view. The same loop without the bad steps has none."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from markdown_it import MarkdownIt

from tests.conftest import blobs, logged_step, mlp
from traindoc import collector
from traindoc import format as fmt
from traindoc.reader import read_run
from traindoc.rules import diagnose_run
from traindoc.rules.spikes import SIDE, loss_spikes
from traindoc.series import RunSeries

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BAD_STEPS = (900, 1700, 2400)
LOG_EVERY = 10


def _train(root: str, name: str, bad_steps=()) -> str:
    """3,000 SGD steps on five blobs; at each of `bad_steps` one step runs at 300x the LR (a bad
    step, as a loss-scale glitch or a corrupt batch makes), and training goes on as before."""
    torch.manual_seed(0)
    x, y = blobs(4096, classes=5)
    model = mlp(classes=5)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    run = collector.attach(model, opt, root=root, name=name, log_every=LOG_EVERY)
    g = torch.Generator().manual_seed(1)
    for step in range(3000):
        for group in opt.param_groups:
            group["lr"] = 0.05 * (300 if step in bad_steps else 1)
        i = torch.randint(0, len(y), (64,), generator=g)
        logged_step(run, model, opt, x[i], y[i])
    run.close()
    return run.path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("spiky")
    return str(root), _train(str(root), "spiky", BAD_STEPS), _train(str(root), "steady")


def test_each_spike_of_a_real_loop_is_counted_at_its_step(runs):
    _, spiky, steady = runs
    got = loss_spikes(read_run(spiky))
    assert len(got) == len(BAD_STEPS)
    for s, bad in zip(got, BAD_STEPS):
        assert bad < s.step <= bad + 3 * LOG_EVERY  # the window the bad step knocked back
        assert s.peak > 5 * max(s.before, s.after) and s.times_noise >= 6
    assert loss_spikes(read_run(steady)) == []
    # recovered one-off spikes under the first loss are no finding: the run is healthy
    assert diagnose_run(read_run(spiky)).findings == []


def _series(values, maxes=None) -> RunSeries:
    steps = np.arange(1, len(values) + 1) * 10
    data = {fmt.LOSS_WINDOW + "/mean": pd.Series(values, index=steps),
            fmt.LOSS_WINDOW + "/var": pd.Series(np.full(len(values), 1e-4), index=steps),
            fmt.LOSS_WINDOW + "/count": pd.Series(np.full(len(values), 10.0), index=steps)}
    if maxes is not None:
        data[fmt.LOSS_WINDOW + "/max"] = pd.Series(maxes, index=steps)
    return RunSeries.from_dict("synthetic", data, {})


def test_a_jump_that_stays_up_a_falling_start_and_a_short_run_are_no_spikes():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.01, 200)
    shift = np.where(np.arange(200) < 100, 1.0, 2.0) + noise  # a level shift: it never came back
    assert loss_spikes(_series(shift)) == []
    falling = 3.0 * np.exp(-np.arange(200) / 10) + 0.5 + noise  # steep at the start, then flat
    assert loss_spikes(_series(falling)) == []
    bump = 1.0 + noise
    bump[150] = 2.0
    assert [s.step for s in loss_spikes(_series(bump))] == [1510]
    assert loss_spikes(_series(bump[120:160])) != [] and loss_spikes(_series(bump[130:155])) == []  # too short
    # a one-batch spike shows in the window's max though the mean hardly moves
    maxes = bump.copy() + 0.05
    maxes[150] = 1.06
    maxes[80] = 4.0
    assert [s.step for s in loss_spikes(_series(1.0 + noise, maxes))] == [810]
    # bounces within SIDE windows of each other are one spike
    twin = 1.0 + noise
    twin[100] = twin[100 + SIDE - 1] = 2.0
    assert len(loss_spikes(_series(twin))) == 1


def _cli(root: str, cache: str, *args) -> str:
    out = subprocess.run([sys.executable, "-m", "traindoc.cli", "diagnose", root, *args], capture_output=True,
                         text=True, env={**os.environ, "TRAINDOC_CACHE": cache}, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_cli_reports_spikes_in_json_and_markdown(runs, tmp_path):
    root, _, _ = runs
    got = {r["run"]: r for r in json.loads(_cli(root, str(tmp_path), "--format", "json"))["runs"]}
    assert [s["step"] for s in got["spiky"]["spikes"]] == [s.step for s in loss_spikes(read_run(runs[1]))]
    assert got["steady"]["spikes"] == []
    tokens = MarkdownIt().parse(_cli(root, str(tmp_path), "--format", "markdown"))
    heads = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert "Loss spikes" in heads
    items = [t.content for t in tokens if t.type == "inline" and t.content.startswith(("spiky", "steady"))]
    (line,) = items
    assert line.startswith("spiky: 3 loss spikes the run recovered from")
    for s in got["spiky"]["spikes"]:
        assert f"step {s['step']:,}" in line


def test_the_run_page_and_the_notebook_view_show_the_spikes(runs, monkeypatch, tmp_path):
    root, spiky, _ = runs
    monkeypatch.setenv("TRAINDOC_ROOT", root)
    monkeypatch.setenv("TRAINDOC_CACHE", str(tmp_path))
    from traindoc.app.runview import build

    view = json.loads(build.view("spiky")[0])
    steps = [s.step for s in loss_spikes(read_run(spiky))]
    assert [s["step"] for s in view["spikes"]] == steps and view["spikes_text"].startswith("3 loss spikes")
    (loss,) = [fig for key, fig in view["figures"]["charts"] if key == "loss"]
    (marks,) = [t for t in loss["data"] if t.get("name") == "loss spikes (3)"]
    assert marks["x"] == steps
    # zoomed to the first spike only: the marker of that one alone
    zoomed = json.loads(build.view("spiky", steps=(steps[0] - 50, steps[0] + 50))[0])
    (loss,) = [fig for key, fig in zoomed["figures"]["charts"] if key == "loss"]
    assert [t["x"] for t in loss["data"] if str(t.get("name")).startswith("loss spikes")] == [[steps[0]]]
    from traindoc.notebook import run_view

    nb = run_view(spiky)
    assert [s.step for s in nb.spikes] == steps and "3 loss spikes" in nb.html() and "3 loss spikes" in nb.text()
