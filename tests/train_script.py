"""A real training script used by the multi-process tests (run as a subprocess).

usage: python train_script.py ROOT NAME STEPS [flush_secs] [sleep_per_step]
Prints one line "window STEP WALL" each time a loss window closes.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from traindoc import collector  # noqa: E402
from tests.conftest import blobs, mlp  # noqa: E402


def main():
    root, name, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    flush = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
    pause = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    x, y = blobs(n=2048)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    run = collector.attach(model, opt, root=root, name=name, log_every=5, ratio_every=10, flush_secs=flush,
                           num_classes=3)
    print("started", flush=True)
    for i in range(steps):
        b = (i * 32) % 2000
        out = model(x[b:b + 32])
        loss = F.cross_entropy(out, y[b:b + 32])
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.log_train(loss, output=out, target=y[b:b + 32])
        if (i + 1) % 5 == 0:
            print(f"window {i + 1} {time.time():.6f}", flush=True)
        if pause:
            time.sleep(pause)
    run.close()
    print("closed", flush=True)


if __name__ == "__main__":
    main()
