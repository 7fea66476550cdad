"""Shared helpers: tiny real models and data made on the fly (nothing downloaded)."""

from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def blobs(n: int = 512, dim: int = 10, classes: int = 3, seed: int = 0):
    """Gaussian blobs: a small, learnable classification problem."""
    import torch

    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g) * 2.0
    y = torch.randint(0, classes, (n,), generator=g)
    x = centers[y] + torch.randn(n, dim, generator=g)
    return x, y


def mlp(dim: int = 10, hidden: int = 32, classes: int = 3, seed: int = 0):
    """A two-layer MLP with a fixed init."""
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, classes))


def logged_step(run, model, opt, xb, yb, score: bool = True):
    """One optimizer step on the batch (xb, yb), its loss logged to `run` (with the logits and
    targets when `score`); returns the loss."""
    import torch

    out = model(xb)
    loss = torch.nn.functional.cross_entropy(out, yb)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if score:
        run.log_train(loss, output=out, target=yb)
    else:
        run.log_train(loss)
    return loss


def train_steps(run, model, opt, x, y, steps: int, val_every: int | None = None, score: bool = True) -> None:
    """`steps` SGD steps on the first 64 samples, each logged to `run` (with the logits and targets
    when `score`), and the validation loss on all of them every `val_every` steps."""
    import torch

    for i in range(steps):
        logged_step(run, model, opt, x[:64], y[:64], score)
        if val_every and (i + 1) % val_every == 0:
            with torch.no_grad():
                run.log_val(loss=float(torch.nn.functional.cross_entropy(model(x), y)))


@pytest.fixture
def root(tmp_path):
    """A fresh root folder for runs."""
    p = tmp_path / "runs"
    p.mkdir()
    return str(p)


@pytest.fixture(autouse=True, scope="session")
def _cache_in_a_temporary_folder(tmp_path_factory):
    """The run catalog and the TensorBoard cache live in $TRAINDOC_CACHE: never the user's home in tests."""
    if "TRAINDOC_CACHE" not in os.environ:
        os.environ["TRAINDOC_CACHE"] = str(tmp_path_factory.mktemp("traindoc-cache"))
    yield
