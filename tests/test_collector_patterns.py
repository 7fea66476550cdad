"""Patterns of real training scripts: GradScaler skips under every optimizer implementation,
update ratios in bounded memory, ignored target indices, reused run names and resume,
and record checks that two flipped bits cannot defeat."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from traindoc import collector
from traindoc import format as fmt
from traindoc.reader import RunReader, read_run
from tests.conftest import ROOT, blobs, mlp


# ---- skipped steps ------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["fused", "foreach", "forloop"])
def test_gradscaler_skipped_steps_are_not_counted(root, impl):
    """10 scaler.step() calls, two of them with an inf gradient: 8 steps, and the sampled
    step that was skipped is sampled again on the next real step (no ratio of 0)."""
    x, y = blobs()
    model = mlp()
    kw = {"fused": {"fused": True}, "foreach": {"foreach": True}, "forloop": {"foreach": False}}[impl]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, **kw)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 4)
    run = collector.attach(model, opt, root=root, name=impl, log_every=4, ratio_every=4)
    real_steps = 0
    for i in range(10):
        out = model(x[:32])
        loss = F.cross_entropy(out, y[:32])
        opt.zero_grad()
        scaler.scale(loss).backward()
        if i in (0, 5):
            model[0].weight.grad[0, 0] = float("inf")
        before = model[0].weight.detach().clone()
        scaler.step(opt)
        scaler.update()
        moved = not torch.equal(before, model[0].weight.detach())
        real_steps += moved
        run.log_train(loss, output=out, target=y[:32])
    run.close()
    assert real_steps == 8
    s = read_run(run.path)
    assert run.step == 8 and s.meta["steps"] == 8
    ratio = s.get("update_ratio/0.weight")
    assert list(ratio.index) == [1, 4, 8]  # step 1 sampled on the first real step
    assert (ratio > 0).all()


# ---- update ratios in bounded memory -------------------------------------------------
def test_sampled_ratios_of_a_large_tensor_match_the_exact_ones(root):
    """Above the exact-size bound, ratios come from a strided sample of each big tensor."""
    from traindoc.collector import ratios

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3000, 2000), torch.nn.Linear(2000, 3))
    assert sum(p.numel() for p in model.parameters()) > ratios.EXACT_ELEMENTS
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    run = collector.attach(model, opt, root=root, name="big", ratio_every=1)
    truth = []
    for _ in range(3):
        loss = model(torch.randn(16, 3000)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        before = [p.detach().clone() for p in model.parameters()]
        opt.step()
        truth.append([((p.detach() - b).norm() / b.norm()).item() for p, b in zip(model.parameters(), before)])
        run.log_train(loss)
    run.close()
    s = read_run(run.path)
    got = s.get("update_ratio/0.weight").to_numpy()
    assert got == pytest.approx([t[0] for t in truth], rel=0.03)  # sampled: ~350k of 6M elements
    assert s.get("update_ratio/0.bias").to_numpy() == pytest.approx([t[1] for t in truth], rel=1e-5)  # small: exact


_MEMORY_SCRIPT = textwrap.dedent("""
    import json, sys, torch
    sys.path.insert(0, sys.argv[1])
    from traindoc import collector

    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

    def reset_hwm():
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(*[torch.nn.Linear(4096, 4096) for _ in range(4)])  # 67M params, 268 MB
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(2, 4096)

    def step():
        # forward and backward, then the peak resident memory of the optimizer step alone
        loss = model(x).pow(2).mean()
        opt.zero_grad(set_to_none=False)
        loss.backward()
        reset_hwm(); base = hwm()
        opt.step()
        return loss, hwm() - base

    step()  # gradients exist from here on
    _, plain = step()
    run = collector.attach(model, opt, root=sys.argv[2], name="mem", ratio_every=1, log_every=1)
    loss, sampled = step()  # step 1 of the run: sampled
    run.log_train(loss)
    run.close()
    print(json.dumps({"plain": plain, "sampled": sampled,
                      "param_bytes": sum(p.numel() * p.element_size() for p in model.parameters())}))
""")


@pytest.mark.slow
def test_update_ratio_sampling_adds_under_a_tenth_of_the_parameters(tmp_path):
    """Peak resident memory of a sampled step against a plain one, in a fresh process: the
    old snapshot-plus-difference took twice the parameters' size (+518 MB for 256 MB)."""
    script = tmp_path / "mem.py"
    script.write_text(_MEMORY_SCRIPT)
    out = subprocess.run([sys.executable, str(script), ROOT, str(tmp_path)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    m = json.loads(out.stdout.strip().splitlines()[-1])
    extra = m["sampled"] - m["plain"]
    print(f"sampled step peak RSS above a plain step: {extra / 2**20:.1f} MB for {m['param_bytes'] / 2**20:.0f} MB "
          f"of parameters ({extra / m['param_bytes']:.1%})")
    assert extra <= 0.10 * m["param_bytes"], m
    s = read_run(str(tmp_path / "mem"))
    assert s.has("update_ratio/0.weight") and (s.get("update_ratio/0.weight") > 0).all()


# ---- targets and classes -------------------------------------------------------------
def _lm_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 12, 7, generator=g)
    target = torch.randint(1, 7, (4, 12), generator=g)
    target[:, 8:] = 0  # padding with id 0, a real class id
    target[0, :3] = logits[0, :3].argmax(-1)  # a few sure hits
    return logits, target


@pytest.mark.parametrize("how", ["ignore_index", "loss_fn"])
def test_ignore_index_of_a_real_class_id(root, how):
    logits, target = _lm_batch()
    keep = target.ne(0)
    expected = ((logits.argmax(-1) == target) & keep).sum().item() / keep.sum().item()
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    kw = {"ignore_index": 0} if how == "ignore_index" else {"loss_fn": torch.nn.CrossEntropyLoss(ignore_index=0)}
    run = collector.attach(model, opt, root=root, name=how, **kw)
    run.log_train(torch.tensor(1.0), output=logits, target=target)
    run.close()
    s = read_run(run.path)
    assert s.get("train/acc").tolist() == [pytest.approx(expected)]
    assert s.meta["num_classes"] == 7  # from the logits' last dimension


def test_negative_targets_never_count(root):
    """Hugging Face pads labels with -100; no class is negative, whatever ignore_index says."""
    logits, target = _lm_batch(1)
    target[target == 0] = -100
    keep = (target >= 0) & (target != 3)  # -100 never counts, and 3 is the ignore_index given
    expected = ((logits.argmax(-1) == target) & keep).sum().item() / keep.sum().item()
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = collector.attach(model, opt, root=root, name="neg", ignore_index=3)
    run.log_train(torch.tensor(1.0), output=logits, target=target)
    run.close()
    assert read_run(run.path).get("train/acc").tolist() == [pytest.approx(expected)]


# ---- run identity and resume ---------------------------------------------------------
def _steps(run, n, x, y, model, opt):
    for i in range(n):
        out = model(x[i * 8:(i + 1) * 8])
        loss = F.cross_entropy(out, y[i * 8:(i + 1) * 8])
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.log_train(loss, output=out, target=y[i * 8:(i + 1) * 8])
        run.log({"gpu_mem_gb": 70.0 + i})


def test_a_reused_name_gets_a_new_folder(root):
    x, y = blobs(n=2000)
    model, opt = mlp(), None
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    first = collector.attach(model, opt, root=root, name="exp", log_every=10)
    _steps(first, 200, x, y, model, opt)
    first.close()
    second = collector.attach(model, opt, root=root, name="exp", log_every=10)
    second.log({"other_first": 1.0})  # a different key order than the first run
    _steps(second, 50, x, y, model, opt)
    second.close()
    assert os.path.basename(second.path) == "exp-2" and second.name == "exp-2"
    a, b = read_run(first.path), read_run(second.path)
    assert a.meta["run_id"] != b.meta["run_id"]
    assert a.meta["steps"] == 200 and list(a.get("train/loss/mean").index)[-1] == 200
    assert b.meta["steps"] == 50 and list(b.get("train/loss/mean").index) == [10, 20, 30, 40, 50]
    assert b.get("train/loss/first").tolist() != [70.0] and "custom/gpu_mem_gb" in b.keys


def test_resume_continues_the_same_run(root):
    x, y = blobs(n=2000)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    run = collector.attach(model, opt, root=root, name="long", log_every=10, config={"lr": 0.05})
    _steps(run, 30, x, y, model, opt)
    run.end_epoch()
    run.close()
    again = collector.attach(model, opt, root=root, name="long", log_every=10, resume=True, config={"phase": 2})
    assert again.path == run.path and again.step == 30
    _steps(again, 20, x, y, model, opt)
    again.close()
    s = read_run(run.path)
    assert sorted(os.listdir(root)) == ["long"]
    assert s.meta["run_id"] == run.run_id == again.run_id
    assert list(s.get("train/loss/mean").index) == [10, 20, 30, 40, 50]  # continuous steps
    assert s.get("train/loss/count").sum() == 50
    assert s.meta["steps"] == 50 and s.meta["epochs"] == 1 and len(s.meta["resumed"]) == 1
    assert s.meta["config"] == {"lr": 0.05, "phase": 2}
    assert s.get("custom/gpu_mem_gb").index.tolist() == list(range(1, 51))
    assert len(s.get("train/loss/first")) == 1  # the first loss of the run, not of the resume
    segs = sorted(f for f in os.listdir(run.path) if f.startswith("scalars-"))
    assert segs == ["scalars-0000.bin", "scalars-0001.bin"]  # nothing old rewritten


def test_reader_ignores_what_another_run_id_wrote(root):
    x, y = blobs(n=2000)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    run = collector.attach(model, opt, root=root, name="mine", log_every=10)
    _steps(run, 20, x, y, model, opt)
    run.close()
    clean = read_run(run.path)
    other = "ab" * 16
    with open(os.path.join(run.path, fmt.KEYS_FILE), "a") as f:
        f.write(fmt.key_line(0, "custom/intruder", other))
    with open(os.path.join(run.path, fmt.segment_name(7)), "wb") as f:
        f.write(fmt.header_bytes(bytes.fromhex(other)) + fmt.pack_record(5, 1.0, 99.0, 0) * 3)
    r = RunReader(run.path)
    r.poll()
    s = r.series()
    assert "custom/intruder" not in s.keys and r.foreign_records == 4
    assert s.get("train/loss/mean").equals(clean.get("train/loss/mean"))
    assert any("another run" in p for p in r.problems)


# ---- record checks -------------------------------------------------------------------
def test_two_equal_bit_flips_are_caught(root):
    """The same bit flipped in two words cancels out in an XOR parity; CRC-32 catches it."""
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = collector.attach(model, opt, root=root, name="flip")
    for step in range(10):
        run.log({"v": float(step)}, step=200)
    run.close()
    seg = os.path.join(run.path, fmt.segment_name(0))
    data = bytearray(open(seg, "rb").read())
    at = fmt.HEADER_V2_SIZE + 3 * fmt.RECORD_SIZE
    data[at + 7] ^= 0x40  # the step's top byte: 200 would read as 4.6e18
    data[at + 15] ^= 0x40  # the same bit of the wall time's top byte
    open(seg, "wb").write(bytes(data))
    r = RunReader(run.path)
    r.poll()
    assert r.corrupt_records == 1
    assert r.frame["step"].max() == 200 and len(r.frame) == 9


def test_version_one_runs_stay_readable(tmp_path):
    """A run in the old layout (16-byte header, parity checks, no run id) reads as before."""
    path = tmp_path / "old"
    path.mkdir()
    (path / fmt.META_FILE).write_text(json.dumps({"schema_version": 1, "name": "old", "status": "finished"}))
    (path / fmt.KEYS_FILE).write_text(json.dumps({"id": 0, "key": "train/loss/mean"}) + "\n")
    import struct
    recs = b""
    for step in range(1, 6):
        body = struct.pack("<qddI", step, 1.0, 1.0 / step, 0)
        recs += body + struct.pack("<I", fmt.parity_word(body))
    (path / fmt.segment_name(0)).write_bytes(fmt.HEADER.pack(fmt.MAGIC, 1, fmt.RECORD_SIZE) + recs)
    s = read_run(str(path))
    assert s.get("train/loss/mean").tolist() == pytest.approx([1.0, 0.5, 1 / 3, 0.25, 0.2])


def test_vectorised_crc_equals_zlib():
    import zlib

    from traindoc.crc import crc32_rows

    rows = np.random.default_rng(0).integers(0, 256, (500, 28), dtype=np.uint8)
    got = crc32_rows(rows, fmt.CHECK_SALT)
    assert [int(v) for v in got] == [zlib.crc32(r.tobytes(), fmt.CHECK_SALT) for r in rows]
