"""`traindoc` command line: diagnose, serve, export-tb.

Exit codes: 0 fine, 1 findings at or above --fail-on (or a run not diagnosed), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .format import SEVERITIES

EXIT_OK, EXIT_FINDINGS, EXIT_BAD_INPUT = 0, 1, 2


def _say(msg: str) -> None:
    """One line on stderr; bytes that are not valid text (odd file names) are shown escaped."""
    line = " ".join(f"traindoc: {msg}".split())
    print(line.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"), file=sys.stderr)


def _fail(msg: str) -> int:
    _say(msg)
    return EXIT_BAD_INPUT


def _progress_bar():
    """A one-line progress bar on stderr (a terminal), while runs are read into the catalog."""
    def show(done: int, total: int) -> None:
        if total < 20:
            return
        width = 30
        filled = int(width * done / total)
        end = "\n" if done >= total else ""
        print(f"\rtraindoc: indexing runs [{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,}", end=end,
              file=sys.stderr, flush=True)
    return show


def cmd_diagnose(args) -> int:
    from . import remote
    from .diagnose import diagnose_tree
    from . import report
    from .discovery import InputError

    if remote.is_remote(args.path):
        try:
            args.path = remote.local_root(args.path)
        except Exception as exc:  # noqa: BLE001 - one clear line, whatever the client raised
            return _fail(f"cannot read {args.path}: {type(exc).__name__}: {exc}")

    try:
        reports, not_runs = diagnose_tree(args.path, progress=_progress_bar() if sys.stderr.isatty() else None)
    except InputError as exc:
        return _fail(str(exc))
    for other in not_runs:  # nothing under the path is skipped without a word
        _say(f"{other}: not a run (none of the formats traindoc reads)")
    bad = [r for r in reports if r.error or r.warnings]
    for r in bad:
        for line in ([r.error] if r.error else r.warnings):
            _say(f"{r.path}: {line}")
    good = [r for r in reports if not r.error]
    form = "json" if args.json else args.format
    if form == "json":
        print(json.dumps(report.as_json(reports, not_runs), indent=1))
    elif form == "markdown":
        print(report.as_markdown(reports, not_runs, title=f"traindoc diagnose {os.path.basename(os.path.normpath(args.path))}"))
    else:
        print(_table(good))
    if bad:
        return EXIT_BAD_INPUT
    if args.fail_on:
        from .rules import severity_rank

        limit = severity_rank(args.fail_on)
        if any(severity_rank(f.severity) >= limit for r in good for f in r.findings):
            return EXIT_FINDINGS
        undiagnosed = [r.name for r in good if not r.diagnosed]
        if undiagnosed and not args.allow_undiagnosed:
            _say(f"not diagnosed (no curve rule had its inputs): {', '.join(undiagnosed)}; "
                 "--allow-undiagnosed lets such runs pass")
            return EXIT_FINDINGS
    return EXIT_OK


def _table(reports) -> str:
    from .rules import curve_gaps

    rows = [("run", "rule", "severity", "steps", "advice")]
    for r in reports:
        if not r.diagnosed:
            lacks = curve_gaps(r.skipped)
            rows.append((r.name, "-", "not diagnosed", "",
                         f"no curve rule could run: missing {', '.join(lacks)}; found: {', '.join(r.found) or 'nothing'}"))
        elif not r.findings:
            rows.append((r.name, "-", "ok", "", "no problems found" + (
                f" (not judged: {', '.join(s['rule'] for s in r.skipped)})" if r.skipped else "")))
        for f in r.findings:
            rows.append((r.name, f.rule, f.severity, f"{f.steps[0]}-{f.steps[1]}", f.advice))
    rows = [tuple(str(c).replace("\r", " ").replace("\n", " ") for c in row) for row in rows]  # one line each
    widths = [min(max(len(row[i]) for row in rows), 40) for i in range(4)]
    lines = []
    for k, row in enumerate(rows):
        lines.append("  ".join(row[i].ljust(widths[i]) for i in range(4)) + "  " + row[4])
        if k == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 6)
    return "\n".join(lines)


def cmd_export_tb(args) -> int:
    from .series import RunFormatError
    from .tb.export import export_run

    if not os.path.isdir(args.run):
        kind = "a file, not a run folder" if os.path.exists(args.run) else "no such run folder"
        return _fail(f"{args.run}: {kind}")
    try:
        n = export_run(args.run, args.out)
    except (RunFormatError, OSError, ValueError) as exc:
        return _fail(f"{args.run}: {exc}")
    print(f"wrote {n} scalars to {args.out} (open it with: tensorboard --logdir {args.out})")
    return EXIT_OK


def cmd_serve(args) -> int:
    from .serve import serve

    try:
        args.root.encode("utf-8")
    except UnicodeEncodeError:
        return _fail(f"{args.root}: the folder name is not valid UTF-8; rename it or serve its parent")
    from . import remote

    if not remote.is_remote(args.root) and not os.path.isdir(args.root):
        return _fail(f"{args.root}: " + ("a file, not a folder of runs" if os.path.exists(args.root)
                                         else "no such folder"))
    return serve(args.root, host=args.host, port=args.port, headless=args.headless)


def cmd_push(args) -> int:
    from . import remote

    results = remote.push(args.spool)
    for path, done, error in results:
        print(f"{path}: " + ("uploaded" if done else f"still spooled (the store is not reachable: {error or 'not all sent'})"))
    if not results:
        print("nothing spooled")
    return EXIT_OK if all(done for _, done, _ in results) else EXIT_FINDINGS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="traindoc", description="Training diagnostics for PyTorch runs.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("diagnose", help="run the rules on a run, or on every run under a folder")
    d.add_argument("path")
    d.add_argument("--format", choices=("table", "json", "markdown"), default="table",
                   help="table (default), json (versioned: docs/diagnose-json.md), or markdown for a CI job "
                        "summary or a pull request comment")
    d.add_argument("--json", action="store_true", help="the same as --format json")
    d.add_argument("--fail-on", choices=SEVERITIES,
                   help="exit 1 if any finding is at least this severe, or any run could not be diagnosed")
    d.add_argument("--allow-undiagnosed", action="store_true",
                   help="with --fail-on: let runs that no curve rule could judge pass")
    d.set_defaults(func=cmd_diagnose)
    e = sub.add_parser("export-tb", help="write a traindoc run as TensorBoard event files")
    e.add_argument("run")
    e.add_argument("--out", required=True, help="folder to write the event files into")
    e.set_defaults(func=cmd_export_tb)
    s = sub.add_parser("serve", help="open the dashboard on a folder of runs")
    s.add_argument("root", nargs="?", default="runs")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    s.add_argument("--port", type=int, default=8501)
    s.add_argument("--headless", action="store_true", help="do not open a browser")
    s.set_defaults(func=cmd_serve)
    u = sub.add_parser("push", help="upload runs still spooled for an s3:// root (after the store was down)")
    u.add_argument("--spool", help="the spool folder (default $TRAINDOC_SPOOL or ~/.cache/traindoc/spool)")
    u.set_defaults(func=cmd_push)
    return p


def main(argv=None) -> int:
    """Entry point of the `traindoc` command."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
