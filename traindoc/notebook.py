"""Findings in a notebook, with no server: `traindoc.show(run)` displays one run's findings with
their advice and the run page's charts as plotly figures (built by the same code as the run
page: `app.charts.run_figures`); `traindoc.show(root)` displays the runs table with findings.
Each call reads the run again, so on a run still being written, calling it again shows more.
Figures go out as plotly's own MIME type (what JupyterLab, VS Code, Colab and Positron draw
natively), never as an iframe to a server."""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field

from . import remote
from .discovery import is_run, load
from .report import evidence_text
from .rules import curve_gaps, diagnose_run, series_found, severity_rank
from .rules.spikes import describe
from .series import RunSeries
from .status import status_of
from .tb import is_tb_run

_COLORS = {"error": "#d62728", "warning": "#ff7f0e", "info": "#1f77b4"}


@dataclass
class RunView:
    """What `show` displays for one run."""

    name: str
    status: str
    last_step: int
    findings: list
    diagnosed: bool
    not_diagnosed: str | None
    problems: list = field(default_factory=list)
    readings: list = field(default_factory=list)
    figures: list = field(default_factory=list)  # [(chart id, plotly figure)]
    spikes: list = field(default_factory=list)  # recovered loss spikes (`rules.spikes.Spike`)

    def html(self) -> str:
        e = html.escape
        out = [f"<div class='traindoc'><h3>{e(self.name)}</h3>",
               f"<p>{e(self.status)} · last step {self.last_step:,}</p>"]
        if not self.diagnosed:
            out.append(f"<p><b>Not diagnosed</b>: {e(self.not_diagnosed or '')}. Nothing is said about this "
                       "run: it is not reported healthy.</p>")
        elif not self.findings:
            out.append("<p><b>No problems found.</b></p>")
        for f in sorted(self.findings, key=lambda f: -severity_rank(f.severity)):
            color = _COLORS.get(f.severity, "#555")
            out.append(f"<div style='border-left:4px solid {color};padding-left:8px;margin:6px 0'>"
                       f"<b>{e(f.rule)}</b> <span style='color:{color}'>{e(f.severity)}</span> · steps "
                       f"{int(f.steps[0]):,}–{int(f.steps[1]):,}<br>{e(f.advice)}<br>"
                       f"<small>{e(evidence_text(f.evidence))}</small></div>")
        if self.spikes:
            out.append(f"<p>{e(describe(self.spikes))}</p>")
        for line in [*self.problems, *self.readings]:
            out.append(f"<p><small>{e(str(line))}</small></p>")
        out.append("</div>")
        return "".join(out)

    def text(self) -> str:
        if not self.diagnosed:
            return f"{self.name}: not diagnosed ({self.not_diagnosed})"
        lines = [f"{self.name}: {f.rule} ({f.severity}, steps {f.steps[0]}-{f.steps[1]}): {f.advice}"
                 for f in self.findings] or [f"{self.name}: no problems found"]
        if self.spikes:
            lines.append(f"{self.name}: {describe(self.spikes)}")
        return "\n".join(lines)


def _local(target) -> str:
    path = os.fspath(target)
    return remote.local_root(path) if remote.is_remote(path) else path


def _is_one_run(path: str) -> bool:
    return os.path.isfile(path) or is_run(path) or is_tb_run(path)


def run_view(target, smoothing: float = 0.6, log_y: bool = False) -> RunView:
    """Read (again) and diagnose one run: a RunSeries, a run folder, a log file or an s3:// URL."""
    from .app import charts  # the run page's figure code

    if isinstance(target, RunSeries):
        run, problems = target, []
    else:
        run, problems = load(_local(target))
    d = diagnose_run(run)
    gaps = None if d.diagnosed else (f"missing {', '.join(curve_gaps(d.skipped))}; found: "
                                     f"{', '.join(series_found(run)) or 'no series'}")
    built, custom = charts.run_figures(run, d.findings, smoothing, log_y)
    return RunView(run.name, status_of(run.meta), run.last_step, d.findings, d.diagnosed, gaps, list(problems),
                   [str(r) for r in run.meta.get("readings") or []], built + custom, d.spikes)


def runs_table(root):
    """A pandas DataFrame: one row per run under `root` with its status and findings (from the
    catalog, refreshed: only runs whose files changed are read again)."""
    import pandas as pd

    from .catalog import Catalog

    cat = Catalog(_local(root))
    cat.refresh()
    rows, _ = cat.query(limit=1 << 30)
    out = []
    for r in rows:
        if r["error"]:
            said = f"unreadable: {r['error']}"
        elif not r["diagnosed"]:
            said = f"not diagnosed: missing {', '.join(curve_gaps(r['skipped']))}"
        else:
            said = "; ".join(f"{f['rule']} ({f['severity']}, steps {f['steps'][0]}-{f['steps'][1]})"
                             for f in r["final"]) or "no problems found"
        out.append({"run": r["name"], "status": status_of({"status": r["status"], "updated": r["updated"]}),
                    "steps": r["steps"], "best val acc": r["best_val_acc"], "findings": said})
    return pd.DataFrame(out, columns=["run", "status", "steps", "best val acc", "findings"])


def show(target, smoothing: float = 0.6, log_y: bool = False) -> None:
    """Display a run (findings, advice, the run page's charts) or a folder of runs (the runs
    table) in the notebook this is called from; outside a notebook, print the findings."""
    display = HTML = None
    try:
        from IPython import get_ipython

        if getattr(get_ipython(), "kernel", None) is not None:  # a notebook's kernel, not a terminal
            from IPython.display import HTML, display
    except ImportError:  # no IPython: a plain script gets the words only
        pass
    one = isinstance(target, RunSeries) or _is_one_run(_local(target))
    if not one:
        table = runs_table(target)
        if display is None:
            print(table.to_string(index=False))
        else:
            display(HTML(f"<h3>{html.escape(os.fspath(target))}</h3>" + table.to_html(index=False, escape=True)))
        return
    view = run_view(target, smoothing, log_y)
    if display is None:
        print(view.text())
        return
    display(HTML(view.html()))
    for _, fig in view.figures:
        fig.update_layout(height=320)
        display(fig)
