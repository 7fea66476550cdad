"""Fuzzing what people write by hand: override files (random and hostile JSON and TOML), `[run]`
configs holding NaN and infinities, Lightning hparams.yaml with tags safe_load refuses, and run
folders named with commas, slash-like characters, spaces, unicode and bytes that are no UTF-8.
Each goes through `traindoc diagnose ROOT` (table and --json), the catalog and the pages of
`traindoc serve`; each gets one clear message and the rest of the root still works.

Hypothesis runs derandomized (the same examples every run, no example database), with small
example counts: the whole file takes well under a minute on two busy cores."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "sample_runs")
DASHBOARD = os.path.join(ROOT, "app", "dashboard.py")
MARKER = "traindoc-fuzz-yaml-was-executed"


def fuzz(n: int):
    return settings(max_examples=n, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.filter_too_much, HealthCheck.data_too_large])


def tb_run(folder, steps: int = 200) -> None:
    """A TensorBoard run whose loss explodes under an opaque tag (`metric_a`): with an override
    that maps it to train/loss, lr_too_high."""
    from tensorboardX import SummaryWriter

    w = SummaryWriter(str(folder))
    for step in range(1, steps):
        w.add_scalar("metric_a", 2.3 * 1.03 ** step, step)
        w.add_scalar("metric_b", 0.1, step)
    w.close()


def lightning_run(folder, hparams: str) -> None:
    """Lightning's CSVLogger layout: metrics.csv (an overfitting run) and a hand-edited hparams.yaml."""
    os.makedirs(folder)
    with open(os.path.join(folder, "metrics.csv"), "w") as f:
        f.write("epoch,step,train_loss,val_loss\n")
        for e in range(20):
            f.write(f"{e},{e * 10},{2 / (e + 1)},{2 / (e + 1) + 0.1 * e}\n")
    with open(os.path.join(folder, "hparams.yaml"), "w") as f:
        f.write(hparams)


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
    """TRAINDOC_CACHE in a temporary folder for the whole module (hypothesis runs many examples
    in one test call: a function-scoped monkeypatch would not do)."""
    old = os.environ.get("TRAINDOC_CACHE")
    os.environ["TRAINDOC_CACHE"] = str(tmp_path_factory.mktemp("fuzz-cache"))
    yield os.environ["TRAINDOC_CACHE"]
    if old is None:
        os.environ.pop("TRAINDOC_CACHE", None)
    else:
        os.environ["TRAINDOC_CACHE"] = old


# ---- strategies: what a person might put in an override file --------------------------------
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10))
_values = st.recursive(_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c,
                                                                                     max_size=4), max_leaves=10)
_tags = st.sampled_from(["metric_a", "metric_b", "loss", "holdout/top1", "train.loss", "", "a b", "ü/ß\n"]) | \
    st.text(max_size=8)
_targets = st.sampled_from(["train/loss", "val/acc", "val/loss", "lr/pg0", "custom/x", "epoch"]) | \
    st.text(min_size=1, max_size=8)
_patterns = st.sampled_from(["^metric_b$", "^timing/", "loss", "(", "[", "a{99999999999}", "*", "(?P<x>", "\\"]) | \
    st.text(alphabet="()[]{}*+?.^$|\\ab1-", max_size=8)
_run_keys = st.sampled_from(["num_classes", "n_classes", "classes", "config", "dataset", "status", "name"]) | \
    st.text(max_size=6)
_numbers = st.sampled_from([float("nan"), float("inf"), -float("inf"), 10, 1, 0, -3, 1e308, 2 ** 70, True])
_run_values = st.one_of(_numbers, _values, st.dictionaries(
    st.sampled_from(["lr", "num_classes", "classes", "layers", "wd"]), _numbers | _values, max_size=4))
_good_patterns = st.sampled_from(["^metric_b$", "^timing/", "loss", "", "a|b", "^$", "(?i)METRIC"])
_map = st.builds(lambda d, ig: {**d, "ignore": ig} if ig is not None else d,
                 st.dictionaries(_tags, _targets, max_size=4), st.none() | st.lists(_patterns, max_size=3))
#: Files as a person writes them (the right shape, any content) ...
_plausible = st.fixed_dictionaries({}, optional={
    "map": st.builds(lambda d, ig: {**d, "ignore": ig} if ig is not None else d,
                     st.dictionaries(_tags.filter(lambda t: t != "ignore"), _targets, max_size=4),
                     st.none() | st.lists(_good_patterns, max_size=3)),
    "ignore": st.lists(_good_patterns, max_size=3),
    "run": st.dictionaries(st.sampled_from(["num_classes", "config", "dataset", "seed", "classes"]) | st.text(
        min_size=1, max_size=6).filter(lambda k: k not in ("status", "name", "source")),
        st.one_of(st.dictionaries(st.sampled_from(["lr", "num_classes", "layers", "wd"]), _numbers | _values,
                                  max_size=4), _values, st.integers(2, 1000)), max_size=4)})
#: ... and with any value in any place, or a key nobody reads.
_hostile = st.fixed_dictionaries({}, optional={
    "map": _map | _values | st.dictionaries(_tags, _values, min_size=1, max_size=3),
    "ignore": st.lists(_patterns | _values, max_size=3) | _values,
    "run": st.dictionaries(_run_keys, _run_values, max_size=4) | _values,
})
_override = st.one_of(_plausible, _plausible, _hostile, st.builds(lambda d, k, v: {**d, k: v}, _plausible, st.text(max_size=6),
                                                      _values))


def _no_none(v):
    """TOML has no null: what a TOML file can hold of `v`."""
    if isinstance(v, dict):
        return {k: _no_none(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_no_none(x) for x in v if x is not None]
    return v


def _as_toml(v) -> str:
    import tomli_w

    v = _no_none(v)
    try:
        return tomli_w.dumps(v if isinstance(v, dict) else {"value": v})
    except (TypeError, ValueError):
        return repr(v)


def _mutated(text: str, at: int, insert: str) -> str:
    at = at % (len(text) + 1)
    return text[:at] + insert + text[at + 1:]


_edits = st.tuples(st.integers(0, 400), st.sampled_from(["", "[", "]", "=", '"', "\n", "{", "}", ",", "\x00", "'",
                                                         "nan", "#", "[[", "\\"]))
#: (file name, bytes): well-formed files of hostile structure, the same with one character
#: changed, random bytes, and values that are not a table at all.
_whole = st.one_of(
    st.tuples(st.just("traindoc-tb.json"), _override.map(lambda d: json.dumps(d).encode())),
    st.tuples(st.just("traindoc-tb.toml"), _override.map(lambda d: _as_toml(d).encode("utf-8", "surrogatepass"))))
override_files = st.one_of(
    _whole, _whole,
    st.tuples(st.just("traindoc-tb.json"), st.tuples(_override, _edits).map(
        lambda t: _mutated(json.dumps(t[0]), *t[1]).encode("utf-8", "surrogatepass"))),
    st.tuples(st.just("traindoc-tb.toml"), st.tuples(_override, _edits).map(
        lambda t: _mutated(_as_toml(t[0]), *t[1]).encode("utf-8", "surrogatepass"))),
    st.tuples(st.just("traindoc-tb.json"), _values.map(lambda v: json.dumps(v).encode())),
    st.tuples(st.sampled_from(["traindoc-tb.json", "traindoc-tb.toml"]), st.binary(max_size=60)),
)


def _write(folder: str, name: str, content: bytes) -> str:
    for n in ("traindoc-tb.json", "traindoc-tb.toml"):
        if os.path.exists(os.path.join(folder, n)):
            os.remove(os.path.join(folder, n))
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(content)
    return path


def _said_well(exc: Exception, path: str) -> None:
    """One line, naming the file, of a ValueError the readers report per run."""
    from traindoc.tb.mapping import OverrideError

    msg = str(exc)
    assert isinstance(exc, OverrideError), repr(exc)
    assert msg.startswith(path + ": ") and "\n" not in msg and len(msg) < 400, msg


def _canon(v) -> str:
    """A comparable text of parsed TOML/JSON: NaN equals NaN, dates by their text."""
    return json.dumps(v, default=repr, sort_keys=True)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("fuzz-overrides"))


@fuzz(400)
@given(file=override_files)
def test_fuzzed_override_file_loads_or_says_why(cache_env, fuzz_dir, file):
    """Any file: either it loads into a mapping of strings, compiled patterns and a run table
    (and a mapping saved into it keeps all it held), or one OverrideError line names it."""
    import tomllib

    from traindoc.tb.mapping import load_overrides, map_tags, save_overrides

    path = _write(fuzz_dir, *file)
    try:
        mapping, ignore, run = load_overrides(fuzz_dir)
    except Exception as exc:  # noqa: BLE001 - anything but an OverrideError fails the test
        _said_well(exc, path)
        event("refused: " + str(exc)[len(path) + 2:].split(":")[0][:30])
        with pytest.raises(ValueError):  # a save from the run page says so too, and keeps the file
            save_overrides(fuzz_dir, {"metric_a": "train/loss"})
        assert open(path, "rb").read() == file[1]
        return
    event(f"loaded: {len(mapping)} tag(s), {len(ignore)} pattern(s), {len(run)} run key(s)")
    assert all(isinstance(k, str) and isinstance(v, str) and v for k, v in mapping.items())
    assert all(isinstance(p, re.Pattern) for p in ignore) and isinstance(run, dict)
    if "config" in run:
        assert isinstance(run["config"], dict)
    for key in ("num_classes", "n_classes", "classes"):
        v = run.get(key)
        assert not (isinstance(v, float) and not math.isfinite(v))
    map_tags(["metric_a", "metric_b", "loss", *list(mapping)[:4]], overrides=mapping, ignore=ignore)

    def parse():
        raw = open(path, "rb").read()
        return json.loads(raw) if path.endswith(".json") else tomllib.loads(raw.decode())

    before = parse()
    save_overrides(fuzz_dir, {"metric_a": "train/loss"}, ["metric b"])
    after = parse()
    assert _canon({k: v for k, v in after.items() if k != "map"}) == \
        _canon({k: v for k, v in before.items() if k != "map"})
    old_map = before.get("map", {})
    assert _canon({k: v for k, v in after["map"].items() if k not in ("ignore", "metric_a")}) == \
        _canon({k: v for k, v in old_map.items() if k not in ("ignore", "metric_a")})
    assert after["map"]["metric_a"] == "train/loss" and "^metric\\ b$" in after["map"]["ignore"]
    assert after["map"]["ignore"][:len(old_map.get("ignore", []))] == old_map.get("ignore", [])
    mapping2, _, run2 = load_overrides(fuzz_dir)
    assert mapping2 == {**mapping, "metric_a": "train/loss"} and _canon(run2) == _canon(run)


@pytest.fixture(scope="module")
def one_tb_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz-tb") / "run"
    tb_run(folder)
    return str(folder)


#: The run's loss mapped, and any `[run]` table: what the rules read of a run's metadata.
_mapped = st.builds(lambda run, ig: {"map": {"metric_a": "train/loss", **({"ignore": ig} if ig else {})}, "run": run},
                    st.dictionaries(_run_keys, _run_values, max_size=4), st.lists(_good_patterns, max_size=2))
_mapped_files = st.one_of(
    st.tuples(st.just("traindoc-tb.json"), _mapped.map(lambda d: json.dumps(d).encode())),
    st.tuples(st.just("traindoc-tb.toml"), _mapped.map(lambda d: _as_toml(d).encode("utf-8", "surrogatepass"))))


@fuzz(120)
@given(file=st.one_of(_mapped_files, _whole, override_files))
def test_fuzzed_override_beside_a_real_run_is_read_or_reported(cache_env, one_tb_run, file):
    """The same files beside a real TensorBoard run, through `diagnose_tree` (the readers and every
    rule, the `[run]` table in the run's metadata): one report, an error naming the file or a run
    read and judged; nothing raised."""
    from traindoc.diagnose import diagnose_tree

    path = _write(one_tb_run, *file)
    reports, others = diagnose_tree(one_tb_run)
    (report,) = reports
    if report.error:
        event("reported")
        assert report.error.startswith(path + ": ") and "\n" not in report.error, report.error
    else:
        event(f"diagnosed: {sorted({f.rule for f in report.findings})}")
        assert isinstance(report.findings, list)


# ---- a whole root of hostile names and files --------------------------------------------------
ODD_NAMES = ["a,b", "with space", "ünï-cødé ✓", "a\u2215b", "a\u2044b", "back\\slash", "-rf", "%2F..",
             "q?run=x&y=1#h", "tab\there", "new\nline"]
NON_UTF8 = os.fsdecode(b"bytes-\xff\xfe")
NAN_TOML = '[map]\nmetric_a = "train/loss"\n[run]\nnum_classes = 10\nconfig = {lr = nan, wd = inf, x = -inf}\n'
NAN_JSON = '{"map": {"metric_a": "train/loss"}, "run": {"config": {"lr": NaN, "wd": Infinity, "m": -Infinity}}}'
BAD_FILES = {  # run -> (file, content, words of its one message)
    "tb-bad-regex": ("traindoc-tb.json", '{"map": {"metric_a": "train/loss"}, "ignore": ["("]}', "ignore[0]"),
    "tb-bad-toml": ("traindoc-tb.toml", '[map\nmetric_a = "train/loss"\n', "not valid TOML"),
    "tb-inf-classes": ("traindoc-tb.toml", "[run]\nnum_classes = inf\n", "run.num_classes"),
    "tb-run-list": ("traindoc-tb.json", '{"run": [1, 2]}', "run: expected a table"),
}
PY_YAML = 'lr: 0.1\nx: !!python/object/apply:os.system ["touch {marker}"]\n'
BROKEN_YAML = "lr: [0.1, 0.2\nbatch_size: 32\n"
ALIAS_YAML = "a: &a [1, 2, 3]\nb: [*a, *a, *a]\nlr: 0.01\nwhen: 2024-01-01\nblob: !!binary aGVsbG8=\n"


def _hostile_root(root, marker: str) -> dict:
    """The root; returns {run name: the finding it must get} for the runs that must be diagnosed."""
    root.mkdir()
    expect = {}
    for n in ODD_NAMES + [NON_UTF8]:
        shutil.copytree(os.path.join(SAMPLES, "overfit-mlp-adam"), os.path.join(str(root), n))
        expect[n] = "overfitting"
    for n, text, fname in (("tb-nan", NAN_TOML, "traindoc-tb.toml"), ("tb-nan-json", NAN_JSON, "traindoc-tb.json")):
        tb_run(root / n)
        (root / n / fname).write_text(text)
        expect[n] = "lr_too_high"
    for n, (fname, content, _) in BAD_FILES.items():
        tb_run(root / n, 20)
        (root / n / fname).write_text(content)
    for n, text in (("pl-python-tag", PY_YAML.format(marker=marker)), ("pl-broken-yaml", BROKEN_YAML),
                    ("pl-aliases", ALIAS_YAML)):
        lightning_run(os.path.join(str(root), n), text)
        expect[n] = "overfitting"
    return expect


def _cli(root, *flags, cache) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": ROOT, "TRAINDOC_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "traindoc.cli", "diagnose", os.fsencode(str(root)), *flags],
                          capture_output=True, cwd=ROOT, env=env, timeout=300)


def _get(url: str):
    with urllib.request.urlopen(url, timeout=120) as r:
        return r.status, r.read().decode()


def _strict(text: str):
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON token {c}"))


@pytest.mark.slow
def test_hostile_root_through_the_cli_the_catalog_and_every_page(tmp_path, monkeypatch):
    """Runs named with commas, slash-like characters, a backslash, spaces, a tab, a newline,
    unicode and bytes that are no UTF-8; `[run]` configs of NaN and infinities (TOML and JSON);
    four bad override files; Lightning hparams.yaml with a !!python tag (never executed), broken
    YAML and aliases. Every good run is diagnosed by the CLI, listed by the catalog and shown by
    every page; each bad file is one line; the non-UTF-8 name is said on the runs page."""
    from streamlit.testing.v1 import AppTest

    from tests.browser import Server
    from traindoc.catalog import Catalog

    marker = tmp_path / MARKER
    root = tmp_path / "root"
    expect = _hostile_root(root, str(marker))
    text_names = [n for n in expect if n != NON_UTF8]

    # the CLI, table and --json (each on a fresh cache: the first call reads the root itself)
    for flags in ((), ("--json",)):
        p = _cli(root, *flags, cache=tmp_path / f"cli-cache{len(flags)}")
        err = p.stderr.decode("utf-8", "replace")
        out = p.stdout.decode("utf-8", "surrogateescape")
        assert "Traceback" not in err and p.returncode == 2, err[-3000:]
        for n, (fname, _, words) in BAD_FILES.items():
            said = [ln for ln in err.splitlines() if os.path.join(str(root), n, fname) in ln]
            assert len(said) == 1 and words in said[0], (n, said)
        if flags:
            runs = {r["run"]: r for r in json.loads(out)["runs"]}
            assert set(runs) == set(expect)
            for n, rule in expect.items():
                assert rule in [f["rule"] for f in runs[n]["findings"]], n
        else:
            for n in ("a,b", "ünï-cødé ✓", "tb-nan", "pl-python-tag"):
                assert n in out
    assert not marker.exists()

    # the catalog
    monkeypatch.setenv("TRAINDOC_CACHE", str(tmp_path / "catalog-cache"))
    cat = Catalog(str(root))
    cat.refresh()
    rows, total = cat.query(limit=1000)
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == set(text_names) | set(BAD_FILES) and total == len(by_name)
    for n, (fname, _, words) in BAD_FILES.items():
        assert fname in by_name[n]["error"] and words in by_name[n]["error"]
    (odd,) = cat.odd_names()  # said, not indexed: SQLite holds UTF-8 text only
    assert odd.startswith("bytes-")

    # the pages: the run page and its JSON for every run, over HTTP
    monkeypatch.setenv("TRAINDOC_CACHE", str(tmp_path / "serve-cache"))
    server = Server(str(root), str(tmp_path / "serve.log"))
    try:
        status, text = _get(server.url + "/api/run")
        assert status == 200 and set(text_names) | set(BAD_FILES) <= set(_strict(text)["runs"])
        for n in text_names + list(BAD_FILES):
            q = urllib.parse.quote(n, safe="")
            status, text = _get(f"{server.url}/api/run?run={q}")
            v = _strict(text)
            assert status == 200, n
            if n in BAD_FILES:
                assert v["state"] == "error" and BAD_FILES[n][0] in v["error"] and BAD_FILES[n][2] in v["error"]
            else:
                assert v["state"] == "run" and expect[n] in [f["rule"] for f in v["findings"]], (n, v.get("error"))
            status, page = _get(f"{server.url}/run?run={q}")
            assert status == 200 and ('"state": "error"' if n in BAD_FILES else '"state": "run"') in page, n
        status, text = _get(server.url + "/api/run?run=" + urllib.parse.quote(os.fsencode(NON_UTF8)))
        assert status == 200 and _strict(text)["state"] in ("run", "missing")
    finally:
        server.stop()
    assert not marker.exists()

    # the Streamlit pages: runs (the non-UTF-8 name is said, not listed) and compare
    monkeypatch.setenv("TRAINDOC_ROOT", str(root))
    monkeypatch.setenv("TRAINDOC_CACHE", str(tmp_path / "app-cache"))
    at = AppTest.from_file(DASHBOARD, default_timeout=120).run()
    assert not at.exception, at.exception
    assert set(at.dataframe[0].value["run"]) == set(text_names) | set(BAD_FILES)
    assert any("not valid UTF-8" in w.value for w in at.warning)
    at = AppTest.from_file(DASHBOARD, default_timeout=120)
    wanted = ["tb-nan", "tb-nan-json", "a,b", "pl-python-tag", "tb-bad-regex"]
    at.query_params["runs"] = wanted
    at.switch_page("screens/compare.py")
    at.run()
    assert not at.exception, at.exception
    assert set(at.dataframe[0].value["run"]) == set(wanted) - {"tb-bad-regex"}
    assert any("tb-bad-regex" in w.value.replace("\\", "") and "ignore[0]" in w.value.replace("\\", "")
               for w in at.warning)
    assert not marker.exists()


# ---- found by the fuzzing (fixed after it reported them) ---------------------------------------
def test_a_run_named_with_non_utf8_bytes_is_diagnosed_on_every_call(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    for n in ("plain", NON_UTF8):
        shutil.copytree(os.path.join(SAMPLES, "overfit-mlp-adam"), os.path.join(str(root), n))
    for _ in range(2):
        p = _cli(root, "--json", cache=tmp_path / "cache")
        assert p.returncode == 0, p.stderr.decode(errors="replace")
        assert {r["run"] for r in json.loads(p.stdout.decode("utf-8", "surrogateescape"))["runs"]} == {"plain",
                                                                                                     NON_UTF8}


def test_an_hparams_yaml_that_safe_load_refuses_is_one_message(tmp_path):
    marker = tmp_path / MARKER
    root = tmp_path / "root"
    root.mkdir()
    lightning_run(os.path.join(str(root), "pl"), PY_YAML.format(marker=marker))
    p = _cli(root, cache=tmp_path / "cache")
    assert not marker.exists()
    said = [ln for ln in p.stderr.decode(errors="replace").splitlines() if "hparams.yaml" in ln]
    assert len(said) == 1, said


def test_a_lightning_run_with_infinite_num_classes_is_diagnosed(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    lightning_run(os.path.join(str(root), "pl-inf"), "num_classes: .inf\n")
    shutil.copytree(os.path.join(SAMPLES, "overfit-mlp-adam"), root / "plain")
    p = _cli(root, "--json", cache=tmp_path / "cache")
    assert "Traceback" not in p.stderr.decode(errors="replace")
    assert {r["run"] for r in json.loads(p.stdout)["runs"]} == {"pl-inf", "plain"}


def test_every_run_the_pick_list_offers_can_be_linked(tmp_path, monkeypatch):
    from traindoc.app.runview import build

    root = tmp_path / "root"
    root.mkdir()
    for n in ("plain", NON_UTF8):
        shutil.copytree(os.path.join(SAMPLES, "overfit-mlp-adam"), os.path.join(str(root), n))
    monkeypatch.setenv("TRAINDOC_ROOT", str(root))
    monkeypatch.setenv("TRAINDOC_CACHE", str(tmp_path / "cache"))
    v = json.loads(build.view(None)[0])
    assert "plain" in v["runs"]
    for name in v["runs"]:
        name.encode("utf-8")  # what encodeURIComponent needs of a name
