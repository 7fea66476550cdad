"""Materialise the real-world set's native files from fetched mirrors of their repositories.

The logs belong to their authors: the project commits where each run comes from (repository,
commit, paths; `labels/*.jsonl`) and the labels, never the files. This script puts each run's
files back under `corpus/real/native/<owner>__<name>/<path in the repository>` (ignored by git),
as the repository lays them out, so that runs that sit side by side there (an LR sweep's
versions) are siblings here too. They come from the labeller's copy under `data/<run>/` where
there is one, else from a bare mirror of the repository, as the search tool's `fetch` leaves it
under /work/.mirror/<owner>+<name>...

usage: python corpus/real/extract.py [--mirrors /work/.mirror] [--out corpus/real/data]
Runs whose mirror is missing are listed (fetch those repositories, then run it again).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))


def entries(labels_dir: str = os.path.join(HERE, "labels")) -> list[dict]:
    """Every labelled run (one JSON object a line in labels/*.jsonl), in file order; a later
    line for the same run that says `withdrawn` removes it from the score but keeps the label."""
    out = []
    for path in sorted(glob.glob(os.path.join(labels_dir, "*.jsonl"))):
        with open(path) as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if line:
                    try:
                        e = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise SystemExit(f"{path}:{n}: {exc}") from None
                    e["_file"] = os.path.basename(path)
                    out.append(e)
    return out


def mirror_of(repo: str, mirrors: str) -> str | None:
    """The bare git directory fetched for `owner/name`, or None."""
    owner, name = repo.split("/", 1)
    for cand in sorted(glob.glob(os.path.join(mirrors, f"{owner}+{name}*"))):
        for g in (cand, *glob.glob(os.path.join(cand, "*.git")), *glob.glob(os.path.join(cand, "*")),
                  *glob.glob(os.path.join(cand, "*", ".git"))):
            if os.path.isfile(os.path.join(g, "HEAD")) and os.path.isdir(os.path.join(g, "objects")):
                return g
    return None


def run_path(e: dict, real: str = HERE) -> str:
    """Where one labelled run is read from: its folder in the repository's layout under native/
    (the common folder of its files; the file itself for a lone CSV), or, for runs made here by
    third-party scripts, where they are committed."""
    if not e.get("files"):
        return os.path.join(real, e["run"])
    srcs = list(e["files"])
    base = os.path.join(real, "native", e["source"].replace("/", "__"))
    if len(srcs) == 1 and srcs[0].endswith(".csv") and not srcs[0].endswith("metrics.csv"):
        return os.path.join(base, srcs[0])
    mlflow = [s.split("/metrics/")[0] for s in srcs if "/metrics/" in s]
    if mlflow:  # an MLflow run is the folder that holds metrics/ (the experiment's meta.yaml sits above)
        return os.path.join(base, mlflow[0])
    common = os.path.commonpath([os.path.dirname(s) or "." for s in srcs]) if len(srcs) > 1 else os.path.dirname(srcs[0])
    return os.path.join(base, common) if common not in ("", ".") else base


def materialise(e: dict, mirrors: str, out: str) -> str:
    """Write one run's files; 'ok', 'present' or why not."""
    if not e.get("files"):
        return "present"  # made here (third-party scripts): committed as they are
    git = None
    for src, dst in e["files"].items():
        target = os.path.join(HERE, "native", e["source"].replace("/", "__"), src)
        if os.path.exists(target):
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        copy = os.path.join(out, e["run"], dst)
        if os.path.isfile(copy):
            shutil.copyfile(copy, target)
            continue
        git = git or mirror_of(e["source"], mirrors)
        if git is None:
            return f"no mirror of {e['source']}"
        blob = subprocess.run(["git", "--git-dir", git, "show", f"{e['commit']}:{src}"], capture_output=True)
        if blob.returncode:
            return f"{e['source']}@{e['commit'][:10]}:{src}: {blob.stderr.decode().strip()}"
        with open(target, "wb") as f:
            f.write(blob.stdout)
    return "ok"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mirrors", default="/work/.mirror")
    ap.add_argument("--out", default=os.path.join(HERE, "data"))
    args = ap.parse_args()
    bad = 0
    for e in entries():
        if e.get("withdrawn"):
            continue
        why = materialise(e, args.mirrors, args.out)
        if why not in ("ok", "present"):
            bad += 1
            print(f"{e['run']}: {why}")
    print(f"{bad} runs not materialised")


if __name__ == "__main__":
    main()
