"""Collector overhead on a small CPU training loop, as ratios against bare training.

Five variants of the same MLP loop (about 1 ms a step on 2 cores) run interleaved,
several rounds each, so machine noise hits them alike; the median of the per-round
ratios is printed, with the middle half of the rounds.
  bare          the loop alone
  bare_again    the loop alone once more: its ratio shows the measurement's own noise
  collector     traindoc at its defaults (loss, accuracy, LR, update ratios every 100 steps)
  live          traindoc at its defaults with live diagnosis on (on_finding: the rules after each
                flush that wrote data, on the writer's thread); also printed against `collector`
  ratios_every1 traindoc sampling update ratios on every step
  tensorboard   the same scalars through torch.utils.tensorboard.SummaryWriter each step
usage: python benchmarks/collector_overhead.py [--steps 2000] [--rounds 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from traindoc import collector  # noqa: E402


def make():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                                torch.nn.ReLU(), torch.nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(4096, 64)
    y = torch.randint(0, 10, (4096,))
    return model, opt, x, y


def loop(variant: str, steps: int, tmp: str) -> float:
    model, opt, x, y = make()
    run = writer = None
    if variant == "collector":
        run = collector.attach(model, opt, root=tmp, name=f"b{time.time_ns()}")
    elif variant == "live":
        run = collector.attach(model, opt, root=tmp, name=f"b{time.time_ns()}", on_finding=lambda f: None)
    elif variant == "ratios_every1":
        run = collector.attach(model, opt, root=tmp, name=f"b{time.time_ns()}", ratio_every=1)
    elif variant == "tensorboard":
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(os.path.join(tmp, f"tb{time.time_ns()}"))
    t0 = time.perf_counter()
    for i in range(steps):
        b = (i * 128) % 3968
        xb, yb = x[b:b + 128], y[b:b + 128]
        out = model(xb)
        loss = F.cross_entropy(out, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if run is not None:
            run.log_train(loss, output=out, target=yb)
        elif writer is not None:
            writer.add_scalar("train/loss", loss.item(), i)
            writer.add_scalar("train/acc", (out.argmax(-1) == yb).float().mean().item(), i)
            writer.add_scalar("lr", opt.param_groups[0]["lr"], i)
    elapsed = time.perf_counter() - t0
    if run is not None:
        run.close()
    if writer is not None:
        writer.close()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    torch.set_num_threads(1)  # one training thread; the writer thread gets the other core, as in real jobs
    variants = ["bare", "bare_again", "collector", "live", "ratios_every1", "tensorboard"]
    times = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for v in variants:  # warm-up
            loop(v, 50, tmp)
        for _ in range(args.rounds):
            for v in variants:
                times[v].append(loop(v, args.steps, tmp))
    bare = statistics.median(times["bare"])
    print(f"bare step: {1000 * bare / args.steps:.3f} ms  ({args.rounds} rounds x {args.steps} steps, median)")
    for v in variants[1:]:
        # each round's ratio against the bare loop of the same round: slow drifts of the
        # machine cancel; the spread across rounds says how far to trust the median
        paired = sorted(t / b for t, b in zip(times[v], times["bare"]))
        lo, hi = paired[len(paired) // 4], paired[(3 * len(paired)) // 4]
        print(f"{v:>14} / bare = {statistics.median(paired):.3f}   (rounds' middle half {lo:.3f}-{hi:.3f})")
    paired = sorted(t / c for t, c in zip(times["live"], times["collector"]))
    print(f"{'live':>14} / collector = {statistics.median(paired):.3f}   "
          f"(rounds' middle half {paired[len(paired) // 4]:.3f}-{paired[(3 * len(paired)) // 4]:.3f})")


if __name__ == "__main__":
    main()
