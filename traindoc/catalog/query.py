"""The runs table's filter language in SQL: a text that matches part of a run's name, its
hyperparameters or a rule id; shown statuses (`traindoc.status`); a sort column."""

from __future__ import annotations

from ..status import STALE_SECS, status_sql

ORDERS = ("name", "status", "updated", "steps", "best_val_acc", "best_step", "best_val_loss", "findings")


def where(text: str = "", statuses: tuple = (), stale_secs: float = STALE_SECS,
          now: float | None = None) -> tuple[str, list]:
    """('WHERE ...' or '', arguments) for rows matching `text` and any of `statuses`."""
    parts, args = [], []
    if text:
        parts.append("(lower(name) LIKE ? OR lower(hparams) LIKE ? OR lower(findings) LIKE ?)")
        like = f"%{text.lower()}%"
        args += [like, like, like]
    if statuses:
        conds = []
        for st in statuses:
            cond, more = status_sql(st, now, stale_secs)
            conds.append(cond)
            args += more
        parts.append("(" + " OR ".join(conds) + ")")
    return (f"WHERE {' AND '.join(parts)}" if parts else ""), args


def order_by(order: str, descending: bool) -> str:
    """ORDER BY of a known column (unknown: by name), empty values last, then by name."""
    col = order if order in ORDERS else "name"
    return f"ORDER BY {col} IS NULL, {col} {'DESC' if descending else 'ASC'}, name"
