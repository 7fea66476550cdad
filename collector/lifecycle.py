"""Closing runs that the script did not close: at exit, on SIGTERM, after a crash."""

from __future__ import annotations

import atexit
import signal
import sys
import threading
import weakref

from traindoc import format as fmt

_open: "weakref.WeakSet" = weakref.WeakSet()
_installed = False
_crash: list = []  # the uncaught exception, if any, seen by our excepthook


def register(run) -> None:
    """Track `run` so that it is flushed and marked when the process ends."""
    global _installed
    _open.add(run)
    if not _installed:
        _installed = True
        atexit.register(_at_exit)
        _chain_excepthook()
        _install_sigterm()


def unregister(run) -> None:
    """Forget a run that was closed normally."""
    _open.discard(run)


def _close_all(status: str, reason: str | None) -> None:
    for run in list(_open):
        try:
            run.close(status, reason=reason, wait=False)  # no waiting on other ranks here
        except Exception:
            pass


def _at_exit() -> None:
    if _crash:
        exc = _crash[0]
        _close_all(fmt.STATUS_CRASHED, f"{type(exc).__name__}: {exc}")
    else:
        _close_all(fmt.STATUS_FINISHED, "process exited without close()")


def _chain_excepthook() -> None:
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        _crash.append(exc)
        previous(exc_type, exc, tb)

    sys.excepthook = hook


def _install_sigterm() -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except (ValueError, OSError):
        return

    def on_sigterm(signum, frame):
        _close_all(fmt.STATUS_CRASHED, "SIGTERM")
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)

    try:
        signal.signal(signal.SIGTERM, on_sigterm)
    except (ValueError, OSError):
        pass
