"""Regenerate sample_runs/: real CPU training with the collector attached.

Every scenario trains a real model on generated data (nothing is downloaded):
  * "clusters": 16-d inputs in 10 classes, each class a union of 4 Gaussian
    clusters (not linearly separable), optionally with label noise;
  * "glyphs": 12x12 images of 6 random stroke templates, shifted and noised,
    for a small CNN.
Each run folder gets `expected.json`: the findings it must get, those allowed beside them, and why.

usage: python sample_runs/generate.py [--only NAME ...] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from traindoc import collector  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


# ---- data ---------------------------------------------------------------------------
def cluster_data(n_train: int, n_val: int = 2000, classes: int = 10, noise: float = 0.0, seed: int = 0):
    """10 classes, each the union of 4 Gaussian clusters in 6 informative dimensions, plus 10
    pure-noise dimensions: no linear boundary separates them, a small MLP can.
    `noise` of the train labels are replaced at random."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes * 4, 6, generator=g)
    owner = torch.arange(classes).repeat_interleave(4)
    n = n_train + n_val
    pick = torch.randint(0, classes * 4, (n,), generator=g)
    x = torch.cat([centers[pick] + 0.35 * torch.randn(n, 6, generator=g), torch.randn(n, 10, generator=g)], 1)
    y = owner[pick]
    flip = torch.rand(n_train, generator=g) < noise
    y[:n_train][flip] = torch.randint(0, classes, (int(flip.sum()),), generator=g)
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def glyph_data(n_train: int, n_val: int = 600, classes: int = 6, noise: float = 0.6, seed: int = 0):
    """Small images: a stroke template per class, randomly shifted, plus pixel noise."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.zeros(classes, 12, 12)
    for c in range(classes):
        for _ in range(3):  # three random strokes per class
            r0, c0 = torch.randint(2, 10, (2,), generator=g).tolist()
            dr, dc = torch.randint(-1, 2, (2,), generator=g).tolist()
            for k in range(-3, 4):
                r, cc = r0 + k * dr, c0 + k * dc
                if 0 <= r < 12 and 0 <= cc < 12:
                    templates[c, r, cc] = 1.0
    n = n_train + n_val
    y = torch.randint(0, classes, (n,), generator=g)
    shifts = torch.randint(-1, 2, (n, 2), generator=g)
    x = torch.stack([torch.roll(templates[y[i]], tuple(shifts[i].tolist()), (0, 1)) for i in range(n)])
    x = x + noise * torch.randn(n, 12, 12, generator=g)
    x = x.unsqueeze(1)
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


# ---- models -------------------------------------------------------------------------
def mlp(width: int = 128, depth: int = 2, classes: int = 10, dropout: float = 0.0) -> nn.Module:
    layers, d = [], 16
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
        d = width
    layers.append(nn.Linear(d, classes))
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """conv-pool-conv-pool-linear, about 3k parameters."""

    def __init__(self, classes: int = 6, width: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc = nn.Linear(2 * width * 9, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


# ---- scenarios ----------------------------------------------------------------------
@dataclass
class Scenario:
    """One sample run: what to train, how, and which findings it must get (and why)."""

    name: str
    expected: list
    why: str
    data: Callable
    model: Callable
    optimizer: Callable
    epochs: int
    batch: int = 32
    #: findings defensible beside the expected ones, by how the run was made (the corpus's
    #: rule, corpus/LABELS.md): an LR far too low leaves the loss still falling at the end
    allowed: list = field(default_factory=list)
    scheduler: Callable | None = None
    classes: int = 10
    setup: Callable | None = None  # model -> None, e.g. a bad init
    config: dict = field(default_factory=dict)
    seed: int = 0


def sgd(lr, momentum=0.9, wd=0.0):
    return lambda params: torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=wd)


def adam(lr, wd=0.0):
    return lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=wd)


def scale_last_layer(factor):
    def setup(model):
        last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        with torch.no_grad():
            last.weight.mul_(factor)
            last.bias.mul_(factor)
    return setup


def step_lr(at_epochs, gamma, steps_per_epoch):
    return lambda opt: torch.optim.lr_scheduler.MultiStepLR(opt, [e * steps_per_epoch for e in at_epochs], gamma)


TEACHER = lambda: cluster_data(4000)  # noqa: E731
GLYPHS = lambda: glyph_data(1500)  # noqa: E731
SPE_T = math.ceil(4000 / 32)  # steps per epoch
SPE_G = math.ceil(1500 / 32)

SCENARIOS = [
    Scenario("healthy-mlp-sgd", [], "SGD+momentum at a sensible LR, decayed at the plateau",
             TEACHER, lambda: mlp(128), sgd(0.05), epochs=24,
             scheduler=step_lr([16], 0.1, SPE_T)),
    Scenario("healthy-mlp-adamw", [], "AdamW at 1e-3 with cosine decay, trained to convergence",
             TEACHER, lambda: mlp(128), adam(1e-3, 1e-4), epochs=24,
             scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, 24 * SPE_T)),
    Scenario("healthy-cnn-sgd", [], "a small CNN with SGD at a sensible LR",
             GLYPHS, lambda: SmallCNN(), sgd(0.05), epochs=16, classes=6,
             scheduler=step_lr([11], 0.1, SPE_G)),
    Scenario("lr-low-mlp-sgd", ["lr_too_low"], "plain SGD at 2e-3: a straight, slow descent",
             TEACHER, lambda: mlp(128), sgd(2e-3, momentum=0.0), epochs=16,
             allowed=["train_longer"]),
    Scenario("lr-low-cnn-adam", ["lr_too_low"], "Adam at 3e-5 on the CNN",
             GLYPHS, lambda: SmallCNN(), adam(3e-5), epochs=16, classes=6,
             allowed=["train_longer"]),
    Scenario("lr-high-mlp-sgd", ["lr_too_high"], "SGD+momentum at 0.2 (4x the healthy run): fast drop, then the loss climbs back",
             TEACHER, lambda: mlp(128), sgd(0.2), epochs=10),
    Scenario("lr-high-cnn-adam", ["lr_too_high"], "Adam at 0.3 on the CNN: the loss blows up",
             GLYPHS, lambda: SmallCNN(), adam(0.3), epochs=8, classes=6),
    Scenario("early-decay-mlp-sgd", ["early_decay"], "LR cut 100x in epoch 2 while the loss is still falling fast",
             TEACHER, lambda: mlp(128), sgd(0.02), epochs=16,
             scheduler=step_lr([2], 0.01, SPE_T)),
    Scenario("early-decay-cnn-sgd", ["early_decay"], "the CNN's LR cut 100x in epoch 2",
             GLYPHS, lambda: SmallCNN(), sgd(0.03), epochs=16, classes=6,
             scheduler=step_lr([2], 0.01, SPE_G)),
    Scenario("overfit-mlp-adam", ["overfitting"], "a wide MLP memorises 300 noisy samples",
             lambda: cluster_data(300, noise=0.3), lambda: mlp(512), adam(2e-3), epochs=150),
    Scenario("overfit-cnn-adam", ["overfitting"], "a wider CNN memorises 200 noisy glyphs",
             lambda: glyph_data(200, noise=1.2), lambda: SmallCNN(width=32), adam(3e-3), epochs=120, classes=6),
    Scenario("underfit-linear-sgd", ["underfitting"], "a linear model cannot fit the teacher's non-linear labels",
             TEACHER, lambda: nn.Sequential(nn.Linear(16, 10)), sgd(0.05), epochs=16),
    Scenario("underfit-mlp-heavy-wd", ["underfitting"], "weight decay 0.03 holds a capable MLP back",
             TEACHER, lambda: mlp(128), sgd(0.05, wd=0.03), epochs=16),
    Scenario("train-longer-mlp-adam", ["train_longer"], "stopped after 5 epochs while both accuracies still climb",
             lambda: cluster_data(1500), lambda: mlp(256), adam(1e-3), epochs=5),
    Scenario("train-longer-cnn-sgd", ["train_longer"], "the CNN stopped early while both accuracies still climb",
             lambda: glyph_data(800, noise=0.9), lambda: SmallCNN(), sgd(0.01), epochs=6, classes=6),
    Scenario("bad-init-mlp-sgd", ["initial_loss"], "last layer initialised 30x too large: first loss far above ln 10",
             TEACHER, lambda: mlp(128), sgd(0.05), epochs=24, setup=scale_last_layer(30.0),
             scheduler=step_lr([16], 0.1, SPE_T)),
    Scenario("bad-init-cnn-sgd", ["initial_loss"], "CNN head initialised 20x too large",
             GLYPHS, lambda: SmallCNN(), sgd(0.05), epochs=20, classes=6, setup=scale_last_layer(20.0),
             scheduler=step_lr([11], 0.1, SPE_G)),
    Scenario("frozen-layer-mlp-sgd", ["update_ratio"], "the first layer's param group has LR 1e-6: it never moves",
             TEACHER, lambda: mlp(128), None, epochs=24, config={"first_layer_lr": 1e-6},
             scheduler=step_lr([16], 0.1, SPE_T)),
    Scenario("frozen-conv-cnn-adam", ["train_longer", "update_ratio"],
             "AdamW with the first conv's group at LR 1e-7: that layer never moves, and the rest learns "
             "slowly enough on random conv features that both accuracies still rise at epoch 30",
             GLYPHS, lambda: SmallCNN(), None, epochs=30, classes=6, config={"first_layer_lr": 1e-7}),
]


def build_optimizer(sc: Scenario, model: nn.Module):
    if "first_layer_lr" in sc.config:  # the first layer in a group of its own, at a tiny LR
        first = list(model.children())[0]
        ids = {id(p) for p in first.parameters()}
        rest = [p for p in model.parameters() if id(p) not in ids]
        groups = [{"params": list(first.parameters()), "lr": sc.config["first_layer_lr"]}, {"params": rest}]
        if isinstance(model, SmallCNN):
            return torch.optim.AdamW(groups, lr=1e-3)
        return torch.optim.SGD(groups, lr=0.05, momentum=0.9)
    return sc.optimizer(model.parameters())


def evaluate(model, x, y):
    model.eval()
    with torch.no_grad():
        out = model(x)
        loss = F.cross_entropy(out, y)
        acc = (out.argmax(-1) == y).float().mean()
    model.train()
    return loss, acc


def train(sc: Scenario, out_dir: str, tb_dir: str | None = None, tb_writer=None) -> str:
    """Train one scenario with the collector attached.

    With `tb_dir`, the same training is also logged the way a plain TensorBoard user
    would (per-step loss, accuracy and LR, per-epoch validation, plain tag names),
    through `tb_writer` (a SummaryWriter class; torch's by default)."""
    torch.manual_seed(sc.seed)
    (xt, yt), (xv, yv) = sc.data()
    model = sc.model()
    if sc.setup:
        sc.setup(model)
    opt = build_optimizer(sc, model)
    sched = sc.scheduler(opt) if sc.scheduler else None
    steps_per_epoch = math.ceil(len(xt) / sc.batch)
    total = steps_per_epoch * sc.epochs
    config = {"model": type(model).__name__ if not isinstance(model, nn.Sequential) else "MLP",
              "optimizer": type(opt).__name__, "lr": opt.param_groups[0]["lr"], "batch_size": sc.batch,
              "epochs": sc.epochs, "train_size": len(xt), **sc.config}
    path = os.path.join(out_dir, sc.name)
    shutil.rmtree(path, ignore_errors=True)
    run = collector.attach(model, opt, root=out_dir, name=sc.name, config=config, num_classes=sc.classes,
                           log_every=max(5, total // 120), ratio_every=max(5, total // 60))
    tb = None
    if tb_dir:
        if tb_writer is None:
            from torch.utils.tensorboard import SummaryWriter as tb_writer
        tb = tb_writer(tb_dir)
    g = torch.Generator().manual_seed(sc.seed + 1)
    step = 0
    for epoch in range(sc.epochs):
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), sc.batch):
            idx = perm[i:i + sc.batch]
            out = model(xt[idx])
            loss = F.cross_entropy(out, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log_train(loss, output=out, target=yt[idx])
            step += 1
            if tb is not None:
                tb.add_scalar("loss/train", loss.item(), step)
                tb.add_scalar("accuracy/train", (out.argmax(-1) == yt[idx]).float().mean().item(), step)
                tb.add_scalar("lr", opt.param_groups[0]["lr"], step)
            if sched:
                sched.step()
        vl, va = evaluate(model, xv, yv)
        run.log_val(loss=vl, accuracy=va)
        run.end_epoch()
        if tb is not None:
            tb.add_scalar("loss/val", vl.item(), step)
            tb.add_scalar("accuracy/val", va.item(), step)
    run.close()
    if tb is not None:
        tb.close()
    with open(os.path.join(path, "expected.json"), "w") as f:
        json.dump({"findings": sorted(sc.expected), "allowed": sorted(sc.allowed), "why": sc.why}, f, indent=1)
        f.write("\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="scenario names to regenerate")
    ap.add_argument("--out", default=HERE)
    args = ap.parse_args()
    torch.set_num_threads(1)
    names = {sc.name for sc in SCENARIOS}
    unknown = sorted(set(args.only or ()) - names)
    if unknown:
        ap.error(f"no scenario named {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    os.makedirs(args.out, exist_ok=True)
    if not args.only:  # drop runs of scenarios that no longer exist
        for entry in os.listdir(args.out):
            if entry not in names and os.path.isfile(os.path.join(args.out, entry, "meta.json")):
                shutil.rmtree(os.path.join(args.out, entry))
    for sc in SCENARIOS:
        if args.only and sc.name not in args.only:
            continue
        path = train(sc, args.out)
        print(f"{sc.name}: {os.path.getsize(os.path.join(path, 'scalars-0000.bin')) // 1024} KB", flush=True)


if __name__ == "__main__":
    main()
