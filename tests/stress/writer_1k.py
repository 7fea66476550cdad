"""Writes `custom/x` = step at 1,000 records a second for SECS seconds, then prints the count."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402

from traindoc import collector  # noqa: E402


def main():
    root, secs = sys.argv[1], float(sys.argv[2])
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = collector.attach(model, opt, root=root, name="load", flush_secs=0.1)
    print("started", flush=True)
    start = time.perf_counter()
    i = 0
    while True:
        target = int((time.perf_counter() - start) * 1000)  # paced to 1,000 records a second
        if target >= secs * 1000:
            break
        while i < target:
            run.log({"x": float(i)}, step=i)
            i += 1
        time.sleep(0.001)
    run.close()
    print(i, flush=True)


if __name__ == "__main__":
    main()
