"""Series stay right under what real scripts do: accumulation, AMP, GradScaler, compile, many optimizers."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
import torch.nn.functional as F

from traindoc import collector
from traindoc.reader import read_run
from tests.conftest import blobs


class TinyGPT(torch.nn.Module):
    """A nanoGPT-shaped model: token + position embeddings, one causal block, LM head."""

    def __init__(self, vocab=32, block=16, dim=32):
        super().__init__()
        self.tok = torch.nn.Embedding(vocab, dim)
        self.pos = torch.nn.Embedding(block, dim)
        self.attn = torch.nn.MultiheadAttention(dim, 2, batch_first=True)
        self.ln = torch.nn.LayerNorm(dim)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, 4 * dim), torch.nn.GELU(), torch.nn.Linear(4 * dim, dim))
        self.head = torch.nn.Linear(dim, vocab)

    def forward(self, idx, targets=None):
        t = idx.shape[1]
        h = self.tok(idx) + self.pos(torch.arange(t))
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
        h = h + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        h = h + self.mlp(self.ln(h))
        logits = self.head(h)
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


def _text_batches(n, batch=8, block=16, vocab=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = (torch.arange(4000) * 7 % vocab + torch.randint(0, 2, (4000,), generator=g)) % vocab
    for _ in range(n):
        ix = torch.randint(0, len(data) - block - 1, (batch,), generator=g)
        yield torch.stack([data[i:i + block] for i in ix]), torch.stack([data[i + 1:i + 1 + block] for i in ix])


def test_nanogpt_style_loop_accumulation_autocast_gradscaler(root):
    """The nanoGPT loop: micro-batches, loss / accum, bf16 autocast, GradScaler, clipping, cosine LR."""
    torch.manual_seed(0)
    model = TinyGPT()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 5))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 4)
    accum, steps = 4, 12
    run = collector.attach(model, opt, root=root, name="gpt", log_every=3, ratio_every=2, ignore_index=-100)
    batches = _text_batches(steps * accum)
    micro_losses, skipped = [], 0
    for it in range(steps):
        for _ in range(accum):
            x, y = next(batches)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits, loss = model(x, y)
            loss = loss / accum
            run.log_train(loss, output=logits, target=y, divided_by=accum)
            micro_losses.append(loss.float().item() * accum)
            scaler.scale(loss).backward()
        if it == 5:  # an overflow: GradScaler must skip this step
            next(model.parameters()).grad.fill_(float("inf"))
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scale_before = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        skipped += scaler.get_scale() < scale_before
        sched.step()
        opt.zero_grad(set_to_none=True)
    run.close()
    s = read_run(run.path)
    assert skipped == 1
    assert s.meta["steps"] == steps - 1  # the skipped step did not count as an optimizer step
    counts = s.get("train/loss/count")
    assert counts.sum() == steps * accum  # every micro-batch loss is in exactly one window
    t = torch.tensor(micro_losses, dtype=torch.float64)
    weighted = (s.get("train/loss/mean") * counts).sum() / counts.sum()
    assert weighted == pytest.approx(t.mean().item(), rel=1e-5)  # unscaled by `divided_by`
    assert (s.get("train/acc").between(0, 1)).all()
    assert s.meta["num_classes"] == 32
    assert "update_ratio/attn.in_proj_weight" in s.keys


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_model_two_optimizers_param_groups(root, backend):
    """`inductor`, torch.compile's default, generates and builds C++ with the machine's compiler."""
    if backend == "inductor" and not shutil.which("g++") and os.environ.get("CI") != "true":
        pytest.skip("inductor on the CPU needs a C++ compiler (g++)")
    x, y = blobs()
    torch.manual_seed(0)
    enc = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.Tanh())
    head = torch.nn.Linear(16, 3)
    model = torch.nn.Sequential(enc, head)
    compiled = torch.compile(model, backend=backend)
    opt_a = torch.optim.SGD([{"params": enc[0].weight, "lr": 0.1},
                             {"params": enc[0].bias, "lr": 0.01}], lr=0.1, momentum=0.9)
    opt_b = torch.optim.Adam(head.parameters(), lr=1e-3)
    sched_b = torch.optim.lr_scheduler.ExponentialLR(opt_b, 0.9)
    run = collector.attach(compiled, [opt_a, opt_b], root=root, name="multi", log_every=5, ratio_every=5)
    losses, corrects = [], []
    for i in range(10):
        out = compiled(x[i * 32:(i + 1) * 32])
        loss = F.cross_entropy(out, y[i * 32:(i + 1) * 32])
        opt_a.zero_grad(); opt_b.zero_grad()
        loss.backward()
        opt_a.step(); opt_b.step(); sched_b.step()
        run.log_train(loss, output=out, target=y[i * 32:(i + 1) * 32])
        losses.append(loss.item())
        corrects.append((out.argmax(-1) == y[i * 32:(i + 1) * 32]).sum().item())
    run.close()
    s = read_run(run.path)
    assert s.get("lr/pg0").tolist() == [0.1] and s.get("lr/pg1").tolist() == [0.01]
    lr_b = s.get("lr/opt1/pg0").reindex(range(1, 11)).ffill()
    assert lr_b.tolist() == pytest.approx([1e-3 * 0.9 ** k for k in range(10)])
    assert s.get("train/loss/mean").tolist() == pytest.approx(
        [sum(losses[:5]) / 5, sum(losses[5:]) / 5], rel=1e-6)
    assert {"update_ratio/0.0.weight", "update_ratio/1.weight"} <= set(s.keys)  # no _orig_mod. prefix
    assert s.get("train/acc").tolist() == pytest.approx([sum(corrects[:5]) / 160, sum(corrects[5:]) / 160])
