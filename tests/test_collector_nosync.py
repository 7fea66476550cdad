"""The training thread never reads a value back from the device.

On a GPU every .item()/.tolist()/.cpu()/float() on a device tensor is a sync.
We count such calls made on the training thread while a real loop runs with the
collector attached; the writer thread is allowed (and expected) to make them.
"""

from __future__ import annotations

import os
import sys
import threading

import torch
import torch.nn.functional as F

from traindoc import collector
from tests.conftest import blobs, mlp

COLLECTOR_DIR = os.path.dirname(os.path.abspath(collector.__file__)) + os.sep
READBACKS = ["item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__"]


def test_no_readback_on_the_training_thread(root, monkeypatch):
    x, y = blobs()
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, 7, 0.5)
    run = collector.attach(model, opt, root=root, name="nosync", log_every=4, ratio_every=3, flush_secs=0.05)
    counts = {"main": 0, "other": 0}
    main = threading.main_thread()
    counting = [False]

    def wrap(name):
        orig = getattr(torch.Tensor, name)

        def counted(self, *a, **k):
            if counting[0] and _called_from_collector():
                counts["main" if threading.current_thread() is main else "other"] += 1
            return orig(self, *a, **k)
        return counted

    def _called_from_collector():
        f = sys._getframe(2)
        while f is not None:
            if f.f_code.co_filename.startswith(COLLECTOR_DIR):
                return True
            f = f.f_back
        return False

    for name in READBACKS:
        monkeypatch.setattr(torch.Tensor, name, wrap(name))
    for i in range(30):
        out = model(x[i * 16:(i + 1) * 16])
        loss = F.cross_entropy(out, y[i * 16:(i + 1) * 16])
        opt.zero_grad()
        loss.backward()
        counting[0] = True  # the optimizer's own .item() calls are not ours and are not counted
        opt.step()
        run.log_train(loss, output=out, target=y[i * 16:(i + 1) * 16])
        if i % 10 == 9:
            run.log_val(loss=loss, accuracy=torch.tensor(0.5))
            run.end_epoch()
        counting[0] = False
        sched.step()
    counting[0] = True
    run.close()
    counting[0] = False
    assert counts["main"] == 0
    assert counts["other"] > 0  # the counter works: the writer thread did read values back
