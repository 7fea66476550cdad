"""The run catalog: a persistent per-run summary index of a root, in SQLite in the cache folder.

Opening the runs page, or `traindoc diagnose ROOT`, used to read and diagnose every run each
time. The catalog keeps, per run: its status, steps, last update, best validation figures,
hyperparameters, its own findings and those its siblings add (sweeps, a task's ceiling), what
the rules could not judge, and a signature of what was read (each file's size and mtime). A
refresh lists the root, compares signatures, and reads again only the runs whose files
changed; a run whose files did not change is never read again, finished or not. Everything a
sibling judgement needs is kept as a small JSON digest (`rules.together.digest`), so judging
runs together never re-reads the siblings.

One database per root (`$TRAINDOC_CACHE/catalog/<hash of the root>.sqlite`, default
`~/.cache/traindoc`). Rows carry the version of the code that wrote them (a hash of the
reader and rule sources): new rules re-index everything once. The database is only a
cache: deleting it costs one full index.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import multiprocessing
import os
import sqlite3
import threading
import time
from dataclasses import dataclass

from . import format as fmt

SCHEMA = 2
PARALLEL_FROM = 64  # with this many runs to read, read them in worker processes
THIN = 64  # points kept per digest curve (bucket minima)


def cache_root() -> str:
    """`$TRAINDOC_CACHE`, or ~/.cache/traindoc."""
    return os.environ.get("TRAINDOC_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "traindoc")


_CODE_VERSION: str | None = None


def code_version() -> str:
    """A hash of the sources that decide what a row holds (readers, rules): new code, new rows."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        here = os.path.dirname(os.path.abspath(__file__))
        h = hashlib.sha1(f"schema {SCHEMA}".encode())
        for sub in ("", "rules", "tb"):
            folder = os.path.join(here, sub)
            for name in sorted(os.listdir(folder)):
                if name.endswith(".py"):
                    with open(os.path.join(folder, name), "rb") as f:
                        h.update(name.encode() + f.read())
        _CODE_VERSION = h.hexdigest()[:16]
    return _CODE_VERSION


def _parent_overrides(path: str) -> str:
    """Size and mtime of the override files in a run's parent folder, which its reader also reads."""
    parent = os.path.dirname(os.path.normpath(path))
    out = []
    for name in fmt.OVERRIDE_FILES:
        try:
            s = os.stat(os.path.join(parent, name))
        except OSError:
            continue
        out.append(f"../{name}:{s.st_size}:{s.st_mtime_ns}")
    return ";".join(out)


def signature(path: str) -> str:
    """Size and mtime of every file of a run (three folder levels deep: TensorBoard split folders,
    Hugging Face checkpoints) and of the override files beside it, as one short hash. The same
    files unchanged give the same signature."""
    h = hashlib.sha1()
    try:
        st = os.stat(path)
    except OSError:
        return "gone"
    beside = _parent_overrides(path)
    if not os.path.isdir(path):
        return f"{st.st_size}:{st.st_mtime_ns}" + (f";{beside}" if beside else "")
    h.update(beside.encode("utf-8", "replace"))
    stack = [(path, 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    if depth < 2:
                        stack.append((e.path, depth + 1))
                    continue
                s = e.stat(follow_symlinks=False)
            except OSError:
                continue
            h.update(f"{os.path.relpath(e.path, path)}\0{s.st_size}\0{s.st_mtime_ns}\n".encode("utf-8", "replace"))
    return h.hexdigest()[:20]


#: Statuses of runs that no longer write: only new files or a rewritten meta.json (a resume)
#: change them, and either changes their folder's mtime, so one stat tells.
SETTLED = ("finished", "crashed")


def _quick(path: str) -> int | None:
    """The mtime of a run's folder (or file): enough to tell that a settled run did not change."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _unchanged(skeleton: dict) -> bool:
    """True when every folder of the skeleton still has the mtime it had."""
    for path, mtime in skeleton.items():
        try:
            if os.stat(path).st_mtime_ns != mtime:
                return False
        except OSError:
            return False
    return True


def _is_text(s: str) -> bool:
    """True for a name SQLite can hold as text (no undecodable bytes from the file system)."""
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _shown(s: str) -> str:
    """A file-system name as text, its undecodable bytes escaped (for messages, never for reading)."""
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _finding(d: dict):
    from .rules import Finding

    return Finding(d["rule"], d["severity"], tuple(d["steps"]), d["evidence"], d["advice"])


def _json(x) -> str:
    return json.dumps(x, default=_plain_json)


def _plain_json(v):
    if hasattr(v, "item"):
        return v.item()
    if isinstance(v, (set, tuple)):
        return list(v)
    return str(v)


def index_one(path: str) -> dict:
    """Read and diagnose one run (alone): the catalog row's content. Errors become the row's `error`."""
    from .diagnose import load
    from .reader import RunFormatError
    from .rules import diagnose_run, series_found, together

    sig, quick = signature(path), _quick(path)
    try:
        run, problems = load(path)
    except (RunFormatError, OSError, ValueError) as exc:
        return {"sig": sig, "quick": None, "error": str(exc)}
    d = diagnose_run(run)
    meta = run.meta
    va = run.get(fmt.VAL_ACC).dropna() if run.has(fmt.VAL_ACC) else None
    vl = run.get(fmt.VAL_LOSS).dropna() if run.has(fmt.VAL_LOSS) else None
    updated = meta.get("updated") or meta.get("end_time")
    if not updated:
        try:
            updated = os.stat(path).st_mtime
        except OSError:
            updated = None
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    return {
        "sig": sig, "quick": quick if meta.get("source", "traindoc") == "traindoc" else None, "error": None,
        "status": meta.get("status") or "unknown", "updated": updated,
        "steps": run.last_step,
        "best_val_acc": float(va.max()) if va is not None and len(va) else None,
        "best_step": int(va.idxmax()) if va is not None and len(va) else None,
        "best_val_loss": float(vl.min()) if vl is not None and len(vl) else None,
        "config": config, "meta": {k: meta.get(k) for k in ("status", "updated", "start_time", "end_time", "source",
                                                             "device", "torch_version") if k in meta},
        "own": [f.to_dict() for f in d.findings], "skipped": d.skipped, "diagnosed": d.diagnosed,
        "found": series_found(run), "problems": list(problems), "name": run.name,
        "digest": together.digest(run, THIN),
    }


def _went_quiet(old: tuple) -> bool:
    """A log of another tool indexed while it was being written (status running) whose files
    have not changed since it went quiet: read again once, so it says ended / no end marker
    instead of standing as a stale run for ever (such logs have no heartbeat)."""
    _sig, _version, _path, quick, status, updated = old
    return status == fmt.STATUS_RUNNING and quick is None and (updated or 0) < time.time() - fmt.LIVE_SECS


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
        folder = os.path.join(cache or cache_root(), "catalog")
        os.makedirs(folder, exist_ok=True)
        key = hashlib.sha1(self.root.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        self.db_path = os.path.join(folder, f"{key}.sqlite")
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
            db.execute("INSERT OR REPLACE INTO info VALUES ('root', ?)", (_shown(self.root),))

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)
        db.execute("PRAGMA synchronous=NORMAL")
        return _Closing(db)

    # ---- refresh ---------------------------------------------------------------------------
    def refresh(self, progress=None, workers: int | None = None) -> Refresh:
        """Bring the index up to date with the root. `progress(done, total)` is called while runs
        are read. Returns what was done."""
        t0 = time.perf_counter()
        with self._lock:
            out = self._refresh(progress, workers)
        out.seconds = time.perf_counter() - t0
        return out

    def _refresh(self, progress, workers) -> Refresh:
        version = code_version()
        with self._db() as db:
            known = {n: (s, v, p, q, st, up) for n, s, v, p, q, st, up in
                     db.execute("SELECT name, sig, version, path, quick, status, updated FROM runs")}
            skeleton = self._info(db, "skeleton")
        if skeleton is not None and known and _unchanged(skeleton):
            listed = {n: k[2] for n, k in known.items()}  # no folder changed: the same runs
            others = None
        else:
            listed, others, skeleton = self._scan()
        odd = [n for n, p in listed.items() if not (_is_text(n) and _is_text(p))]
        for n in odd:  # SQLite holds text as UTF-8: these are reported, not indexed
            del listed[n]
        todo = []
        for name, path in listed.items():
            old = known.get(name)
            if old is None or old[1] != version:
                todo.append((name, path))
            elif old[4] in SETTLED and old[3] is not None:
                if _quick(path) != old[3]:  # a finished run changes only by new files or a rewritten meta.json
                    todo.append((name, path))
            elif old[0] != signature(path) or _went_quiet(old):
                todo.append((name, path))
        gone = [n for n in known if n not in listed]
        rows = self._read(todo, progress, workers)
        with self._db() as db:
            db.execute("BEGIN")
            db.execute("INSERT OR REPLACE INTO info VALUES ('odd_names', ?)", (_json([_shown(n) for n in odd]),))
            if others is not None:
                db.execute("INSERT OR REPLACE INTO info VALUES ('not_runs', ?)",
                           (_json([os.path.relpath(o, self.root).replace(os.sep, "/") for o in others]),))
                db.execute("INSERT OR REPLACE INTO info VALUES ('skeleton', ?)", (_json(skeleton),))
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
                               _json([f["rule"] for f in r.get("own", [])]),
                               _json({k: v for k, v in r.items() if k != "digest"}), _json(r.get("digest")),
                               _json(r.get("own", []))))
            db.execute("COMMIT")
        touched = {os.path.dirname(os.path.normpath(p)) for _, p in todo} | \
            {os.path.dirname(os.path.normpath(known[n][2])) for n in gone}
        if todo or gone:
            self._judge_together(touched)
        return Refresh(listed=len(listed), read=len(todo), removed=len(gone))

    @staticmethod
    def _info(db, key: str):
        got = db.execute("SELECT value FROM info WHERE key = ?", (key,)).fetchone()
        return json.loads(got[0]) if got else None

    def _scan(self) -> tuple[dict, list, dict]:
        """(name -> path of every run, what is not a run, the skeleton): a full walk of the root.
        The skeleton is every folder walked that is not a run or inside one, with its mtime: as
        long as none of them changed, no run appeared or went, and a reopen needs no walk."""
        from .diagnose import InputError, scan

        try:
            paths, others = scan(self.root)
        except InputError:
            paths, others = [], []
        listed = {}
        for p in paths:
            name = os.path.relpath(p, self.root).replace(os.sep, "/")
            listed[os.path.basename(self.root) if name == "." else name] = p
        runs = set(paths)
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

    def _read(self, todo: list, progress, workers) -> list[dict]:
        total = len(todo)
        if progress:
            progress(0, total)
        if not total:
            return []
        workers = workers if workers is not None else min(4, os.cpu_count() or 1)
        out: list = [None] * total
        if total < PARALLEL_FROM or workers <= 1:
            for i, (_, path) in enumerate(todo):
                out[i] = index_one(path)
                if progress:
                    progress(i + 1, total)
            return out
        ctx = multiprocessing.get_context("spawn")  # never fork a threaded server
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {pool.submit(_index_chunk, [p for _, p in todo[a:a + 32]]): a for a in range(0, total, 32)}
            done = 0
            for fut in cf.as_completed(futures):
                a = futures[fut]
                for k, row in enumerate(fut.result()):
                    out[a + k] = row
                done += len(fut.result())
                if progress:
                    progress(done, total)
        return out

    def _judge_together(self, folders: set) -> None:
        """Re-apply sibling evidence (sweeps, tasks) in the folders where something changed."""
        from .rules import DEFAULT, Diagnosis, together

        if not folders:
            return
        with self._db() as db:
            marks = ",".join("?" * len(folders))
            rows = db.execute(f"SELECT name, row, digest, final FROM runs WHERE folder IN ({marks}) "
                              "AND status != 'unreadable'", tuple(folders)).fetchall()
        if not rows:
            return
        digests = [json.loads(d) if d else None for _, _, d, _ in rows]
        own = [json.loads(r) for _, r, _, _ in rows]
        study = together.study_digests(digests)
        diagnoses = [Diagnosis([_finding(f) for f in o.get("own", [])], o.get("skipped", [])) for o in own]
        if study.sweeps or study.tasks:
            diagnoses = together.apply(study, diagnoses, DEFAULT)
        updates = []
        for (name, _, _, old), d in zip(rows, diagnoses):
            final = _json([f.to_dict() for f in d.findings])
            if final != old:
                updates.append((final, _json([f.rule for f in d.findings]), name))
        if updates:
            with self._db() as db:
                db.execute("BEGIN")
                db.executemany("UPDATE runs SET final = ?, findings = ? WHERE name = ?", updates)
                db.execute("COMMIT")

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
              limit: int = 50, offset: int = 0, stale_secs: float = 60.0) -> tuple[list[dict], int]:
        """(one page of rows, how many rows match): filtered and sorted in the index. `statuses`
        are shown statuses: live, stale (running, but silent for `stale_secs`), finished, crashed,
        unreadable, unknown; `text` matches a part of the name, the hyperparameters or a rule id."""
        where, args = [], []
        if text:
            where.append("(lower(name) LIKE ? OR lower(hparams) LIKE ? OR lower(findings) LIKE ?)")
            like = f"%{text.lower()}%"
            args += [like, like, like]
        if statuses:
            fresh = time.time() - stale_secs
            parts = []
            for st in statuses:
                if st == "live":
                    parts.append("(status = 'running' AND updated >= ?)")
                    args.append(fresh)
                elif st == "stale":
                    parts.append("(status = 'running' AND (updated IS NULL OR updated < ?))")
                    args.append(fresh)
                elif st == "unknown":
                    parts.append("status NOT IN ('running', 'finished', 'crashed', 'unreadable', 'ended', "
                                 "'no end marker')")
                else:
                    parts.append("status = ?")
                    args.append(st)
            where.append("(" + " OR ".join(parts) + ")")
        cond = f"WHERE {' AND '.join(where)}" if where else ""
        col = order if order in ("name", "status", "updated", "steps", "best_val_acc", "best_step", "best_val_loss",
                                 "findings") else "name"
        direction = "DESC" if descending else "ASC"
        with self._db() as db:
            total = db.execute(f"SELECT COUNT(*) FROM runs {cond}", args).fetchone()[0]
            cur = db.execute(f"SELECT name, path, status, updated, steps, best_val_acc, best_step, best_val_loss, "
                             f"hparams, findings, row, final FROM runs {cond} "
                             f"ORDER BY {col} IS NULL, {col} {direction}, name LIMIT ? OFFSET ?",
                             args + [int(limit), int(offset)])
            out = []
            for (name, path, status, updated, steps, bva, bstep, bvl, hp, findings, row, final) in cur:
                r = json.loads(row)
                out.append({"name": name, "path": path, "status": status, "updated": updated, "steps": steps,
                            "best_val_acc": bva, "best_step": bstep, "best_val_loss": bvl, "hparams": hp,
                            "findings": json.loads(findings), "final": json.loads(final or "[]"),
                            "error": r.get("error"), "diagnosed": r.get("diagnosed", False),
                            "skipped": r.get("skipped", []), "found": r.get("found", []),
                            "problems": r.get("problems", []), "meta": r.get("meta", {})})
        return out, total

    def findings_of(self, name: str) -> list | None:
        """The run's findings, its own and its siblings' (Finding objects), or None if not indexed."""
        with self._db() as db:
            got = db.execute("SELECT final, row FROM runs WHERE name = ?", (name,)).fetchone()
        if got is None or json.loads(got[1]).get("error"):
            return None
        return [_finding(f) for f in json.loads(got[0] or "[]")]

    def reports(self) -> list:
        """Every run as a `diagnose.RunReport`, by name (what `traindoc diagnose ROOT` prints)."""
        from .diagnose import RunReport

        rows, _ = self.query(limit=1 << 30)
        out = []
        for r in rows:
            if r["error"]:
                out.append(RunReport(r["name"], r["path"], error=r["error"]))
                continue
            out.append(RunReport(r["name"], r["path"], [_finding(f) for f in r["final"]], warnings=r["problems"],
                                 skipped=r["skipped"], diagnosed=r["diagnosed"], found=r["found"]))
        return out


def _index_chunk(paths: list) -> list[dict]:
    return [index_one(p) for p in paths]


def short_config(config: dict, limit: int = 4) -> str:
    """The first few scalar hyperparameters as 'lr=0.1, batch_size=32' (the runs table shows and filters on it)."""
    items = [(k, v) for k, v in (config or {}).items() if isinstance(v, (int, float, str, bool))]
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in items[:limit])


class _Closing:
    """A connection used as `with`: closed on exit (sqlite3's own context manager only commits)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        return self.db

    def __exit__(self, *exc) -> None:
        self.db.close()
