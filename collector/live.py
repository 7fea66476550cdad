"""Live diagnosis: the single-run rules on what the run folder holds so far, run on the writer's
background thread after a flush that wrote new data (every `every`-th such flush). It never
touches the training step: it reads the files the writer just wrote, so there is no host-device
sync and no collective. It takes at most LIVE_SHARE of one core: after a check that took d
seconds, the next begins no sooner than d / LIVE_SHARE seconds after it began. Loaded only when
`attach(..., on_finding=...)` asks for it, so a collector without it imports no rule.

Each new finding, or a finding whose severity rose, is reported once ("warn": one warning; a
callable: the user's handler; "stop": a warning, and at an `error` finding the run asks
training to stop). A finding that goes away is not raised again when it comes back
(hysteresis). What was raised is written into the run (meta.json `live_findings`, with the step
and time it was first raised)."""

from __future__ import annotations

import time
import warnings

from traindoc.reader import RunReader
from traindoc.rules import diagnose_run, severity_rank

MODES = ("warn", "stop")
#: The most of one core that live diagnosis takes: after a check that took d seconds, the next
#: waits at least d / LIVE_SHARE - d (a long run, whose rules take longer, is checked less often;
#: a short one still after every flush). What was written meanwhile is read by the next check.
LIVE_SHARE = 0.2


class LiveDiagnosis:
    """Watches one run folder; `check()` is called on the writer thread after each flush."""

    def __init__(self, run, on_finding="warn", every: int = 1):
        if not (callable(on_finding) or on_finding in MODES):
            raise ValueError(f"traindoc: on_finding must be 'warn', 'stop' or a callable, got {on_finding!r}")
        if int(every) < 1:
            raise ValueError(f"traindoc: live_every must be >= 1, got {every!r}")
        self.run = run  # the Run: its step, its sink's meta, and where a stop is asked
        self.on_finding = on_finding
        self.every = int(every)
        self.raised: dict[str, str] = {}  # rule -> the severity last reported
        self.checks = 0
        self._reader: RunReader | None = None
        self._flushes = 0
        self.next_at = 0.0  # time.monotonic() before which no check runs (LIVE_SHARE)

    def check(self) -> None:
        """Read what the last flush wrote; diagnose and report when it brought something new."""
        if time.monotonic() < self.next_at:
            return
        began = time.monotonic()
        try:
            self._check()
        finally:
            took = time.monotonic() - began
            self.next_at = began + took / LIVE_SHARE

    def _check(self) -> None:
        if self._reader is None:
            self._reader = RunReader(self.run.path)
        if self._reader.poll() == 0:
            return
        self._flushes += 1
        if self._flushes % self.every:
            return
        self.checks += 1
        for f in diagnose_run(self._reader.series()).findings:
            before = self.raised.get(f.rule)
            if before is not None and severity_rank(f.severity) <= severity_rank(before):
                continue
            self.raised[f.rule] = f.severity
            self._report(f)

    def _report(self, f) -> None:
        record = {**f.to_dict(), "raised_at_step": int(self.run.step), "raised_at": time.time()}
        meta = self.run._sink.meta if self.run._sink is not None else None
        if meta is not None:
            meta["live_findings"] = [*(meta.get("live_findings") or []), record]
        if callable(self.on_finding):
            self.on_finding(f)
        else:
            warnings.warn(f"traindoc: {self.run.name}: {f.rule} ({f.severity}, steps {f.steps[0]}-{f.steps[1]}): "
                          f"{f.advice}", RuntimeWarning, stacklevel=1)
        if self.on_finding == "stop" and f.severity == "error":
            self.run.request_stop(record)
