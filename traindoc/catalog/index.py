"""The catalog of one root: its SQLite table, refreshed by reading only runs that changed."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass

from .. import paths
from ..discovery import InputError, RunReport, name_runs, scan
from ..jsonsafe import dumps
from ..status import STALE_SECS
from .changes import SETTLED, quick, signature, unchanged, went_quiet
from .pool import read_all
from .query import order_by, where
from .siblings import judge_together
from .summary import finding, is_text, short_config, shown
from .version import SCHEMA, code_version


@dataclass
class Refresh:
    """What one refresh did."""

    listed: int = 0
    read: int = 0
    removed: int = 0
    seconds: float = 0.0


_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


class Catalog:
    """The index of one root. Safe to share between threads (one refresh at a time per root) and
    processes (SQLite's own locking)."""

    def __init__(self, root: str, cache: str | None = None):
        self.root = os.path.realpath(root)
        self.db_path = paths.catalog_db(self.root, cache)
        with _LOCKS_GUARD:
            self._lock = _LOCKS.setdefault(self.db_path, threading.Lock())
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT)")
            got = db.execute("SELECT value FROM info WHERE key = 'schema'").fetchone()
            if got is None or got[0] != str(SCHEMA):  # an older layout: start this root's index afresh
                db.execute("DROP TABLE IF EXISTS runs")
                db.execute("DELETE FROM info")
                db.execute("INSERT INTO info VALUES ('schema', ?)", (str(SCHEMA),))
            db.execute("""CREATE TABLE IF NOT EXISTS runs (
                name TEXT PRIMARY KEY, path TEXT, folder TEXT, sig TEXT, quick INTEGER, version TEXT, status TEXT,
                updated REAL,
                steps INTEGER, best_val_acc REAL, best_step INTEGER, best_val_loss REAL, hparams TEXT,
                findings TEXT, row TEXT, digest TEXT, final TEXT)""")
            db.execute("CREATE INDEX IF NOT EXISTS runs_folder ON runs(folder)")
            db.execute("INSERT OR REPLACE INTO info VALUES ('root', ?)", (shown(self.root),))

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)
        db.execute("PRAGMA synchronous=NORMAL")
        return _Closing(db)

    # ---- refresh ---------------------------------------------------------------------------
    def refresh(self, progress=None, workers: int | None = None, folder: str | None = None) -> Refresh:
        """Bring the index up to date with the root, or only the runs directly in `folder` (what a
        run's siblings need: a run page opened from a link does not index the whole root first).
        `progress(done, total)` is called while runs are read. Returns what was done."""
        t0 = time.perf_counter()
        with self._lock:
            out = self._refresh(progress, workers, folder)
        out.seconds = time.perf_counter() - t0
        return out

    def _refresh(self, progress, workers, folder) -> Refresh:
        version = code_version()
        with self._db() as db:
            known = {n: (s, v, p, q, st, up) for n, s, v, p, q, st, up in
                     db.execute("SELECT name, sig, version, path, quick, status, updated FROM runs")}
            skeleton = self._info(db, "skeleton")
            odd_before = self._info(db, "odd_names") or []
        if skeleton is not None and known and unchanged(skeleton):
            listed = {n: k[2] for n, k in known.items()}  # no folder changed: the same runs
            others = None
            odd_shown = odd_before  # the index never held them: what the last walk found still stands
        else:
            listed, others, skeleton = self._scan()
            odd = [n for n, p in listed.items() if not (is_text(n) and is_text(p))]
            for n in odd:  # SQLite holds text as UTF-8: these are reported, not indexed
                del listed[n]
            odd_shown = [shown(n) for n in odd]
        if folder is not None:  # one folder only: what the root holds elsewhere stays as the index has it
            folder = os.path.normpath(folder)
            listed = {n: p for n, p in listed.items() if os.path.dirname(os.path.normpath(p)) == folder}
            known = {n: k for n, k in known.items() if os.path.dirname(os.path.normpath(k[2])) == folder}
            others = None  # the skeleton says "every run is indexed": not true after a part
        todo = []
        for name, path in listed.items():
            old = known.get(name)
            if old is None or old[1] != version:
                todo.append((name, path))
            elif old[4] in SETTLED and old[3] is not None:
                if quick(path) != old[3]:  # a finished run changes only by new files or a rewritten meta.json
                    todo.append((name, path))
            elif old[0] != signature(path) or went_quiet(old):
                todo.append((name, path))
        gone = [n for n in known if n not in listed]
        rows = read_all([p for _, p in todo], progress, workers)
        with self._db() as db:
            db.execute("BEGIN")
            if folder is None:
                db.execute("INSERT OR REPLACE INTO info VALUES ('odd_names', ?)", (dumps(odd_shown),))
            if others is not None:
                db.execute("INSERT OR REPLACE INTO info VALUES ('not_runs', ?)",
                           (dumps([os.path.relpath(o, self.root).replace(os.sep, "/") for o in others]),))
                db.execute("INSERT OR REPLACE INTO info VALUES ('skeleton', ?)", (dumps(skeleton),))
            for n in gone:
                db.execute("DELETE FROM runs WHERE name = ?", (n,))
            for (name, path), r in zip(todo, rows):
                db.execute("INSERT OR REPLACE INTO runs (name, path, folder, sig, quick, version, status, updated, "
                           "steps, best_val_acc, best_step, best_val_loss, hparams, findings, row, digest, final) "
                           "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", (
                               name, path, os.path.dirname(os.path.normpath(path)), r["sig"], r.get("quick"),
                               version, r.get("status", "unreadable") if not r.get("error") else "unreadable",
                               r.get("updated"), r.get("steps"), r.get("best_val_acc"), r.get("best_step"),
                               r.get("best_val_loss"), short_config(r.get("config") or {}),
                               dumps([f["rule"] for f in r.get("own", [])]),
                               dumps({k: v for k, v in r.items() if k != "digest"}), dumps(r.get("digest")),
                               dumps(r.get("own", []))))
            db.execute("COMMIT")
        touched = {os.path.dirname(os.path.normpath(p)) for _, p in todo} | \
            {os.path.dirname(os.path.normpath(known[n][2])) for n in gone}
        if todo or gone:
            judge_together(self._db, touched)
        return Refresh(listed=len(listed), read=len(todo), removed=len(gone))

    @staticmethod
    def _info(db, key: str):
        got = db.execute("SELECT value FROM info WHERE key = ?", (key,)).fetchone()
        return json.loads(got[0]) if got else None

    def _scan(self) -> tuple[dict, list, dict]:
        """(name -> path of every run, what is not a run, the skeleton): a full walk of the root.
        The skeleton is every folder walked that is not a run or inside one, with its mtime: as
        long as none of them changed, no run appeared or went, and a reopen needs no walk."""
        try:
            found, others = scan(self.root)
        except InputError:
            found, others = [], []
        listed = name_runs(found, self.root)
        runs = set(found)
        skeleton = {}
        base = self.root.rstrip(os.sep).count(os.sep)
        for dirpath, dirnames, _ in os.walk(self.root, followlinks=False):
            if dirpath in runs:
                dirnames[:] = []
                continue
            try:
                skeleton[dirpath] = os.stat(dirpath).st_mtime_ns
            except OSError:
                pass
            deep = dirpath.count(os.sep) - base >= 6
            dirnames[:] = [] if deep else [d for d in dirnames if os.path.join(dirpath, d) not in runs]
        return listed, others, skeleton

    # ---- reading the index -----------------------------------------------------------------
    def count(self) -> int:
        with self._db() as db:
            return db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]

    def odd_names(self) -> list[str]:
        """Runs the last refresh found but could not index: names that are not valid UTF-8 (shown
        with their odd bytes escaped). `traindoc diagnose` reads such a root without the catalog."""
        with self._db() as db:
            return self._info(db, "odd_names") or []

    def not_runs(self) -> list[str]:
        """What the last refresh found under the root that is no run (relative names)."""
        with self._db() as db:
            return self._info(db, "not_runs") or []

    def query(self, text: str = "", statuses: tuple = (), order: str = "name", descending: bool = False,
              limit: int = 50, offset: int = 0, stale_secs: float = STALE_SECS) -> tuple[list[dict], int]:
        """(one page of rows, how many rows match): filtered and sorted in the index. `statuses`
        are shown statuses: live, stale (running, but silent for `stale_secs`), finished, crashed,
        unreadable, unknown; `text` matches a part of the name, the hyperparameters or a rule id."""
        cond, args = where(text, statuses, stale_secs)
        with self._db() as db:
            total = db.execute(f"SELECT COUNT(*) FROM runs {cond}", args).fetchone()[0]
            cur = db.execute(f"SELECT name, path, status, updated, steps, best_val_acc, best_step, best_val_loss, "
                             f"hparams, findings, row, final FROM runs {cond} "
                             f"{order_by(order, descending)} LIMIT ? OFFSET ?",
                             args + [int(limit), int(offset)])
            out = []
            for (name, path, status, updated, steps, bva, bstep, bvl, hp, findings, row, final) in cur:
                r = json.loads(row)
                out.append({"name": name, "path": path, "status": status, "updated": updated, "steps": steps,
                            "best_val_acc": bva, "best_step": bstep, "best_val_loss": bvl, "hparams": hp,
                            "findings": json.loads(findings), "final": json.loads(final or "[]"),
                            "error": r.get("error"), "diagnosed": r.get("diagnosed", False),
                            "skipped": r.get("skipped", []), "found": r.get("found", []),
                            "spikes": r.get("spikes", []),
                            "problems": r.get("problems", []), "meta": r.get("meta", {})})
        return out, total

    def path_of(self, name: str) -> str | None:
        """The path a run of this name was indexed from, or None: names are only ever looked up
        here, never joined onto the root."""
        with self._db() as db:
            got = db.execute("SELECT path FROM runs WHERE name = ?", (name,)).fetchone()
        return got[0] if got else None

    def findings_of(self, name: str) -> list | None:
        """The run's findings, its own and its siblings' (Finding objects), or None if not indexed."""
        with self._db() as db:
            got = db.execute("SELECT final, row FROM runs WHERE name = ?", (name,)).fetchone()
        if got is None or json.loads(got[1]).get("error"):
            return None
        return [finding(f) for f in json.loads(got[0] or "[]")]

    def reports(self) -> list:
        """Every run as a `discovery.RunReport`, by name (what `traindoc diagnose ROOT` prints)."""
        rows, _ = self.query(limit=1 << 30)
        out = []
        for r in rows:
            if r["error"]:
                out.append(RunReport(r["name"], r["path"], error=r["error"]))
                continue
            out.append(RunReport(r["name"], r["path"], [finding(f) for f in r["final"]], warnings=r["problems"],
                                 skipped=r["skipped"], diagnosed=r["diagnosed"], found=r["found"],
                                 spikes=r["spikes"]))
        return out


class _Closing:
    """A connection used as `with`: closed on exit (sqlite3's own context manager only commits)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        return self.db

    def __exit__(self, *exc) -> None:
        self.db.close()
