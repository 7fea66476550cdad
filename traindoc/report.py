"""`traindoc diagnose` for machines and for CI: the versioned JSON form (docs/diagnose-json.md)
and a Markdown summary that reads well in a GitHub job summary ($GITHUB_STEP_SUMMARY) or a pull
request comment: one row per finding with its steps, its evidence in numbers and its advice,
then the runs' recovered loss spikes, the runs that were not diagnosed and why, the runs that
could not be read, and what under the root is no run."""

from __future__ import annotations

import math

from .rules import curve_gaps, severity_rank
from .rules.spikes import SPIKE_K, describe

#: The JSON form's version: raised when a field changes meaning or goes (new fields keep it).
SCHEMA = "traindoc.diagnose/1"


def as_json(reports, not_runs: list[str]) -> dict:
    """The `--format json` document."""
    good = [r for r in reports if not r.error]
    return {"schema": SCHEMA, "runs": [r.to_dict() for r in good],
            "unreadable": [{"run": r.name, "path": r.path, "error": r.error} for r in reports if r.error],
            "not_runs": list(not_runs)}


def _number(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    if isinstance(v, float):
        return str(v) if not math.isfinite(v) else f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_number(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_number(x)}" for k, x in v.items()) + "}"
    return str(v)


def cell(text) -> str:
    """Text made safe for one Markdown table cell: pipes escaped, line breaks as spaces, and
    HTML and emphasis characters escaped so a run's name cannot change the page."""
    out = str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    for ch in "<>*_`[]#":
        out = out.replace(ch, "\\" + ch)
    return out.strip() or " "


def evidence_text(evidence: dict) -> str:
    return "; ".join(f"{k} = {_number(v)}" for k, v in evidence.items())


def as_markdown(reports, not_runs: list[str], title: str = "traindoc diagnosis") -> str:
    """The `--format markdown` summary."""
    good = [r for r in reports if not r.error]
    diagnosed = [r for r in good if r.diagnosed]
    flagged = [r for r in diagnosed if r.findings]
    worst = max((f.severity for r in good for f in r.findings), key=severity_rank, default=None)
    lines = [f"## {cell(title)}", ""]
    lines.append(f"{len(reports)} run(s): {len(flagged)} with findings, {len(diagnosed) - len(flagged)} with "
                 f"no problem found, {len(good) - len(diagnosed)} not diagnosed, "
                 f"{len(reports) - len(good)} unreadable" + (f"; worst severity: **{worst}**" if worst else "") + ".")
    lines.append("")
    if diagnosed:
        lines += ["| run | finding | severity | steps | evidence | advice |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in diagnosed:
            for f in sorted(r.findings, key=lambda f: -severity_rank(f.severity)):
                lines.append(f"| {cell(r.name)} | `{f.rule}` | {cell(f.severity)} | "
                             f"{f.steps[0]:,}–{f.steps[1]:,} | {cell(evidence_text(f.evidence))} | {cell(f.advice)} |")
            if not r.findings:
                skipped = ", ".join(s["rule"] for s in r.skipped)
                lines.append(f"| {cell(r.name)} | none | ok |  | "
                             f"{cell('not judged: ' + skipped) if skipped else ' '} | no problems found |")
        lines.append("")
    spiky = [r for r in good if r.spikes]
    if spiky:
        lines += ["### Loss spikes", "",
                  f"Windows whose loss rose at least {SPIKE_K:g}x the run's own noise above the loss before and "
                  "after them, and came back down:", ""]
        lines += [f"- {cell(r.name)}: {cell(describe(r.spikes))}" for r in spiky] + [""]
    undiagnosed = [r for r in good if not r.diagnosed]
    if undiagnosed:
        lines += ["### Not diagnosed", "",
                  "No curve rule had its inputs, so nothing is said about these runs (they are not healthy "
                  "by default):", ""]
        for r in undiagnosed:
            lines.append(f"- {cell(r.name)}: missing {cell(', '.join(curve_gaps(r.skipped)))}; "
                         f"found: {cell(', '.join(r.found) or 'no series')}")
        lines.append("")
    unreadable = [r for r in reports if r.error]
    if unreadable:
        lines += ["### Could not be read", ""] + [f"- {cell(r.name)}: {cell(r.error)}" for r in unreadable] + [""]
    if not_runs:
        lines += ["### Not runs", ""] + [f"- {cell(o)}" for o in not_runs] + [""]
    return "\n".join(lines)
