"""`traindoc serve ROOT`: start the Streamlit dashboard on ROOT, on loopback unless told otherwise."""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import webbrowser

from . import remote

APP = os.path.join(os.path.dirname(importlib.util.find_spec("traindoc.app").origin), "main.py")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def command(root: str, host: str, port: int) -> list[str]:
    """The streamlit command line: no usage statistics, no file watcher, no dev mode.

    Streamlit itself always runs headless: otherwise, on a fresh machine, it stops to
    ask for an e-mail address on the terminal. `serve` opens the browser instead."""
    return [sys.executable, "-m", "streamlit", "run", APP,
            "--server.address", host, "--server.port", str(port),
            "--server.headless", "true",
            "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none",
            "--global.developmentMode", "false",
            "--client.toolbarMode", "minimal",
            "--theme.base", "light"]


def serve(root: str, host: str = "127.0.0.1", port: int = 8501, headless: bool = False) -> int:
    """Run the dashboard until interrupted; returns the exit code. `root` may be an s3:// URL:
    the dashboard then reads a local mirror of it, synced every few seconds."""
    extra = {}
    if remote.is_remote(root):
        try:
            extra["TRAINDOC_REMOTE"] = root
            root = remote.local_root(root)
        except Exception as exc:  # noqa: BLE001 - one clear line, whatever the client raised
            print(f"traindoc: cannot read {extra['TRAINDOC_REMOTE']}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
    if not os.path.isdir(root):
        print(f"traindoc: not a folder: {root}", file=sys.stderr)
        return 2
    if not is_loopback(host):
        print(f"traindoc: warning: serving on {host}, not loopback: anyone who can reach this machine "
              "can read these runs", file=sys.stderr)
    env = {**os.environ, "TRAINDOC_ROOT": os.path.realpath(root), "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
           **extra}
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    print(f"traindoc: serving {extra.get('TRAINDOC_REMOTE') or os.path.realpath(root)} at {url}", flush=True)
    proc = subprocess.Popen(command(root, host, port), env=env, preexec_fn=_die_with_parent)
    if not headless:  # after the fork: preexec_fn must not run beside other threads
        threading.Thread(target=_open_when_up, args=(url,), daemon=True).start()
    return _wait_for(proc)


def _die_with_parent() -> None:
    """In the streamlit child, before exec: on Linux, get SIGTERM when `traindoc serve` dies,
    even by SIGKILL, so that no server is left running without its parent."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except Exception:
        pass


def _wait_for(proc: subprocess.Popen) -> int:
    """Wait for streamlit; a SIGTERM or SIGHUP sent to us is passed on to it, and Ctrl-C
    (which the terminal sends to both) gives it time to shut down."""
    def forward(signum, frame):
        if proc.poll() is None:
            proc.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            signal.signal(sig, forward)
        except (ValueError, OSError):  # not the main thread, or no such signal here
            pass
    try:
        code = proc.wait()
        return 0 if code in (-signal.SIGTERM, -signal.SIGHUP, -signal.SIGINT) else code
    except KeyboardInterrupt:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        except KeyboardInterrupt:  # a second Ctrl-C: stop now
            proc.kill()
        proc.wait()
        return 0


def _open_when_up(url: str, timeout: float = 60.0) -> None:
    """Open the dashboard in the user's browser once the server answers (if there is a browser)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=1):
                webbrowser.open(url)
                return
        except OSError:
            time.sleep(0.3)
