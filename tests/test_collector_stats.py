"""Every statistic the collector records, checked against plain torch on a real loop."""

from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn.functional as F

from traindoc import collector
from traindoc import format as fmt
from traindoc.reader import read_run
from tests.conftest import blobs, mlp


def _train(root, opt_factory, steps=60, log_every=10, ratio_every=1, sched_factory=None, batch=32, seed=0,
           after_step=True):
    """Train on blobs; return (run series, per-step losses, per-step correct, lrs used, true ratios)."""
    x, y = blobs(seed=seed)
    model = mlp(seed=seed)
    opt = opt_factory(model)
    sched = sched_factory(opt) if sched_factory else None
    run = collector.attach(model, opt, root=root, name="r", log_every=log_every, ratio_every=ratio_every)
    losses, corrects, lrs, ratios = [], [], [], []
    names = [n for n, _ in model.named_parameters()]
    for i in range(steps):
        xb, yb = x[(i * batch) % 480:][:batch], y[(i * batch) % 480:][:batch]
        out = model(xb)
        loss = F.cross_entropy(out, yb)
        if not after_step:
            run.log_train(loss, output=out, target=yb)
        opt.zero_grad()
        loss.backward()
        before = [p.detach().clone() for p in model.parameters()]
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        ratios.append({n: ((p.detach() - b).norm() / b.norm()).item()
                       for n, p, b in zip(names, model.parameters(), before)})
        if after_step:
            run.log_train(loss, output=out, target=yb)
        if sched:
            sched.step()
        losses.append(loss.item())
        corrects.append((out.argmax(-1) == yb).sum().item())
    run.close()
    return read_run(run.path), losses, corrects, lrs, ratios


@pytest.mark.parametrize("after_step", [True, False])
def test_window_mean_var_min_max_count(root, after_step):
    s, losses, corrects, _, _ = _train(root, lambda m: torch.optim.SGD(m.parameters(), lr=0.05),
                                       steps=55, log_every=10, after_step=after_step)
    mean = s.get("train/loss/mean")
    assert list(mean.index) == [10, 20, 30, 40, 50, 55]  # the last, partial window is closed at close()
    for end in mean.index:
        start = (end - 1) // 10 * 10
        window = torch.tensor(losses[start:end], dtype=torch.float64)
        assert s.get("train/loss/count")[end] == len(window)
        assert mean[end] == pytest.approx(window.mean().item(), rel=1e-6)
        assert s.get("train/loss/var")[end] == pytest.approx(window.var(unbiased=False).item(), rel=1e-5)
        assert s.get("train/loss/min")[end] == pytest.approx(window.min().item(), rel=1e-6)
        assert s.get("train/loss/max")[end] == pytest.approx(window.max().item(), rel=1e-6)
        assert s.get("train/acc")[end] == pytest.approx(sum(corrects[start:end]) / (32 * len(window)))


def test_epoch_windows_span_step_windows(root):
    x, y = blobs()
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    run = collector.attach(model, opt, root=root, name="ep", log_every=7)
    per_epoch = []
    for epoch in range(3):
        ls = []
        for i in range(12):  # epochs of 12 steps do not line up with windows of 7
            out = model(x[i * 32:(i + 1) * 32])
            loss = F.cross_entropy(out, y[i * 32:(i + 1) * 32])
            opt.zero_grad(); loss.backward(); opt.step()
            run.log_train(loss)
            ls.append(loss.item())
        run.end_epoch()
        per_epoch.append(ls)
    run.close()
    s = read_run(run.path)
    assert list(s.get("epoch")) == [1.0, 2.0, 3.0]
    em = s.get("train_epoch/loss/mean")
    assert list(em.index) == [12, 24, 36]
    for e, ls in enumerate(per_epoch):
        t = torch.tensor(ls, dtype=torch.float64)
        assert em.iloc[e] == pytest.approx(t.mean().item(), rel=1e-6)
        assert s.get("train_epoch/loss/var").iloc[e] == pytest.approx(t.var(unbiased=False).item(), rel=1e-5)
    # step windows still hold every loss exactly once
    assert s.get("train/loss/count").sum() == 36


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_update_ratios_match_actual_weight_change(root, opt_name):
    factory = {
        "sgd": lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3),
        "adam": lambda m: torch.optim.Adam(m.parameters(), lr=3e-3),
    }[opt_name]
    s, _, _, _, ratios = _train(root, factory, steps=20, ratio_every=4)
    w = s.get("update_ratio/0.weight")
    assert list(w.index) == [1, 4, 8, 12, 16, 20]  # step 1, then every 4th
    for step in w.index:
        for name in ("0.weight", "2.weight", "2.bias"):
            assert s.get("update_ratio/" + name)[step] == pytest.approx(ratios[step - 1][name], rel=1e-4)


def test_global_ratio_is_norm_of_all_updates(root):
    x, y = blobs()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    run = collector.attach(model, opt, root=root, name="global", ratio_every=1)
    expected = []
    for i in range(3):
        loss = F.cross_entropy(model(x[i * 32:(i + 1) * 32]), y[i * 32:(i + 1) * 32])
        opt.zero_grad()
        loss.backward()
        before = [p.detach().clone() for p in model.parameters()]
        opt.step()
        dw = sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before))
        w = sum((b ** 2).sum() for b in before)
        expected.append((dw.sqrt() / w.sqrt()).item())
    run.close()
    got = read_run(run.path).get("update_ratio/_global")
    assert list(got.index) == [1, 2, 3]
    assert got.tolist() == pytest.approx(expected, rel=1e-5)


def test_lr_one_cycle_and_warmup_exact(root):
    def sched(opt):
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[0.1, 0.01], total_steps=40)

    def opt(m):
        return torch.optim.SGD([{"params": m[0].parameters(), "lr": 0.1},
                                {"params": m[2].parameters(), "lr": 0.01}], lr=0.1, momentum=0.9)

    s, _, _, lrs, _ = _train(root, opt, steps=40, sched_factory=sched)
    for g in range(2):
        recorded = s.get(f"lr/pg{g}")
        full = recorded.reindex(range(1, 41)).ffill()
        assert full.tolist() == [lr[g] for lr in lrs]  # exactly, not approximately
    # one-cycle also cycles momentum
    assert s.get("momentum/pg0").nunique() > 10


def test_adam_betas_and_lambda_warmup(root):
    def sched(opt):
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / 10))

    s, _, _, lrs, _ = _train(root, lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3, betas=(0.8, 0.95)),
                             steps=25, sched_factory=sched)
    lr = s.get("lr/pg0").reindex(range(1, 26)).ffill()
    assert lr.tolist() == [x[0] for x in lrs]
    assert s.get("beta1/pg0").tolist() == [0.8]
    assert s.get("beta2/pg0").tolist() == [0.95]


def test_nan_and_inf_losses_are_recorded_not_dropped(root):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = collector.attach(model, opt, root=root, name="nan", log_every=2)
    values = [1.0, float("nan"), 2.0, float("inf")]
    for v in values:
        opt.step()
        run.log_train(torch.tensor(v))
    run.close()
    s = read_run(run.path)
    assert math.isnan(s.get("train/loss/mean")[2])
    assert s.get("train/loss/nonfinite")[2] == 1
    assert math.isinf(s.get("train/loss/mean")[4])
    assert s.get("train/loss/nonfinite")[4] == 1
    assert s.get("train/loss/min")[4] == 2.0


def test_accuracy_with_ignore_index_and_sequences(root):
    model = torch.nn.Linear(4, 5)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    run = collector.attach(model, opt, root=root, name="seq", log_every=1, ignore_index=-100)
    logits = torch.tensor([[[9., 0, 0, 0, 0], [0, 9., 0, 0, 0], [0, 0, 9., 0, 0]]])  # predicts 0,1,2
    target = torch.tensor([[0, 3, -100]])
    opt.step()
    run.log_train(torch.tensor(1.0), output=logits, target=target)
    run.close()
    s = read_run(run.path)
    assert s.get("train/acc")[1] == 0.5  # one of the two counted tokens is right
    assert s.meta["num_classes"] == 5


def test_val_and_custom_scalars_on_the_step_axis(root):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = collector.attach(model, opt, root=root, name="val", log_every=5)
    for _ in range(7):
        opt.step()
    run.log_val(loss=torch.tensor(0.7), accuracy=0.8, f1=torch.tensor([0.5, 0.7]))
    run.log({"grad_norm": 3.5, "temperature": torch.tensor(0.9)}, step=3)
    run.close()
    s = read_run(run.path)
    assert s.get("val/loss").to_dict() == {7: pytest.approx(0.7)}
    assert s.get("val/acc").to_dict() == {7: pytest.approx(0.8)}
    assert s.get("val/f1").to_dict() == {7: pytest.approx(0.6)}
    assert s.get("custom/grad_norm").to_dict() == {3: 3.5}
    assert s.get("custom/temperature").to_dict() == {3: pytest.approx(0.9)}


def test_metadata(root):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with collector.attach(model, opt, root=root, name="meta run!", config={"lr": 0.1, "tags": ["a"]},
                          num_classes=3) as run:
        opt.step()
    s = read_run(run.path)
    m = s.meta
    assert run.name == "meta_run"
    assert m["status"] == "finished" and m["end_time"] >= m["start_time"]
    assert m["config"] == {"lr": 0.1, "tags": ["a"]}
    assert m["num_params"] == sum(p.numel() for p in model.parameters())
    assert m["num_classes"] == 3 and m["device"] == "cpu" and m["torch_version"] == torch.__version__
    assert m["schema_version"] == fmt.SCHEMA_VERSION == 2 and m["host"] and len(m["run_id"]) == 32


def test_exception_inside_context_marks_crashed(root):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError):
        with collector.attach(model, opt, root=root, name="boom") as run:
            raise RuntimeError("diverged")
    m = read_run(run.path).meta
    assert m["status"] == "crashed" and "diverged" in m["end_reason"]


def test_hooks_removed_on_close(root):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = collector.attach(model, opt, root=root, name="h")
    run.close()
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks


def test_bad_arguments_rejected_clearly(root):
    model = mlp()
    with pytest.raises(TypeError, match="optimizer"):
        collector.attach(model, object(), root=root)
    with pytest.raises(ValueError, match="log_every"):
        collector.attach(model, torch.optim.SGD(model.parameters(), lr=0.1), root=root, log_every=0)


def _tiny(lr: float):
    """A 4 -> 3 linear classifier and its SGD, seeded."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    return model, torch.optim.SGD(model.parameters(), lr=lr)


def _tiny_step(model, opt):
    """One optimizer step on a fresh random batch of 8; returns (logits, targets, loss)."""
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    out = model(x)
    loss = F.cross_entropy(out, y)
    opt.zero_grad(); loss.backward(); opt.step()
    return out, y, loss


def test_cpu_windows_are_computed_by_the_writer_within_the_logits_budget(root):
    """On CPU in one process a window's statistics are left to the writer thread, but the
    logits those windows hold stay within `stash_limit`; past it the training thread scores."""
    import threading

    model, opt = _tiny(lr=0.1)
    run = collector.attach(model, opt, root=root, name="held", log_every=1, ratio_every=0, flush_secs=60)
    run._window.stash_limit = 100  # each step's logits are 8 x 3 = 24 elements: four windows fit
    threads = []
    compute = run._window._stats
    run._window._stats = lambda *a: (threads.append(threading.current_thread().name), compute(*a))[1]
    losses, accs = [], []
    for _ in range(10):
        out, y, loss = _tiny_step(model, opt)
        run.log_train(loss, output=out, target=y)
        losses.append(loss.item())
        accs.append((out.argmax(-1) == y).float().mean().item())
    assert sum(n for p, n in run._window._held if not p.done) <= 100
    run.close()
    assert sorted(threads) == ["MainThread"] * 6 + ["traindoc-writer"] * 4  # 4 fit; the 6 others are scored at once
    s = read_run(run.path)
    assert s.get("train/loss/mean").tolist() == pytest.approx(losses, rel=1e-6)
    assert s.get("train/acc").tolist() == pytest.approx(accs)


def test_epoch_parts_stay_few_without_end_epoch(root):
    """A script that never calls end_epoch() must not keep one part per window forever."""
    model, opt = _tiny(lr=0.1)
    run = collector.attach(model, opt, root=root, name="noepoch", log_every=1, ratio_every=0, flush_secs=0.01)
    losses = []

    def step():
        _, _, loss = _tiny_step(model, opt)
        run.log_train(loss)
        losses.append(loss.item())

    for _ in range(300):
        step()
    # Parts the writer thread has computed are merged when windows close; on a loaded machine the
    # writer may lag, so training goes on a while for it to catch up (a bound, not a timing)
    deadline = time.monotonic() + 30
    while len(run._window.epoch_parts) >= 80 and time.monotonic() < deadline:
        step()
        time.sleep(0.01)
    assert len(run._window.epoch_parts) < 80
    run.end_epoch()  # the one epoch still holds every loss
    run.close()
    s = read_run(run.path)
    t = torch.tensor(losses, dtype=torch.float64)
    assert s.meta["warnings"] == []
    assert s.get("train_epoch/loss/count").tolist() == [len(losses)]
    assert s.get("train/loss/count").sum() == len(losses)
    assert s.get("train_epoch/loss/mean").iloc[0] == pytest.approx(t.mean().item(), rel=1e-6)
    assert s.get("train_epoch/loss/var").iloc[0] == pytest.approx(t.var(unbiased=False).item(), rel=1e-5)
    assert s.get("train_epoch/loss/max").iloc[0] == pytest.approx(t.max().item(), rel=1e-6)


def test_static_output_buffers_are_copied_where_not_kept_by_reference(root):
    """CUDA graphs hand back the same output tensors every step, overwritten in place. Off the
    CPU the collector copies each loss and scores the logits at once; here the CPU is told to
    behave so, and a loop that reuses static buffers must still get every step's values."""
    model, opt = _tiny(lr=0.5)
    run = collector.attach(model, opt, root=root, name="static", log_every=5, ratio_every=0)
    run._window.by_reference = ()  # what a CUDA device gets
    static_loss, static_out, static_y, static_acc = torch.zeros(()), torch.zeros(8, 3), torch.zeros(8).long(), torch.zeros(())
    losses, accs = [], []
    for _ in range(10):
        out, y, loss = _tiny_step(model, opt)
        with torch.no_grad():  # a graph replay: results land in the same tensors every step
            static_loss.copy_(loss); static_out.copy_(out); static_y.copy_(y)
            static_acc.copy_((out.argmax(-1) == y).float().mean())
        run.log_train(static_loss, output=static_out, target=static_y)
        run.log({"acc_given": static_acc})
        losses.append(loss.item())
        accs.append(static_acc.item())
    run.close()
    s = read_run(run.path)
    t = torch.tensor(losses, dtype=torch.float64)
    assert s.get("train/loss/mean").tolist() == pytest.approx([t[:5].mean().item(), t[5:].mean().item()], rel=1e-6)
    assert s.get("train/loss/var").tolist() == pytest.approx(
        [t[:5].var(unbiased=False).item(), t[5:].var(unbiased=False).item()], rel=1e-5)
    assert s.get("train/acc").tolist() == pytest.approx([sum(accs[:5]) / 5, sum(accs[5:]) / 5])
    assert s.get("custom/acc_given").tolist() == pytest.approx(accs)


def test_label_entropy_of_the_first_window(root):
    """The entropy of the first window's class frequencies (ignored targets aside), once."""
    import math

    model = torch.nn.Linear(4, 5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = collector.attach(model, opt, root=root, name="prior", log_every=2, ratio_every=0, ignore_index=4)
    targets = [torch.tensor([0, 0, 0, 1, 4, -100]), torch.tensor([0, 1, 2, 2, 4, 4]), torch.tensor([3, 3, 3, 3, 3, 3])]
    for y in targets:
        out = model(torch.randn(len(y), 4))
        loss = out.pow(2).mean()
        opt.zero_grad(); loss.backward(); opt.step()
        run.log_train(loss, output=out, target=y)
    run.close()
    counts = [4, 2, 2, 0]  # the first window (two steps): 4 and -100 ignored
    p = [c / sum(counts) for c in counts if c]
    s = read_run(run.path)
    assert s.get("train/label_entropy").tolist() == [pytest.approx(-sum(x * math.log(x) for x in p))]
