"""Sibling re-judgement: the findings runs in one folder add to each other (sweeps, a task's
ceiling), from the digests kept in their rows, never by reading the runs again."""

from __future__ import annotations

import json

from ..jsonsafe import dumps
from ..rules import DEFAULT, Diagnosis, together
from .summary import finding


def judge_together(connect, folders: set) -> None:
    """Re-apply sibling evidence in `folders` (where something changed); `connect()` opens the
    catalog's database."""
    if not folders:
        return
    with connect() as db:
        marks = ",".join("?" * len(folders))
        rows = db.execute(f"SELECT name, row, digest, final FROM runs WHERE folder IN ({marks}) "
                          "AND status != 'unreadable'", tuple(folders)).fetchall()
    if not rows:
        return
    digests = [json.loads(d) if d else None for _, _, d, _ in rows]
    own = [json.loads(r) for _, r, _, _ in rows]
    study = together.study_digests(digests)
    diagnoses = [Diagnosis([finding(f) for f in o.get("own", [])], o.get("skipped", [])) for o in own]
    if study.sweeps or study.tasks:
        diagnoses = together.apply(study, diagnoses, DEFAULT)
    updates = []
    for (name, _, _, old), d in zip(rows, diagnoses):
        final = dumps([f.to_dict() for f in d.findings])
        if final != old:
            updates.append((final, dumps([f.rule for f in d.findings]), name))
    if updates:
        with connect() as db:
            db.execute("BEGIN")
            db.executemany("UPDATE runs SET final = ?, findings = ? WHERE name = ?", updates)
            db.execute("COMMIT")
