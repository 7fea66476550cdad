"""The built wheel, installed for real (not editable) in a fresh virtual environment: one
`traindoc` namespace, every file the app loads by path, and a live chart drawn in chromium."""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import sysconfig
import textwrap
import zipfile

import pytest

from tests.browser import ROOT, free_port, launch, require_chromium, wait_for_charts, wait_for_http

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TRAIN = textwrap.dedent("""
    import sys, time, torch, torch.nn.functional as F
    import traindoc
    from traindoc import collector
    print(traindoc.__file__, flush=True)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    run = collector.attach(model, opt, root=sys.argv[1], name="wheel-live", log_every=5, flush_secs=0.2)
    x, y = torch.randn(4096, 8), torch.randint(0, 3, (4096,))
    for i in range(100000):
        b = (i * 32) % 4000
        out = model(x[b:b + 32]); loss = F.cross_entropy(out, y[b:b + 32])
        opt.zero_grad(); loss.backward(); opt.step()
        run.log_train(loss, output=out, target=y[b:b + 32])
        time.sleep(0.01)
""")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from this checkout, installed with pip into a fresh venv. Its
    dependencies come from the test environment through a path entry, never its traindoc."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp / "dist"), ROOT], check=True, capture_output=True)
    (wheel,) = glob.glob(str(tmp / "dist" / "traindoc-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], check=True,
                   capture_output=True)
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(site, "zz_test_deps.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")  # torch, streamlit, ... of the test venv
    return wheel, venv, site


def test_wheel_holds_one_namespace_and_the_app_files(installed):
    wheel, _, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"traindoc"}  # no top-level `app` or `collector` to collide with a user's own
    for needed in ("traindoc/app/main.py", "traindoc/app/dashboard.py", "traindoc/app/runview/page.html",
                   "traindoc/app/runview/run.js", "traindoc/app/runview/run.css", "traindoc/app/screens/runs.py",
                   "traindoc/collector/run.py", "traindoc/collector/lightning.py"):
        assert needed in names, needed


def test_installed_wheel_imports_from_its_own_site(installed, tmp_path):
    _, venv, site = installed
    code = ("import traindoc, traindoc.collector, traindoc.app.runview as v, os; "
            "print(traindoc.__file__); print(os.path.isfile(os.path.join(v.HERE, 'page.html')))")
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, check=True)
    path, has_page = out.stdout.split()
    assert path.startswith(site) and has_page == "True"


def test_installed_wheel_serves_a_live_chart(installed, tmp_path):
    """A run written live by the installed collector, served by the installed `traindoc serve`
    (outside the checkout), draws its live chart in chromium."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    _, venv, site = installed
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    root = tmp_path / "runs"
    root.mkdir()
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    trainer = subprocess.Popen([str(venv / "bin" / "python"), str(script), str(root)], stdout=subprocess.PIPE,
                               text=True, cwd=tmp_path, env=env)
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen([str(venv / "bin" / "traindoc"), "serve", str(root), "--headless", "--port", str(port)],
                              cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert trainer.stdout.readline().strip().startswith(site)  # the installed collector
        url = f"http://127.0.0.1:{port}"
        wait_for_http(url + "/_stcore/health", server, log_path=str(tmp_path / "serve.log"))
        with sync_playwright() as pw:
            browser = launch(pw)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url + "/run?run=wheel-live")
            caption = page.get_by_text(re.compile(r"status live · step \d+"))
            caption.wait_for(timeout=30000)
            wait_for_charts(page, 2)
            page.screenshot(path=str(tmp_path / "wheel-live.png"), full_page=True)
            scripts = page.evaluate("() => Array.from(document.scripts).map(s => s.src).filter(Boolean)")
            assert any("/assets/plotly-" in s for s in scripts) and any("/assets/run.js" in s for s in scripts)
            step = int(re.search(r"step (\d+)", caption.inner_text()).group(1))
            page.wait_for_function(f"() => /step (\\d+)/.exec(document.getElementById('facts').innerText)[1] > {step}",
                                   timeout=30000)  # it follows the run by itself
            browser.close()
    finally:
        trainer.kill()
        server.terminate()
        server.wait(15)
        trainer.wait()
        log.close()


def _source_folder(package: str, dirs: dict) -> str:
    """Where a package's files live in the checkout, by the build's package-dir mapping."""
    head = next(p for p in sorted(dirs, key=len, reverse=True) if package == p or package.startswith(p + "."))
    return os.path.join(ROOT, dirs[head], *[x for x in package[len(head):].split(".") if x])


def test_every_package_data_pattern_names_real_files():
    """package-data once named files that did not exist (app/.streamlit/*.toml)."""
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        tool = tomllib.load(f)["tool"]["setuptools"]
    dirs = tool["package-dir"]
    for package, patterns in tool["package-data"].items():
        for pattern in patterns:
            assert glob.glob(os.path.join(_source_folder(package, dirs), pattern)), (package, pattern)
    for package in tool["packages"]:  # and every listed package exists where the mapping says
        assert os.path.isdir(_source_folder(package, dirs)), package


def test_every_subpackage_is_in_the_wheel():
    """A subpackage missing from [tool.setuptools] packages is left out of the wheel (the
    catalog package once was: the installed `traindoc serve` could not start)."""
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        tool = tomllib.load(f)["tool"]["setuptools"]
    listed = set(tool["packages"])
    for package, folder in tool["package-dir"].items():
        base = os.path.join(ROOT, folder)
        for dirpath, dirnames, files in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith((".", "__"))]
            if "__init__.py" in files:
                rel = os.path.relpath(dirpath, base)
                name = package if rel == "." else package + "." + rel.replace(os.sep, ".")
                assert name in listed, name
