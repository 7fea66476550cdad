"""The house is one-way: no import circle inside traindoc/, the storage layer below the index,
rules on the series alone, and a collector that loads neither the catalog nor the rules."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: installed name -> folder in this repository
PACKAGES = {"traindoc": "traindoc", "traindoc.collector": "collector", "traindoc.app": "app"}


def _modules() -> dict[str, str]:
    out = {}
    for pkg, folder in PACKAGES.items():
        for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(dirpath, f), os.path.join(ROOT, folder))[:-3]
                    parts = [p for p in rel.split(os.sep) if p != "__init__"]
                    out[".".join([pkg, *parts])] = os.path.join(dirpath, f)
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of this project it imports at any level (functions included). `from
    pkg import sub` is an edge to pkg.sub only, as Python imports it after pkg is loaded."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.endswith("__init__.py")
        here = mod if is_pkg else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[:len(here.split(".")) - node.level + 1]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                subs = [f"{src}.{a.name}" for a in node.names if f"{src}.{a.name}" in mods]
                targets = subs if len(subs) == len(node.names) else [src, *subs]
            else:
                continue
            graph[mod] |= {t for t in targets if t in mods and t != mod}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_traindoc():
    graph = import_graph()
    assert "traindoc.catalog" in graph and graph["traindoc.diagnose"], "the graph was not read"
    assert cycles(graph) == []


#: Modules a layer loads only on a user's request, outside its import-time graph.
OPT_IN = {"traindoc.collector.live"}


def _reaches_without(graph, start: str, skip: set) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        for n in graph[m]:
            if n not in seen and n not in skip:
                seen.add(n)
                todo.append(n)
    return seen


def _reaches(graph, start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        for n in graph[m]:
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen


@pytest.mark.parametrize("low, forbidden", [
    ("traindoc.remote", ("traindoc.catalog", "traindoc.rules", "traindoc.reader", "traindoc.discovery")),
    ("traindoc.reader", ("traindoc.remote", "traindoc.catalog", "traindoc.rules")),
    ("traindoc.series", ("traindoc.reader", "traindoc.tb", "traindoc.logs", "traindoc.rules")),
    ("traindoc.rules", ("traindoc.reader", "traindoc.discovery", "traindoc.catalog", "traindoc.tb", "traindoc.logs",
                        "traindoc.remote")),
    ("traindoc.discovery", ("traindoc.rules", "traindoc.catalog", "traindoc.diagnose")),
    ("traindoc.catalog", ("traindoc.diagnose", "traindoc.cli", "traindoc.serve", "traindoc.app")),
    ("traindoc.collector", ("traindoc.catalog", "traindoc.rules", "traindoc.discovery", "traindoc.diagnose",
                            "traindoc.app")),
])
def test_layers_import_only_downward(low, forbidden):
    graph = import_graph()
    # live diagnosis runs the rules in the training process: loaded only when asked for
    # (attach(on_finding=...)), which test_a_run_without_live_diagnosis_loads_no_rules checks
    start = {low} | {m for m in graph if m.startswith(low + ".")} - OPT_IN
    below = {n for m in start for n in {m} | _reaches_without(graph, m, OPT_IN)}
    bad = sorted(m for m in below if any(m == f or m.startswith(f + ".") for f in forbidden))
    assert bad == [], f"{low} reaches {bad}"


def test_importing_the_collector_loads_no_index_and_no_rules():
    code = ("import sys, torch; before = set(sys.modules); import traindoc.collector; "
            "new = set(sys.modules) - before; "
            "print(sorted(m for m in new if m in ('sqlite3', 'multiprocessing', 'concurrent.futures.process') "
            "or m.startswith(('traindoc.catalog', 'traindoc.rules', 'traindoc.diagnose', 'traindoc.app', "
            "'pandas', 'plotly', 'streamlit'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_run_without_live_diagnosis_loads_no_rules(tmp_path):
    code = ("import sys, torch; from traindoc import collector; m = torch.nn.Linear(2, 2); "
            "o = torch.optim.SGD(m.parameters(), lr=0.1); "
            f"r = collector.attach(m, o, root={str(tmp_path)!r}, name='x'); "
            "[(o.zero_grad(), m(torch.randn(4, 2)).sum().backward(), o.step()) for _ in range(60)]; r.close(); "
            "print(sorted(k for k in sys.modules if k.startswith(('traindoc.rules', 'traindoc.catalog', 'sqlite3'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
