"""What a run's status is shown as, decided once for the pages (from a run's meta) and for the
catalog's filters (in SQL over its rows): live, stale, finished, crashed, ended, no end marker,
unreadable or unknown."""

from __future__ import annotations

import time

from . import format as fmt

#: A running collector run that has not written (not even its heartbeat) for this long is stale.
STALE_SECS = fmt.LIVE_SECS
LIVE, STALE, UNKNOWN, UNREADABLE = "live", "stale", "unknown", "unreadable"
#: Statuses a run's meta may hold as they are shown.
KEPT = (fmt.STATUS_FINISHED, fmt.STATUS_CRASHED, *fmt.ARCHIVED)
SHOWN = (LIVE, STALE, *KEPT, UNREADABLE, UNKNOWN)


def last_alive(meta: dict) -> float:
    """When the run last said it was alive: its heartbeat, else its start (0 when neither is a time)."""
    try:
        return float(meta.get("updated") or meta.get("start_time") or 0)
    except (TypeError, ValueError):
        return 0.0


def status_of(meta: dict, now: float | None = None, stale_secs: float = STALE_SECS) -> str:
    """live or stale for a run that says it is running (by its last sign of life); its own status
    when it is one of KEPT (a log of another tool says ended / no end marker, as its reader
    decided); otherwise unknown."""
    status = meta.get("status")
    if status == fmt.STATUS_RUNNING:
        return LIVE if (now or time.time()) - last_alive(meta) < stale_secs else STALE
    if status == UNREADABLE:
        return UNREADABLE
    return status if status in KEPT else UNKNOWN


def status_sql(shown: str, now: float | None = None, stale_secs: float = STALE_SECS) -> tuple[str, list]:
    """(SQL condition, arguments) over the catalog's `status` and `updated` columns that holds
    exactly for rows `status_of` shows as `shown`."""
    fresh = (now or time.time()) - stale_secs
    if shown == LIVE:
        return "(status = ? AND updated >= ?)", [fmt.STATUS_RUNNING, fresh]
    if shown == STALE:
        return "(status = ? AND (updated IS NULL OR updated < ?))", [fmt.STATUS_RUNNING, fresh]
    if shown == UNKNOWN:
        known = [fmt.STATUS_RUNNING, *KEPT, UNREADABLE]
        return f"(status IS NULL OR status NOT IN ({','.join('?' * len(known))}))", known
    return "(status = ?)", [shown]
