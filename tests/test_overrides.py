"""Override files (`traindoc-tb.toml` / `.json`) as people write them, the TensorBoard cache
when it is damaged, and compare links to runs whose names hold commas: every test here goes
through what a user runs (`traindoc diagnose`, `traindoc serve`, the pages) where it can."""

from __future__ import annotations

import datetime
import glob
import json
import os
import shutil
import subprocess
import sys
import tomllib
import urllib.parse
import urllib.request

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "sample_runs")
DASHBOARD = os.path.join(ROOT, "app", "dashboard.py")


def tb_run(folder, steps: int = 200) -> None:
    """A TensorBoard run whose loss explodes under a name nobody can place (`metric_a`); with an
    override that says metric_a is the train loss, it gets lr_too_high."""
    from tensorboardX import SummaryWriter

    w = SummaryWriter(str(folder))
    for step in range(1, steps):
        w.add_scalar("metric_a", 2.3 * 1.03 ** step, step)
        w.add_scalar("metric_b", 0.1, step)
    w.close()


GOOD_TOML = '[map]\nmetric_a = "train/loss"\nignore = ["^metric_b$"]\n[run]\nnum_classes = 10\n'

#: Hostile override files: (file name, content, words the one-line message must hold).
BAD = {
    "list": ("traindoc-tb.json", "[]", "got a list"),
    "map-list": ("traindoc-tb.json", '{"map": []}', "map: expected a table"),
    "bad-regex": ("traindoc-tb.json", '{"map": {"metric_a": "train/loss"}, "ignore": ["("]}', "ignore[0]"),
    "ignore-string": ("traindoc-tb.json", '{"ignore": "abc"}', "ignore: expected a list"),
    "run-list": ("traindoc-tb.json", '{"run": []}', "run: expected a table"),
    "number-target": ("traindoc-tb.json", '{"map": {"metric_a": 3}}', "map.metric_a"),
    "null-pattern": ("traindoc-tb.json", '{"map": {"ignore": [null]}}', "map.ignore[0]"),
    "string-file": ("traindoc-tb.json", '"map"', "got 'map'"),
    "not-json": ("traindoc-tb.json", "{map: 1", "not valid JSON"),
    "toml-map-number": ("traindoc-tb.toml", "map = 3\n", "map: expected a table"),
    "toml-dotted-tag": ("traindoc-tb.toml", '[map]\ntrain.loss = "train/loss"\n', "map.train"),
    "toml-config-string": ("traindoc-tb.toml", '[run]\nconfig = "lr=0.1"\n', "run.config"),
    "toml-inf-classes": ("traindoc-tb.toml", "[run]\nnum_classes = inf\n", "run.num_classes"),
    "toml-status": ("traindoc-tb.toml", '[run]\nstatus = "finished"\n', "run.status"),
    "toml-typo": ("traindoc-tb.toml", '[mpa]\nmetric_a = "train/loss"\n', "unknown key mpa"),
    "not-utf8": ("traindoc-tb.toml", b'[map]\nmetric_a = "\xff"\n', "not UTF-8"),
}


@pytest.fixture(scope="module")
def bad_root(tmp_path_factory):
    """Two healthy-or-not runs with findings (a traindoc run, a mapped TensorBoard run), a run beside
    each hostile override file, and a logdir whose shared override file (in the parent) is hostile."""
    root = tmp_path_factory.mktemp("overrides") / "root"
    shutil.copytree(os.path.join(SAMPLES, "overfit-mlp-adam"), root / "overfit-mlp-adam")
    tb_run(root / "tb" / "good")
    (root / "tb" / "good" / "traindoc-tb.toml").write_text(GOOD_TOML)
    for key, (name, content, _) in BAD.items():
        tb_run(root / "tb" / f"bad-{key}", 20)
        path = root / "tb" / f"bad-{key}" / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    for r in ("r1", "r2"):
        tb_run(root / "shared" / r, 20)
    (root / "shared" / "traindoc-tb.json").write_text('{"map": {"ignore": "metric_b"}}')
    return root


def cli(*args, cache) -> subprocess.CompletedProcess:
    """`traindoc diagnose ...` in a subprocess, on this checkout's code."""
    env = {**os.environ, "PYTHONPATH": ROOT, "TRAINDOC_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "traindoc.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=300)


def test_bad_override_file_is_one_message_and_the_rest_is_diagnosed(bad_root, tmp_path):
    """Defect 1: `[]`, `{"map": []}`, a bad regex, `"ignore": "abc"`, `{"run": []}`, a number where
    a series name goes ... raised AttributeError / re.error / TypeError past the readers' catches,
    and `traindoc diagnose ROOT` died with a traceback. Now each is one line naming the file, once,
    and every other run is read and diagnosed."""
    for flags in ((), ("--json",)):
        p = cli("diagnose", str(bad_root), *flags, cache=tmp_path / f"cache{len(flags)}")
        assert "Traceback" not in p.stderr, p.stderr[-3000:]
        assert p.returncode == 2, p.stderr[-3000:]  # bad input was reported: the documented exit code
        lines = p.stderr.splitlines()
        for key, (name, _, words) in BAD.items():
            file = os.path.join(str(bad_root), "tb", f"bad-{key}", name)
            said = [ln for ln in lines if file in ln]
            assert len(said) == 1, (key, said)
            assert words in said[0], (key, said[0])
        shared = os.path.join(str(bad_root), "shared", "traindoc-tb.json")
        for r in ("r1", "r2"):  # the runs that read the shared file each say why they are not shown
            said = [ln for ln in lines if ln.startswith(f"traindoc: {os.path.join(str(bad_root), 'shared', r)}:")]
            assert len(said) == 1 and shared in said[0] and "map.ignore: expected a list" in said[0], said
        if flags:
            runs = {r["run"]: r for r in json.loads(p.stdout)["runs"]}
            assert set(runs) == {"overfit-mlp-adam", "tb/good"}
            assert [f["rule"] for f in runs["overfit-mlp-adam"]["findings"]] == ["overfitting"]
            assert "lr_too_high" in [f["rule"] for f in runs["tb/good"]["findings"]]
        else:
            assert "overfitting" in p.stdout and "lr_too_high" in p.stdout


def test_load_overrides_raises_one_line_value_errors(tmp_path):
    """The readers catch ValueError per run: every hostile file raises one (never AttributeError,
    TypeError or re.error), in one line naming the file."""
    from traindoc.tb.mapping import load_overrides

    for key, (name, content, words) in BAD.items():
        folder = tmp_path / key
        folder.mkdir()
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
        with pytest.raises(ValueError) as err:
            load_overrides(str(folder))
        msg = str(err.value)
        assert msg.startswith(str(folder / name) + ": ") and "\n" not in msg and words in msg, (key, msg)


def get(url: str):
    with urllib.request.urlopen(url, timeout=120) as r:
        return r.status, r.read().decode()


@pytest.mark.slow
def test_pages_answer_for_every_run_beside_a_bad_override_file(bad_root, tmp_path, monkeypatch):
    """Defect 1 on the pages: over `traindoc serve`, the run list and every good run's page answer
    200 with their findings, each bad run's page says what is wrong with its file; the runs page
    (Streamlit) lists every run and raises nothing."""
    from streamlit.testing.v1 import AppTest

    from tests.browser import Server

    monkeypatch.setenv("TRAINDOC_CACHE", str(tmp_path / "cache"))
    server = Server(str(bad_root), str(tmp_path / "serve.log"))
    try:
        status, text = get(server.url + "/api/run")
        listed = json.loads(text)["runs"]
        assert status == 200 and {"overfit-mlp-adam", "tb/good", "tb/bad-list", "shared/r1"} <= set(listed)
        for name, rule in (("overfit-mlp-adam", "overfitting"), ("tb/good", "lr_too_high")):
            status, text = get(server.url + "/api/run?run=" + urllib.parse.quote(name, safe=""))
            v = json.loads(text)
            assert status == 200 and v["state"] == "run" and rule in [f["rule"] for f in v["findings"]], name
            status, page = get(server.url + "/run?run=" + urllib.parse.quote(name, safe=""))
            assert status == 200 and '"state": "run"' in page
        for key in ("list", "bad-regex", "ignore-string"):
            status, text = get(server.url + "/api/run?run=" + urllib.parse.quote(f"tb/bad-{key}", safe=""))
            v = json.loads(text)
            assert status == 200 and v["state"] == "error" and BAD[key][0] in v["error"] and BAD[key][2] in v["error"]
    finally:
        server.stop()
    monkeypatch.setenv("TRAINDOC_ROOT", str(bad_root))
    at = AppTest.from_file(DASHBOARD, default_timeout=120).run()
    assert not at.exception, at.exception
    listed = set(at.dataframe[0].value["run"])
    assert {"overfit-mlp-adam", "tb/good", "tb/bad-list"} <= listed


# ---- defect 2: saving a mapping keeps the user's file ---------------------------------------
USER_TOML = """\
ignore = ["^timing/"]

[map]
"holdout/top1" = "val/acc"
ignore = ["^z$", "^a$"]

[run]
num_classes = 10
config = {lr = 0.1, layers = [64, 32], opt = {name = "sgd", nesterov = true}}
started = 2024-05-01T12:30:00Z
day = 2024-05-01
tags = ["a", "b"]
ratio = 1e-3

[[run.stages]]
epochs = 3

[[run.stages]]
epochs = 5
"""


def test_save_overrides_keeps_every_toml_key_and_type(tmp_path):
    """Defect 2: the hand-written TOML writer turned `config = {lr = 0.1}` into the string
    "{'lr': 0.1}" (and dropped the dates' type, the top-level ignore, arrays of tables)."""
    from traindoc.tb.mapping import load_overrides, save_overrides

    path = tmp_path / "traindoc-tb.toml"
    path.write_text(USER_TOML)
    before = tomllib.loads(USER_TOML)
    assert save_overrides(str(tmp_path), {"metric_a": "train/loss"}, ["metric b"]) == str(path)
    after = tomllib.loads(path.read_text())
    assert after["run"] == before["run"]
    assert after["run"]["config"] == {"lr": 0.1, "layers": [64, 32], "opt": {"name": "sgd", "nesterov": True}}
    assert isinstance(after["run"]["started"], datetime.datetime) and after["run"]["day"] == datetime.date(2024, 5, 1)
    assert after["ignore"] == ["^timing/"]
    assert after["map"] == {"holdout/top1": "val/acc", "metric_a": "train/loss", "ignore": ["^z$", "^a$", "^metric\\ b$"]}
    mapping, ignore, run = load_overrides(str(tmp_path))
    assert mapping == {"holdout/top1": "val/acc", "metric_a": "train/loss"} and run == before["run"]
    assert sorted(p.pattern for p in ignore) == sorted(["^timing/", "^z$", "^a$", "^metric\\ b$"])
    assert not [n for n in os.listdir(tmp_path) if n != "traindoc-tb.toml"]  # no temporary file left


def test_save_overrides_keeps_every_json_key_and_type(tmp_path):
    """Defect 2, JSON form (json.dumps kept the types before; the test keeps it so)."""
    from traindoc.tb.mapping import save_overrides

    data = {"map": {"holdout/top1": "val/acc"}, "run": {"num_classes": 10, "config": {
        "lr": 0.1, "layers": [64, 32], "opt": {"name": "sgd", "nesterov": True}, "note": None, "name": "café"}}}
    path = tmp_path / "traindoc-tb.json"
    path.write_text(json.dumps(data))
    save_overrides(str(tmp_path), {"metric_a": "train/loss"})
    after = json.loads(path.read_text(encoding="utf-8"))
    assert after["run"] == data["run"]
    assert after["map"] == {"holdout/top1": "val/acc", "metric_a": "train/loss"}


def test_save_overrides_leaves_a_bad_file_as_it_is(tmp_path):
    """A file that cannot be read is not overwritten by a save from the run page: the save says why."""
    from traindoc.tb.mapping import save_overrides

    for name, content in (("traindoc-tb.toml", "[run\nconfig = 1"), ("traindoc-tb.json", '{"map": []}')):
        folder = tmp_path / name
        folder.mkdir()
        (folder / name).write_text(content)
        with pytest.raises(ValueError, match="traindoc-tb"):
            save_overrides(str(folder), {"metric_a": "train/loss"})
        assert (folder / name).read_text() == content


# ---- defect 3: a damaged TensorBoard cache --------------------------------------------------
def _corruptions(good: bytes) -> dict:
    import io

    def npz(**arrays) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    info = json.dumps({"version": 2, "offset": 0, "tags": ["metric_a"], "head": ""})
    return {
        "truncated": good[: len(good) // 2],  # zipfile.BadZipFile
        "empty": b"",  # EOFError
        "garbage": b"not a cache at all" * 8,  # ValueError (pickled data refused)
        "zip-garbage": b"PK\x03\x04" + b"\x00" * 200,  # BadZipFile
        "flipped-byte": good[:200] + bytes([good[200] ^ 0xFF]) + good[201:],  # BadZipFile: bad CRC
        "missing-array": npz(info=np.array(info)),  # KeyError
        "short-arrays": npz(info=np.array(info), ids=np.zeros(5, np.int32), steps=np.zeros(2, np.int64),
                            walls=np.zeros(5), values=np.zeros(5)),  # IndexError when read
        "ids-past-tags": npz(info=np.array(info), ids=np.full(3, 7, np.int32), steps=np.arange(3),
                             walls=np.zeros(3), values=np.zeros(3)),
        "info-not-a-dict": npz(info=np.array("[1, 2]"), ids=np.zeros(0, np.int32), steps=np.zeros(0, np.int64),
                               walls=np.zeros(0), values=np.zeros(0)),
    }


@pytest.mark.parametrize("kind", ["truncated", "empty", "garbage", "zip-garbage", "flipped-byte", "missing-array",
                                  "short-arrays", "ids-past-tags", "info-not-a-dict"])
def test_a_corrupt_tensorboard_cache_is_read_around(tmp_path, monkeypatch, kind):
    """Defect 3: a truncated or garbage cache raised zipfile.BadZipFile / EOFError out of
    `_from_cache` (it caught OSError, ValueError, KeyError only). Now the event file is read
    again, the same series come back, and the cache is written anew."""
    from traindoc.tb import read_tb_run

    cache = tmp_path / "cache"
    monkeypatch.setenv("TRAINDOC_CACHE", str(cache))
    tb_run(tmp_path / "run")
    first = read_tb_run(str(tmp_path / "run"))
    (cached,) = glob.glob(os.path.join(str(cache), "**", "*.npz"), recursive=True)
    good = open(cached, "rb").read()
    with open(cached, "wb") as f:
        f.write(_corruptions(good)[kind])
    again = read_tb_run(str(tmp_path / "run"))
    assert again.keys == first.keys
    for key in first.keys:
        assert again.get(key).equals(first.get(key)), key
    with np.load(cached, allow_pickle=False) as z:  # written again, whole
        assert len(z["values"]) == 2 * 199 and json.loads(str(z["info"]))["tags"] == ["metric_a", "metric_b"]


# ---- defect 4: compare links to runs named with commas --------------------------------------
NAMES = ["lr=0.1,bs=32", "lr=0.01,bs=32", "a&b=c#d %2C+x", "ünï,cødé"]


def test_compare_link_round_trips_any_name():
    """Defect 4: the runs page joined the selected names with "," and the compare page split on
    ",": a run named `lr=0.1,bs=32` became two names that are no run. Each name is now its own
    `runs` parameter; an older `runs=a,b` link still opens a and b."""
    from streamlit.runtime.state.query_params import process_query_params

    from traindoc.app.views.common import compare_names, compare_params

    known = {n: n for n in [*NAMES, "a", "b"]}
    query = process_query_params(compare_params(NAMES))  # what st.page_link puts in the URL
    values = urllib.parse.parse_qs(query)["runs"]  # what st.query_params.get_all("runs") gives back
    assert compare_names(values, known) == NAMES
    assert compare_names(["a,b"], known) == ["a", "b"]  # an older link
    assert compare_names(["a", "nope", "a"], known) == ["a"]


@pytest.mark.slow
def test_compare_page_opens_runs_named_with_commas_and_their_saved_config(tmp_path, monkeypatch):
    """Defects 4 and 2 on the compare page: two TensorBoard runs named `lr=...,bs=32` whose
    `[run] config` is an inline table; the run page saved a mapping into each file (which turned
    the config into a string, and the compare page then failed on it). Both runs are compared, with
    their learning rates as a numeric column."""
    from streamlit.testing.v1 import AppTest

    from traindoc.tb.mapping import save_overrides

    root = tmp_path / "root"
    for name, lr in ((NAMES[0], 0.1), (NAMES[1], 0.01)):
        tb_run(root / name)
        (root / name / "traindoc-tb.toml").write_text(
            f'[map]\nmetric_a = "train/loss"\n[run]\nconfig = {{lr = {lr}, layers = [64, 32]}}\n')
        save_overrides(str(root / name), {}, ["metric_b"])
    monkeypatch.setenv("TRAINDOC_ROOT", str(root))
    monkeypatch.setenv("TRAINDOC_CACHE", str(tmp_path / "cache"))
    at = AppTest.from_file(DASHBOARD, default_timeout=120)
    at.query_params["runs"] = NAMES[:2]
    at.switch_page("screens/compare.py")
    at.run()
    assert not at.exception, at.exception
    assert at.multiselect(key="compare_runs").value == NAMES[:2]
    table = at.dataframe[0].value.set_index("run")
    assert set(table.index) == set(NAMES[:2])
    assert table.loc[NAMES[0], "lr"] == 0.1 and table.loc[NAMES[1], "lr"] == 0.01
