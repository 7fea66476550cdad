"""Collector overhead on a small CPU training loop, as ratios against bare training.

Six variants of the same MLP loop (about 1.3 ms a step on 2 cores), each with its own model and,
where it has one, its own run attached once for the whole benchmark. They take turns in blocks of
`--block` steps, the order reversed every other round, so that the machine's drifts hit them alike;
each round's time of a variant is divided by the bare loop's time in the same round, and the median
of these ratios is printed with the middle half of the rounds.
  bare          the loop alone
  bare_again    the loop alone once more, on its own model: its ratio is the measurement's own noise
  collector     traindoc at its defaults (loss, accuracy, LR, update ratios every 100 steps)
  live          traindoc at its defaults with live diagnosis on (on_finding: the rules after each
                flush that wrote data, on the writer's thread); also printed against `collector`
  ratios_every1 traindoc sampling update ratios on every step
  tensorboard   the same scalars through torch.utils.tensorboard.SummaryWriter each step
After each block the benchmark waits `--settle` seconds (untimed): the writer threads flush what
the block left and the live rules read it, so that no variant's background work lands in another
variant's block. The writer thread's own CPU time (off the training thread, on the other core) is
printed per variant as a share of the bare loop's time.
The whole-loop ratios carry the machine's noise (see bare_again). A second, steadier figure: the
time the training thread spends inside the collector's calls (log_train, and the step hooks,
bracketed by two hooks of the benchmark's own), per step, added to the bare step. It leaves out
what only shows in the whole loop: the writer thread taking the interpreter lock, caches.
usage: python benchmarks/collector_overhead.py [--block 2000] [--rounds 12] [--settle 1.2]
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


class Variant:
    """One variant's model, optimizer, data and (if it has one) run, kept for the whole benchmark."""

    def __init__(self, name: str, tmp: str):
        self.name = name
        self.model, self.opt, self.x, self.y = make()
        self.run = self.writer = None
        self.i = 0
        opts = {"collector": {}, "live": {"on_finding": lambda f: None}, "ratios_every1": {"ratio_every": 1}}
        self.in_collector = 0.0  # seconds the training thread spent inside the collector's calls
        if name in opts:
            self._t0 = 0.0
            # bracket the collector's post-step hook between two of ours (hooks run in the order
            # they were registered); its pre-step hook (armed before sampled steps only) is timed
            # by wrapping the update-ratio snapshot it calls
            self.opt.register_step_post_hook(self._start)
            self.run = collector.attach(self.model, self.opt, root=tmp, name=name, **opts[name])
            self.opt.register_step_post_hook(self._stop)
            ratios = self.run._hooks.ratios
            if ratios is not None:
                ratios.before_step = self._timed(ratios.before_step)
            self.log_train = self._timed(self.run.log_train)
        elif name == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(os.path.join(tmp, "tb"))

    def _start(self, *args) -> None:
        self._t0 = time.perf_counter()

    def _stop(self, *args) -> None:
        self.in_collector += time.perf_counter() - self._t0

    def _timed(self, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.in_collector += time.perf_counter() - t0
        return timed

    def block(self, steps: int) -> float:
        model, opt, x, y, run, writer = self.model, self.opt, self.x, self.y, self.run, self.writer
        t0 = time.perf_counter()
        for i in range(self.i, self.i + steps):
            b = (i * 128) % 3968
            xb, yb = x[b:b + 128], y[b:b + 128]
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if run is not None:
                self.log_train(loss, output=out, target=yb)
            elif writer is not None:
                writer.add_scalar("train/loss", loss.item(), i)
                writer.add_scalar("train/acc", (out.argmax(-1) == yb).float().mean().item(), i)
                writer.add_scalar("lr", opt.param_groups[0]["lr"], i)
        self.i += steps
        return time.perf_counter() - t0

    def background_cpu(self) -> float:
        """CPU seconds the run's writer thread has used so far (0 without one)."""
        thread = getattr(self.run._sink.writer, "_thread", None) if self.run is not None else None
        if thread is None or thread.ident is None:
            return 0.0
        try:
            return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        except (OSError, AttributeError):
            return float("nan")

    def close(self) -> None:
        if self.run is not None:
            self.run.close()
        if self.writer is not None:
            self.writer.close()


def _spread(ratios: list) -> str:
    r = sorted(ratios)
    return f"{statistics.median(r):.3f}   (rounds' middle half {r[len(r) // 4]:.3f}-{r[(3 * len(r)) // 4]:.3f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--block", type=int, default=2000, help="steps per variant per round")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--settle", type=float, default=1.2, help="untimed seconds after each block")
    args = ap.parse_args()
    torch.set_num_threads(1)  # one training thread; the writer thread gets the other core, as in real jobs
    names = ["bare", "bare_again", "collector", "live", "ratios_every1", "tensorboard"]
    times = {v: [] for v in names}
    with tempfile.TemporaryDirectory() as tmp:
        variants = {v: Variant(v, tmp) for v in names}
        for v in variants.values():  # warm-up, untimed
            v.block(100)
        time.sleep(args.settle)
        cpu0 = {k: v.background_cpu() for k, v in variants.items()}
        for v in variants.values():
            v.in_collector = 0.0  # the warm-up's calls do not count
        for r in range(args.rounds):
            for k in (names if r % 2 == 0 else names[::-1]):
                times[k].append(variants[k].block(args.block))
                time.sleep(args.settle)
        cpu = {k: v.background_cpu() - cpu0[k] for k, v in variants.items()}
        for v in variants.values():
            v.close()
    bare = statistics.median(times["bare"])
    print(f"bare step: {1000 * bare / args.block:.3f} ms  ({args.rounds} rounds x {args.block} steps, median)")
    for v in names[1:]:
        # each round's ratio against the bare loop of the same round: slow drifts of the
        # machine cancel; the spread across rounds says how far to trust the median
        print(f"{v:>14} / bare = " + _spread([t / b for t, b in zip(times[v], times["bare"])]))
    print(f"{'live':>14} / collector = " + _spread([t / c for t, c in zip(times["live"], times["collector"])]))
    total_bare = sum(times["bare"])
    per_step = bare / args.block
    print("Time inside the collector's calls on the training thread (log_train and the step hooks, "
          "timed around each call), per step, against the bare step:")
    for v in ("collector", "live", "ratios_every1"):
        inside = variants[v].in_collector / (args.rounds * args.block)
        print(f"{v:>14}: {1e6 * inside:.1f} us a step; (bare + that) / bare = {1 + inside / per_step:.4f}; "
              f"its writer thread's CPU (off the training thread) / bare loop time = {cpu[v] / total_bare:.3f}")


if __name__ == "__main__":
    main()
