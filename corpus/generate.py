"""Build the diagnosis corpus: real CPU training runs of six task families, labelled by how
each run was made (see LABELS.md), never by what traindoc's rules say.

Families (data generated or read from this machine's Python sources; nothing downloaded):
  clusters   MLP classifier, 10 classes of Gaussian-cluster unions       (SGD + momentum)
  glyphs     small CNN on 12x12 stroke "digit" images                      (SGD + momentum)
  regress    MLP regression of a smooth function, loss only (no accuracy)  (Adam)
  sequence   GRU classifying token sequences (which marker is most common) (Adam)
  tabular    MLP on mixed numeric/one-hot features, binary label           (RMSprop)
  charlm     character-level transformer LM on the stdlib's sources        (AdamW, warm-up + cosine)

Per family: an LR sweep over five decades (two seeds), schedules that reach their floor
early and schedules that end there (step, exponential, linear, cosine, one-cycle,
ReduceLROnPlateau), small data with a big model, tiny capacity or heavy weight decay,
and budgets cut short; some runs log only per epoch (10-30 points). A quarter of the
runs also get a TensorBoard copy under another tag convention (tb/).

usage: python corpus/generate.py [--family NAME ...] [--jobs 2]   (about 20 minutes)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, ROOT)

FAMILIES = ("clusters", "glyphs", "regress", "sequence", "tabular", "charlm")
#: Each family's own optimizer (its runs use it unless their spec names another).
FAMILY_OPT = {"clusters": "sgdm", "glyphs": "sgdm", "regress": "adam", "sequence": "adam", "tabular": "rmsprop",
              "charlm": "adamw"}
SWEEP = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)  # x the family's base LR


@dataclass
class Spec:
    """How one run is made: everything its label follows from."""

    name: str
    family: str
    kind: str  # sweep | schedule-early | schedule-end | overfit | underfit | short
    lr_mult: float = 1.0
    seed: int = 0
    schedule: str = "constant"
    epochs: int = 0  # 0: the family's default
    data_frac: float = 1.0
    capacity: str = "normal"  # normal | big | tiny
    weight_decay: float = 0.0
    per_epoch_only: bool = False
    tb_style: str | None = None
    extra: dict = field(default_factory=dict)


# ---- families -------------------------------------------------------------------------
def _family(name: str):
    import torch
    import torch.nn as nn

    samples = _samples()
    g = torch.Generator().manual_seed(0)
    if name == "clusters":
        (xt, yt), (xv, yv) = samples.cluster_data(4000, 1000)
        return dict(data=(xt, yt, xv, yv), classes=10, base_lr=0.05, opt=FAMILY_OPT[name], epochs=20, batch=64,
                    model=lambda cap: samples.mlp({"big": 512, "tiny": 2, "normal": 128}[cap],
                                                  3 if cap == "big" else 2))
    if name == "glyphs":
        (xt, yt), (xv, yv) = samples.glyph_data(2400, 600)
        return dict(data=(xt, yt, xv, yv), classes=6, base_lr=0.05, opt=FAMILY_OPT[name], epochs=12, batch=64,
                    model=lambda cap: samples.SmallCNN(6, {"big": 32, "tiny": 1, "normal": 8}[cap]))
    if name == "regress":
        x = torch.rand(5000, 8, generator=g) * 4 - 2
        y = (torch.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2] - 0.5 * x[:, 3] ** 2).unsqueeze(1)
        y = y + 0.1 * torch.randn(y.shape, generator=g)
        return dict(data=(x[:4000], y[:4000], x[4000:], y[4000:]), classes=None, base_lr=3e-3, opt=FAMILY_OPT[name],
                    epochs=20, batch=64, model=lambda cap: _mlp(8, 1, {"big": 512, "tiny": 1, "normal": 64}[cap]))
    if name == "sequence":
        n, length = 4000, 20
        x = torch.randint(4, 30, (n, length), generator=g)
        counts = torch.randint(1, 6, (n, 3), generator=g)
        for i in range(n):
            pos = torch.randperm(length, generator=g)[:int(counts[i].sum())]
            x[i, pos] = torch.repeat_interleave(torch.arange(1, 4), counts[i])
        y = torch.argmax(counts.float() + 0.1 * torch.arange(3), 1)
        return dict(data=(x[:3200], y[:3200], x[3200:], y[3200:]), classes=3, base_lr=3e-3, opt=FAMILY_OPT[name],
                    epochs=15, batch=64, model=lambda cap: _GRU({"big": 128, "tiny": 1, "normal": 32}[cap]))
    if name == "tabular":
        n = 5000
        num = torch.randn(n, 6, generator=g)
        cat = torch.randint(0, 5, (n, 2), generator=g)
        onehot = torch.cat([nn.functional.one_hot(cat[:, k], 5).float() for k in range(2)], 1)
        logit = num[:, 0] * num[:, 1] + torch.sin(3 * num[:, 2]) + (cat[:, 0] == 2).float() * 1.5 - 0.5 * num[:, 3]
        y = (logit + 0.3 * torch.randn(n, generator=g) > 0.3).long()
        x = torch.cat([num, onehot], 1)
        return dict(data=(x[:4000], y[:4000], x[4000:], y[4000:]), classes=2, base_lr=1e-3, opt=FAMILY_OPT[name],
                    epochs=15, batch=64, model=lambda cap: _mlp(16, 2, {"big": 512, "tiny": 1, "normal": 64}[cap]))
    if name == "charlm":
        text = _stdlib_text(120_000)
        vocab = sorted(set(text))
        ids = torch.tensor([vocab.index(ch) for ch in text])
        seq = 32
        chunks = ids[: len(ids) // (seq + 1) * (seq + 1)].view(-1, seq + 1)
        split = int(0.9 * len(chunks))
        return dict(data=(chunks[:split, :-1], chunks[:split, 1:], chunks[split:, :-1], chunks[split:, 1:]),
                    classes=len(vocab), base_lr=3e-3, opt=FAMILY_OPT[name], epochs=4, batch=32, warmup=True,
                    model=lambda cap: _CharLM(len(vocab), {"big": 96, "tiny": 4, "normal": 48}[cap]))
    raise ValueError(name)


def _samples():
    """sample_runs/generate.py (its data sets and models), loaded under a name of its own."""
    import importlib.util

    if "traindoc_sample_runs" not in sys.modules:
        spec = importlib.util.spec_from_file_location("traindoc_sample_runs",
                                                      os.path.join(ROOT, "sample_runs", "generate.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules["traindoc_sample_runs"] = module
        spec.loader.exec_module(module)
    return sys.modules["traindoc_sample_runs"]


def _stdlib_text(n: int) -> str:
    """Python's own standard library sources: text that is on every machine."""
    import email
    import json as js
    import logging

    parts = []
    for mod in (logging, email, js):
        folder = os.path.dirname(mod.__file__)
        for f in sorted(os.listdir(folder)):
            if f.endswith(".py"):
                with open(os.path.join(folder, f), encoding="utf-8", errors="replace") as fh:
                    parts.append(fh.read())
    text = "".join(parts)
    return "".join(ch if ch.isascii() else " " for ch in text)[:n]


def _mlp(d_in, d_out, width):
    import torch.nn as nn

    return nn.Sequential(nn.Linear(d_in, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, d_out))


class _GRU:
    def __new__(cls, hidden):
        import torch.nn as nn

        class GRUClassifier(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(30, 16)
                self.gru = nn.GRU(16, hidden, batch_first=True)
                self.head = nn.Linear(hidden, 3)

            def forward(self, x):
                return self.head(self.gru(self.emb(x))[0][:, -1])
        return GRUClassifier()


class _CharLM:
    def __new__(cls, vocab, d):
        import torch
        import torch.nn as nn

        class CharLM(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(vocab, d)
                self.pos = nn.Parameter(torch.zeros(32, d))
                layer = nn.TransformerEncoderLayer(d, 4 if d % 4 == 0 else 1, 2 * d, dropout=0.0, batch_first=True)
                self.body = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
                self.head = nn.Linear(d, vocab)
                self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(32))

            def forward(self, x):
                return self.head(self.body(self.emb(x) + self.pos[: x.shape[1]], mask=self.mask[: x.shape[1], : x.shape[1]],
                                           is_causal=True))
        return CharLM()


# ---- schedules -------------------------------------------------------------------------
def _scheduler(opt, kind: str, total: int, warmup: bool):
    import torch

    warm = max(1, total // 20) if warmup else 0

    def with_warmup(f):
        return lambda s: (s + 1) / warm if s < warm else f(s)
    early, late = int(0.15 * total), total
    shapes = {
        "constant": lambda s: 1.0,
        "cosine-end": lambda s: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(s, late) / late)),
        "cosine-early": lambda s: 0.001 + 0.999 * 0.5 * (1 + math.cos(math.pi * min(s, early) / early)),
        "linear-end": lambda s: max(0.01, 1 - s / late),
        "linear-early": lambda s: max(0.001, 1 - s / early),
        "exp-mild": lambda s: 0.1 ** (s / late),
        "exp-early": lambda s: max(1e-3, 0.1 ** (3 * s / early)),
        "step-late": lambda s: 1.0 if s < 0.75 * total else 0.1,
        "step-early": lambda s: 1.0 if s < early else 0.01,
    }
    if kind == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=opt.param_groups[0]["lr"], total_steps=total + 1)
    if kind == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2)
    f = shapes[kind]
    return torch.optim.lr_scheduler.LambdaLR(opt, with_warmup(f) if warm else f)


def _optimizer(kind, params, lr, wd):
    import torch

    if kind == "sgdm":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd)
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    return torch.optim.RMSprop(params, lr=lr, weight_decay=wd)


# ---- one run ---------------------------------------------------------------------------
def train(spec: Spec, out_root: str) -> dict:
    """Train one run with the collector attached; returns its own measured outcome."""
    import torch
    import torch.nn.functional as F

    from traindoc import collector

    torch.set_num_threads(1)
    fam = _family(spec.family)
    torch.manual_seed(spec.seed)
    xt, yt, xv, yv = fam["data"]
    if spec.data_frac < 1:
        keep = int(len(xt) * spec.data_frac)
        xt, yt = xt[:keep], yt[:keep]
    model = fam["model"](spec.capacity)
    opt_kind = spec.extra.get("opt", fam["opt"])
    lr = fam["base_lr"] * spec.lr_mult
    opt = _optimizer(opt_kind, model.parameters(), lr, spec.weight_decay)
    epochs = spec.epochs or fam["epochs"]
    per_epoch = max(1, len(xt) // fam["batch"])
    total = epochs * per_epoch
    sched = _scheduler(opt, spec.schedule, total, fam.get("warmup", False))
    regression = fam["classes"] is None
    config = {"family": spec.family, "lr": lr, "optimizer": opt_kind, "schedule": spec.schedule,
              "epochs": epochs, "weight_decay": spec.weight_decay, "capacity": spec.capacity,
              "data_frac": spec.data_frac, "seed": spec.seed}
    run = collector.attach(model, opt, root=os.path.join(out_root, spec.family), name=spec.name, config=config,
                           num_classes=fam["classes"], log_every=per_epoch if spec.per_epoch_only else 10,
                           ratio_every=50)
    g = torch.Generator().manual_seed(spec.seed)
    val_losses, diverged = [], False

    def loss_of(out, y):
        if regression:
            return F.mse_loss(out, y)
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))

    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(xt), generator=g)
        for b in range(per_epoch):
            idx = order[b * fam["batch"]:(b + 1) * fam["batch"]]
            out = model(xt[idx])
            loss = loss_of(out, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if regression:
                run.log_train(loss)
            else:
                run.log_train(loss, output=out, target=yt[idx])
            if not isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                sched.step()
        run.end_epoch()
        model.eval()
        with torch.no_grad():
            out = model(xv)
            vl = float(loss_of(out, yv))
            metrics = {"loss": vl}
            if not regression:
                metrics["accuracy"] = float((out.argmax(-1) == yv).float().mean())
        run.log_val(**metrics)
        val_losses.append(vl)
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step(vl)
        if not math.isfinite(vl):
            diverged = True
            break
    run.close()
    finite = [v for v in val_losses if math.isfinite(v)]
    return {"name": spec.name, "family": spec.family, "path": os.path.relpath(run.path, HERE),
            "final_val_loss": val_losses[-1] if val_losses else float("nan"),
            "best_val_loss": min(finite) if finite else float("nan"),
            "best_val_epoch": int(val_losses.index(min(finite))) + 1 if finite else None,
            "epochs_run": len(val_losses), "diverged": diverged or not finite}


# ---- the plan ----------------------------------------------------------------------------
def plan(family: str) -> list[Spec]:
    """Every run of a family, as a Spec (its label follows from it and from the sweep)."""
    out = []
    alt = {"sgdm": "sgd", "adam": "rmsprop", "rmsprop": "adam", "adamw": "adam"}
    default = {"clusters": "sgdm", "glyphs": "sgdm", "regress": "adam", "sequence": "adam", "tabular": "rmsprop",
               "charlm": "adamw"}[family]
    for seed, opt in ((0, default), (1, default), (2, alt[default])):
        for m in SWEEP:
            out.append(Spec(f"{family}-sweep-{opt}-lr{m:g}-s{seed}", family, "sweep", lr_mult=m, seed=seed,
                            per_epoch_only=(seed == 1 and m in (0.01, 1.0, 100.0)), extra={"opt": opt}))
    for sched in ("cosine-early", "linear-early", "exp-early", "step-early"):
        out.append(Spec(f"{family}-{sched}", family, "schedule-early", schedule=sched, lr_mult=3.0))
    for sched in ("cosine-end", "linear-end", "exp-mild", "step-late", "onecycle", "plateau"):
        out.append(Spec(f"{family}-{sched}", family, "schedule-end", schedule=sched))
    for seed in (0, 1):
        out.append(Spec(f"{family}-overfit-s{seed}", family, "overfit", data_frac=0.04, capacity="big",
                        epochs=(spec_epochs(family) * 3), seed=seed))
        out.append(Spec(f"{family}-tiny-s{seed}", family, "underfit", capacity="tiny", seed=seed))
        out.append(Spec(f"{family}-heavywd-s{seed}", family, "underfit", weight_decay=0.3, seed=seed,
                        extra={"opt": "sgdm" if family not in ("charlm",) else "adamw"}))
        out.append(Spec(f"{family}-short-s{seed}", family, "short", epochs=max(2, spec_epochs(family) // 6),
                        seed=seed, lr_mult=0.3, per_epoch_only=False))
    styles = ("plain", "hf", "lightning", "keras")
    for i, s in enumerate(out):
        if i % 4 == 0:
            s.tb_style = styles[(i // 4) % len(styles)]
    return out


def spec_epochs(family: str) -> int:
    return {"clusters": 20, "glyphs": 12, "regress": 20, "sequence": 15, "tabular": 15, "charlm": 4}[family]


def _job(args):
    spec, out_root = args
    t0 = time.time()
    try:
        result = train(spec, out_root)
    except Exception as exc:  # a run that cannot be made is left out, and said so
        return {"name": spec.name, "family": spec.family, "error": repr(exc)}
    result["seconds"] = round(time.time() - t0, 1)
    result["spec"] = asdict(spec)
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", nargs="*", default=list(FAMILIES))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(HERE, "runs"))
    args = ap.parse_args()
    unknown = set(args.family) - set(FAMILIES)
    if unknown:
        ap.error(f"unknown family {sorted(unknown)}; known: {', '.join(FAMILIES)}")
    specs = [s for f in args.family for s in plan(f)]
    for f in args.family:
        shutil.rmtree(os.path.join(args.out, f), ignore_errors=True)
    results = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for r in pool.map(_job, [(s, args.out) for s in specs]):
            results.append(r)
            print(f"{r['name']}: {r.get('error') or r.get('final_val_loss')}", flush=True)
    path = os.path.join(HERE, "outcomes.json")
    old = json.load(open(path)) if os.path.exists(path) else []
    keep = [o for o in old if o["family"] not in args.family]
    with open(path, "w") as f:
        json.dump(keep + results, f, indent=1)


if __name__ == "__main__":
    main()
