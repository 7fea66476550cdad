"""`traindoc serve ROOT`: start the Streamlit dashboard on ROOT, on loopback unless told otherwise."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys

APP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "app", "main.py")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def command(root: str, host: str, port: int, headless: bool) -> list[str]:
    """The streamlit command line: no usage statistics, no file watcher, no dev mode."""
    return [sys.executable, "-m", "streamlit", "run", APP,
            "--server.address", host, "--server.port", str(port),
            "--server.headless", "true" if headless else "false",
            "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none",
            "--global.developmentMode", "false",
            "--client.toolbarMode", "minimal",
            "--theme.base", "light"]


def serve(root: str, host: str = "127.0.0.1", port: int = 8501, headless: bool = False) -> int:
    """Run the dashboard until interrupted; returns the exit code."""
    if not os.path.isdir(root):
        print(f"traindoc: not a folder: {root}", file=sys.stderr)
        return 2
    if not is_loopback(host):
        print(f"traindoc: warning: serving on {host}, not loopback: anyone who can reach this machine "
              "can read these runs", file=sys.stderr)
    env = {**os.environ, "TRAINDOC_ROOT": os.path.realpath(root), "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    print(f"traindoc: serving {os.path.realpath(root)} at http://{host}:{port}", flush=True)
    try:
        return subprocess.call(command(root, host, port, headless), env=env)
    except KeyboardInterrupt:
        return 0
