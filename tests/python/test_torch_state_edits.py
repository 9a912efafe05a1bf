"""pyopt.torch where torch code pokes at an optimizer: edits of ``opt.state`` (ZeroRedundancyOptimizer
resumes its local optimizer by assigning it), param groups replaced by new tensors, checkpoints of
older torch versions, autograd's version counter, 0-d params, all-or-nothing multi-group steps,
errors naming the group. The reference is torch.optim's behaviour in each case."""
from __future__ import annotations

import collections
import copy
import gc
import weakref

import pytest

torch = pytest.importorskip("torch")

import pyopt.torch as pt  # noqa: E402


def _adam_run(cls, edit):
    """Adam for 3 steps, ``edit(opt, p)``, 3 more steps: the params and the saved steps."""
    gen = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.randn(8, generator=gen, dtype=torch.float64))
    grads = [torch.randn(8, generator=gen, dtype=torch.float64) for _ in range(6)]
    opt = cls([p], lr=0.1)
    for k, g in enumerate(grads):
        if k == 3:
            edit(opt, p)
        p.grad = g.clone()
        opt.step()
    return p.detach(), {i: float(entry["step"]) for i, entry in opt.state_dict()["state"].items()}


STATE_EDITS = {
    "replaced": lambda opt, p: setattr(opt, "state", collections.defaultdict(dict)),
    "cleared": lambda opt, p: opt.state.clear(),
    "entry deleted": lambda opt, p: opt.state.__delitem__(p),
    "moment replaced": lambda opt, p: opt.state[p].__setitem__("exp_avg", torch.zeros(8, dtype=torch.float64)),
    "step replaced": lambda opt, p: opt.state[p].__setitem__("step", torch.tensor(0.0)),
    "moment zeroed in place": lambda opt, p: opt.state[p]["exp_avg"].zero_(),
}


@pytest.mark.parametrize("edit", STATE_EDITS.values(), ids=STATE_EDITS.keys())
def test_edits_of_the_state_are_seen_as_by_torch(edit):
    """torch code resets an optimizer with ``opt.state = defaultdict(dict)``, ``opt.state.clear()``,
    ``del opt.state[p]`` or by replacing a moment: the next steps and the checkpoint follow."""
    theirs, their_steps = _adam_run(torch.optim.Adam, edit)
    ours, our_steps = _adam_run(pt.Adam, edit)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
    assert our_steps == their_steps


def test_state_given_before_the_first_step_is_used_as_by_torch():
    """ZeroRedundancyOptimizer.load_state_dict resumes its local optimizer with
    ``optim.state[p] = loaded entry`` (then edits the entry): the next step continues from it."""
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(7, generator=gen, dtype=torch.float64)
    grads = [torch.randn(7, generator=gen, dtype=torch.float64) for _ in range(6)]
    source = torch.nn.Parameter(start.clone())
    trained = torch.optim.Adam([source], lr=0.05)
    for g in grads[:3]:
        source.grad = g.clone()
        trained.step()
    finals = {}
    for cls in (torch.optim.Adam, pt.Adam):
        p = torch.nn.Parameter(source.detach().clone())
        opt = cls([p], lr=0.05)
        opt.state[p] = {k: v.clone() for k, v in trained.state[source].items()}
        opt.state[p]["step"] = opt.state[p]["step"].cpu()  # (as ZeRO does)
        for g in grads[3:]:
            p.grad = g.clone()
            opt.step()
        finals[cls] = p.detach()
    torch.testing.assert_close(finals[pt.Adam], finals[torch.optim.Adam], rtol=1e-12, atol=1e-14)


def test_zero_redundancy_optimizer_resumes_from_its_checkpoint_as_with_torch():
    dist = pytest.importorskip("torch.distributed")
    from torch.distributed.optim import ZeroRedundancyOptimizer
    if not dist.is_available() or dist.is_initialized():
        pytest.skip("needs its own (1-process gloo) process group")
    import tempfile

    def run(optimizer_class):
        torch.manual_seed(0)
        model = torch.nn.Linear(6, 3, dtype=torch.float64)
        x = torch.randn(16, 6, dtype=torch.float64)

        def train(opt, steps):
            for _ in range(steps):
                opt.zero_grad()
                model(x).square().mean().backward()
                opt.step()
        opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=optimizer_class, lr=0.01)
        train(opt, 5)
        opt.consolidate_state_dict(to=0)
        checkpoint, weights = copy.deepcopy(opt.state_dict()), copy.deepcopy(model.state_dict())
        train(opt, 5)
        model.load_state_dict(weights)
        resumed = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=optimizer_class, lr=0.01)
        resumed.load_state_dict(checkpoint)
        train(resumed, 5)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    with tempfile.TemporaryDirectory() as folder:  # (the FileStore deletes its file when done)
        dist.init_process_group("gloo", store=dist.FileStore(f"{folder}/store", 1), rank=0, world_size=1)
        try:
            theirs, ours = run(torch.optim.Adam), run(pt.Adam)
        finally:
            dist.destroy_process_group()
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)


def test_param_groups_replaced_by_new_tensors_are_not_kept_alive():
    """An engine that gives the optimizer new flat partitions and drops their state (as torch.optim
    lets it) must not find them all still held by pyopt.torch's cache."""
    alive = {}
    for cls in (torch.optim.AdamW, pt.AdamW):
        opt = cls([torch.nn.Parameter(torch.zeros(4))], lr=1e-3)
        refs = []
        for _ in range(5):
            flat = torch.nn.Parameter(torch.zeros(1000))
            flat.grad = torch.ones(1000)
            opt.param_groups[0]["params"] = [flat]
            opt.step()
            opt.state.pop(flat)
            refs.append(weakref.ref(flat))
            del flat
        gc.collect()
        alive[cls.__module__] = sum(r() is not None for r in refs)
    assert alive["pyopt.torch"] == alive["torch.optim.adamw"]


@pytest.mark.parametrize("name, dropped", [
    ("Adam", ["decoupled_weight_decay"]),  # torch < 2.6 (decoupled_weight_decay came later)
    ("AdamW", ["maximize", "foreach", "capturable", "differentiable", "fused"]),
    ("SGD", ["maximize", "foreach", "differentiable", "fused"]),
    ("RMSprop", ["maximize", "foreach", "capturable", "differentiable"]),
])
def test_a_checkpoint_of_an_older_torch_loads_as_into_torch(name, dropped):
    """torch's __setstate__ gives the hyperparameters a checkpoint predates their defaults."""
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(9, generator=gen, dtype=torch.float64)
    grads = [torch.randn(9, generator=gen, dtype=torch.float64) for _ in range(6)]
    saver_param = torch.nn.Parameter(start.clone())
    saver = getattr(torch.optim, name)([saver_param], lr=0.05)
    for g in grads[:3]:
        saver_param.grad = g.clone()
        saver.step()
    checkpoint = copy.deepcopy(saver.state_dict())
    for key in dropped:
        del checkpoint["param_groups"][0][key]
    params = {}
    for cls in (getattr(torch.optim, name), getattr(pt, name)):
        p = torch.nn.Parameter(saver_param.detach().clone())
        opt = cls([p], lr=0.5)
        opt.load_state_dict(copy.deepcopy(checkpoint))
        for g in grads[3:]:
            p.grad = g.clone()
            opt.step()
        params[cls.__module__.startswith("pyopt")] = p.detach()
    torch.testing.assert_close(params[True], params[False], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cls", [torch.optim.SGD, pt.SGD], ids=["torch", "pyopt"])
def test_a_step_between_forward_and_backward_is_refused_as_by_torch(cls):
    """The params are written through numpy; autograd must still see an in-place change."""
    w = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 6))
    opt = cls([w], lr=0.1)
    w.grad = torch.ones(6)
    loss = w.sin().sum()  # saves w for backward
    version = w._version
    opt.step()
    assert w._version > version
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize("cls, hyper", [(pt.LaProp, {}), (pt.ScheduleFreeAdamW, {"warmup_steps": 0}),
                                        (pt.NAdam, {}), (pt.ASGD, {})])
def test_a_checkpoint_round_trip_continues_bit_for_bit(cls, hyper):
    """Per-param scalars (LaProp's exp_avg_lr_*, schedule-free lr_max / weight_sum) must not be
    rounded to float32 where no torch twin reads them."""
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(300, generator=gen)
    grads = [torch.randn(300, generator=gen) for _ in range(40)]
    first = torch.nn.Parameter(start.clone())
    opt = cls([first], lr=0.01, **hyper)
    for g in grads[:20]:
        first.grad = g.clone()
        opt.step()
    second = torch.nn.Parameter(first.detach().clone())
    resumed = cls([second], lr=0.01, **hyper)
    resumed.load_state_dict(copy.deepcopy(opt.state_dict()))
    for g in grads[20:]:
        first.grad, second.grad = g.clone(), g.clone()
        opt.step()
        resumed.step()
    assert torch.equal(first, second)


def test_the_state_of_a_0d_param_is_saved_as_torch_saves_it():
    """A 0-d param (CLIP's logit_scale): its state arrays are 0-d, not scalars to round."""
    saved = {}
    for cls in (torch.optim.Adam, pt.Adam):
        gen = torch.Generator().manual_seed(0)
        p = torch.nn.Parameter(torch.tensor(2.0, dtype=torch.float64))
        opt = cls([p], lr=0.1)
        for _ in range(3):
            p.grad = torch.randn((), generator=gen, dtype=torch.float64)
            opt.step()
        saved[cls] = opt.state_dict()["state"][0]
    ours, theirs = saved[pt.Adam], saved[torch.optim.Adam]
    for key in ("exp_avg", "exp_avg_sq"):
        assert ours[key].dtype == theirs[key].dtype == torch.float64
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-14, atol=0)


@pytest.mark.parametrize("cls", [pt.Muon, pt.Adafactor, pt.AdamW])
def test_a_bad_hyperparameter_in_a_later_group_changes_nothing(cls):
    a, b = torch.nn.Parameter(torch.ones(6, 4)), torch.nn.Parameter(torch.ones(5, 3))
    opt = cls([{"params": [a]}, {"params": [b]}], lr=0.1)
    opt.param_groups[1]["lr"] = -1.0
    a.grad, b.grad = torch.ones(6, 4), torch.ones(5, 3)
    with pytest.raises(ValueError, match=r"param_groups\[1\]"):
        opt.step()
    assert torch.equal(a, torch.ones(6, 4)) and not opt.state


def test_errors_name_the_group_and_param_as_param_groups_shows_them():
    a, b, c = (torch.nn.Parameter(torch.ones(n)) for n in (6, 5, 3))
    opt = pt.AdamW([{"params": [a]}, {"params": [b, c]}], lr=0.1)
    with pytest.raises(ValueError, match=r"param_groups\[2\].*beta2"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))], "betas": (0.9, 1.5)})
    with pytest.raises(ValueError, match=r"Muon: param_groups\[1\]\['params'\]\[0\].*2-D"):
        pt.Muon([{"params": [torch.nn.Parameter(torch.ones(3, 3))]}, {"params": [torch.nn.Parameter(torch.ones(3))]}])


def test_a_bad_hessian_estimate_changes_nothing():
    a, b = torch.nn.Parameter(torch.ones(5)), torch.nn.Parameter(torch.ones(4))
    opt = pt.SophiaG([{"params": [a]}, {"params": [b]}], lr=0.1)
    with pytest.raises(ValueError, match="Hessian estimate 1"):
        opt.update_hessian([torch.full((5,), 2.0), torch.ones(3)])
    assert not opt.state or not opt.state[a]["hessian"].any()


@pytest.mark.parametrize("cls", [pt.Muon, pt.Adafactor])
def test_memory_of_the_python_written_optimizers(cls):
    p = torch.nn.Parameter(torch.ones(8, 4))
    opt = cls([p])
    p.grad = torch.ones(8, 4)
    opt.step()
    memory = opt.memory()
    assert memory["params"] == p.numel() * p.element_size()
    assert memory["total"] == sum(v for k, v in memory.items() if k != "total")
    assert "storage" not in opt.state_dict()  # (it has no storage options: no "storage": {})
