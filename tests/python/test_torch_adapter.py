"""pyopt.torch: every pyopt optimizer as a torch.optim.Optimizer. What the torch API promises (param
groups, schedulers, hooks, closures, lazy state, skipped None grads, Tensor lr, state_dict,
add_param_group, deepcopy) and that each class steps exactly as its numpy class does on the same
memory. torch.optim's own inputs: test_torch_optim_db.py; DDP / ZeRO: test_torch_distributed.py."""
from __future__ import annotations

import copy
import inspect
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pyopt  # noqa: E402
import pyopt.torch as pt  # noqa: E402
from pyopt import _core  # noqa: E402

RECORDS = _core.optimizers()
NAMES = list(RECORDS)
# Hyperparameters for a short run where the defaults would barely move or need more (Muon: 2-D).
HYPER = {"sgd": {"lr": 0.05}, "momentum": {"lr": 0.05}, "nag": {"lr": 0.05}, "signsgd": {"lr": 0.01},
         "signum": {"lr": 0.01}, "lars": {"lr": 0.05}, "schedulefree_sgd": {"lr": 0.05},
         "lbfgs": {"max_iter": 4, "history_size": 3, "line_search_fn": "strong_wolfe"}}


def numpy_class(name):
    return pyopt._pybase.python_optimizer(name) or getattr(pyopt, RECORDS[name]["class_name"])


def torch_class(name):
    return getattr(pt, RECORDS[name]["class_name"])


def shapes(name):
    return [(6, 5), (7, 3)] if name in ("muon", "normuon", "adamuon") else [(7,), (17,), (5, 4)]


def draws(name, steps=6, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes(name)]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes(name)] for _ in range(steps)]
    return params, grads


def test_import_pyopt_does_not_import_torch_or_pyopt_torch():
    code = "import sys, pyopt; print(sorted(m for m in ('torch', 'pyopt.torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == "[]"


def test_one_class_per_optimizer_named_as_the_numpy_classes():
    names = {RECORDS[n]["class_name"] for n in NAMES}
    assert set(pt.__all__) == names | {"Optimizer"}
    for name in NAMES:
        cls = torch_class(name)
        assert issubclass(cls, torch.optim.Optimizer) and cls.name == name
        sig = inspect.signature(cls)
        hyper = [p for p in inspect.signature(numpy_class(name)).parameters if p != "params"]
        assert list(sig.parameters)[: 1 + len(hyper)] == ["params"] + hyper, name


def quadratic(arrays, seed=1):
    """A loss with its gradients, in numpy (the same bits for both optimizers): the curvature and
    minimum of each element drawn once."""
    rng = np.random.default_rng(seed)
    curvatures = [rng.uniform(0.5, 4.0, a.shape).astype(a.dtype) for a in arrays]
    minima = [rng.standard_normal(a.shape).astype(a.dtype) for a in arrays]
    grads = [c * (a - m) for a, c, m in zip(arrays, curvatures, minima)]
    return sum(float(0.5 * (g * (a - m)).sum()) for a, g, m in zip(arrays, grads, minima)), grads


def assert_same_state(got, expected, where):
    """A torch state entry (tensors, lists of them) holds the bits of the numpy one."""
    if isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), where
        for k, (a, b) in enumerate(zip(got, expected)):
            assert_same_state(a, b, f"{where}[{k}]")
    elif expected is None:
        assert got is None, where
    elif isinstance(expected, np.ndarray):
        np.testing.assert_array_equal(got.numpy(), expected, err_msg=where)
    else:
        assert float(got) == float(expected), where


@pytest.mark.parametrize("name", NAMES)
def test_steps_exactly_as_the_numpy_class_in_place(name):
    """Same bits as the numpy optimizer on the same data; the tensors are updated in place (no copy).
    LBFGS steps with closures (the torch one sets the grads the numpy one returns)."""
    hyper = HYPER.get(name, {})
    params, grads = draws(name)
    reference = [p.copy() for p in params]
    numpy_opt = numpy_class(name)(reference, **hyper)
    tensors = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
    pointers = [t.data_ptr() for t in tensors]
    opt = torch_class(name)(tensors, **hyper)

    def closure():
        loss, step_grads = quadratic([t.detach().numpy() for t in tensors])
        for t, g in zip(tensors, step_grads):
            t.grad = torch.from_numpy(g)
        return torch.tensor(loss, dtype=torch.float64)  # (the float the numpy closure returns)

    for step_grads in grads:
        if numpy_opt.step_requires_closure:
            assert float(numpy_opt.step(lambda: quadratic(reference))) == float(opt.step(closure))
            continue
        if numpy_opt.step_requires_loss:  # (PolyakSGD, MoMo: the closure's loss, once per step)
            loss = 1.0 + float(np.square(step_grads[0]).sum())
            numpy_opt.step(step_grads, loss=loss)

            def with_loss(step_grads=step_grads, loss=loss):
                for t, g in zip(tensors, step_grads):
                    t.grad = torch.from_numpy(g.copy())
                return torch.tensor(loss, dtype=torch.float64)
            assert float(opt.step(with_loss)) == loss
            continue
        numpy_opt.step(step_grads)
        for t, g in zip(tensors, step_grads):
            t.grad = torch.from_numpy(g.copy())
        opt.step()
    assert [t.data_ptr() for t in tensors] == pointers
    for t, r in zip(tensors, reference):
        np.testing.assert_array_equal(t.detach().numpy().view(np.uint32), r.view(np.uint32), err_msg=name)
    assert len(opt.state) == len(numpy_opt.state) > 0
    for i, t in enumerate(tensors):
        expected = numpy_opt.state.get(i, {})
        got = opt.state.get(t, {})
        assert set(got) == set(expected), name
        for key, value in expected.items():
            assert_same_state(got[key], value, f"{name} {key}")


def test_param_groups_schedulers_and_tensor_lr_follow_torch():
    """Two groups, one with a Tensor lr, a torch LR scheduler editing both: the lrs of torch.optim.AdamW
    exactly and its float64 trajectory."""
    def run(cls):
        torch.manual_seed(0)
        a = torch.nn.Parameter(torch.randn(17, dtype=torch.float64))
        b = torch.nn.Parameter(torch.randn(7, dtype=torch.float64))
        opt = cls([{"params": [a]}, {"params": [b], "lr": torch.tensor(0.02, dtype=torch.float64)}],
                  lr=0.01, weight_decay=0.1)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[0.05, 0.03], total_steps=12)
        lrs = []
        for _ in range(10):
            (a.square().sum() + (b - 1).abs().sum()).backward()
            opt.step()
            opt.zero_grad()
            sched.step()
            lrs.append([float(g["lr"]) for g in opt.param_groups])
        return a, b, lrs
    a1, b1, lrs1 = run(torch.optim.AdamW)
    a2, b2, lrs2 = run(pt.AdamW)
    assert lrs1 == lrs2
    # (pyopt's kernels contract multiply-adds: float64 rounding-level differences)
    torch.testing.assert_close(a2, a1, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(b2, b1, rtol=1e-13, atol=1e-15)


def test_state_is_created_lazily_and_none_grads_are_skipped():
    a = torch.nn.Parameter(torch.ones(5))
    b = torch.nn.Parameter(torch.ones(3))
    opt = pt.Adam([a, b], lr=0.1)
    assert len(opt.state) == 0
    a.grad = torch.ones(5)
    opt.step()
    assert set(opt.state) == {a} and float(opt.state[a]["step"]) == 1
    assert torch.equal(b, torch.ones(3))
    b.grad = torch.ones(3)
    opt.step()
    assert float(opt.state[a]["step"]) == 2 and float(opt.state[b]["step"]) == 1


def test_closure_hooks_and_zero_grad():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    opt = pt.SGD([p], lr=0.1)
    calls = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append("post"))

    def closure():
        opt.zero_grad()
        loss = p.square().sum()
        assert torch.is_grad_enabled()
        loss.backward()
        return loss
    loss = opt.step(closure)
    assert loss.item() == 14.0 and calls == ["pre", "post"]
    assert torch.allclose(p, torch.tensor([0.8, -1.6, 2.4]))
    opt.zero_grad()
    assert p.grad is None


def test_add_param_group_checks_before_adding():
    a = torch.nn.Parameter(torch.ones(4))
    opt = pt.AdamW([a], lr=0.01)
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))], "lr": -1.0})
    assert len(opt.param_groups) == 1
    with pytest.raises(ValueError, match="not contiguous"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(4, 4).t())]})
    assert len(opt.param_groups) == 1
    b = torch.nn.Parameter(torch.ones(2))
    opt.add_param_group({"params": [b], "lr": 0.5})
    a.grad, b.grad = torch.ones(4), torch.ones(2)
    opt.step()
    assert b[0].item() < 0.6 and float(opt.state[b]["step"]) == 1


@pytest.mark.parametrize("make, error, words", [
    (lambda: torch.nn.Parameter(torch.ones(4, 4).t()), ValueError, ["param_groups[0]['params'][0]", "contiguous"]),
    (lambda: torch.ones(3, dtype=torch.int32), TypeError, ["params'][0]", "int32"]),
    (lambda: torch.ones(3, dtype=torch.complex64), RuntimeError, ["complex"]),
    (lambda: torch.empty(3, device="meta"), ValueError, ["meta", "CPU"]),
])
def test_params_pyopt_cannot_step_are_refused_by_name(make, error, words):
    with pytest.raises(error) as info:
        pt.AdamW([make()])
    for word in words:
        assert word in str(info.value)


def test_a_bad_grad_is_refused_before_anything_changes():
    a = torch.nn.Parameter(torch.ones(6))
    b = torch.nn.Parameter(torch.ones(4))
    opt = pt.AdamW([a, b], lr=0.1)
    a.grad = torch.ones(6)
    b.grad = torch.ones(8)[::2]  # not contiguous
    with pytest.raises(ValueError, match=r"grad of param_groups\[0\]\['params'\]\[1\].*contiguous"):
        opt.step()
    assert torch.equal(a, torch.ones(6)) and len(opt.state) == 0


def test_bfloat16_params_with_master_and_8bit_states_match_the_numpy_class():
    rng = np.random.default_rng(1)
    w = rng.standard_normal(5000).astype(ml_dtypes.bfloat16)
    grads = [rng.standard_normal(5000).astype(ml_dtypes.bfloat16) for _ in range(4)]
    reference = w.copy()
    numpy_opt = pyopt.AdamW([reference], lr=1e-2, master_weights=True, state_dtype="int8")
    t = torch.nn.Parameter(torch.from_numpy(w.view(np.int16).copy()).view(torch.bfloat16))
    opt = pt.AdamW([t], lr=1e-2, master_weights=True, state_dtype="int8")
    for g in grads:
        numpy_opt.step([g])
        t.grad = torch.from_numpy(g.view(np.int16).copy()).view(torch.bfloat16)
        opt.step()
    assert t.dtype == torch.bfloat16
    np.testing.assert_array_equal(t.detach().view(torch.int16).numpy(), reference.view(np.int16))
    state = opt.state[t]
    assert state["exp_avg"].dtype == torch.uint8 and state["exp_avg_absmax"].dtype == torch.float32
    assert state["master"].dtype == torch.float32
    assert opt.memory() == numpy_opt.memory() and opt.storage["state_dtype"] == "int8"


def test_state_dict_round_trip_with_storage_options_continues_the_same_trajectory():
    def fresh():
        torch.manual_seed(3)
        return torch.nn.Parameter(torch.randn(5000))
    grads = [torch.randn(5000) for _ in range(6)]
    p1 = fresh()
    opt1 = pt.AdamW([p1], lr=0.01, state_dtype="int8")
    for g in grads[:3]:
        p1.grad = g.clone()
        opt1.step()
    saved = copy.deepcopy(opt1.state_dict())
    assert saved["storage"]["state_dtype"] == "int8" and saved["state"][0]["step"].dtype == torch.float32
    p2 = torch.nn.Parameter(p1.detach().clone())
    opt2 = pt.AdamW([p2], lr=0.5)  # the saved lr and storage options are adopted
    opt2.load_state_dict(saved)
    assert opt2.param_groups[0]["lr"] == 0.01 and opt2.storage["state_dtype"] == "int8"
    for g in grads[3:]:
        p1.grad, p2.grad = g.clone(), g.clone()
        opt1.step()
        opt2.step()
    assert torch.equal(p1, p2)


def test_a_torch_checkpoint_loads_into_the_twin_and_back():
    torch.manual_seed(0)
    grads = [torch.randn(33) for _ in range(8)]
    start = torch.randn(33)
    p_torch = torch.nn.Parameter(start.clone())
    p_pyopt = torch.nn.Parameter(start.clone())
    opt_torch = torch.optim.AdamW([p_torch], lr=0.02, amsgrad=True)
    opt_pyopt = pt.AdamW([p_pyopt], lr=0.02, amsgrad=True)
    for g in grads[:3]:
        p_torch.grad = g.clone()
        opt_torch.step()
    p_pyopt.data.copy_(p_torch.data)
    opt_pyopt.load_state_dict(copy.deepcopy(opt_torch.state_dict()))
    for g in grads[3:5]:
        p_torch.grad, p_pyopt.grad = g.clone(), g.clone()
        opt_torch.step()
        opt_pyopt.step()
    torch.testing.assert_close(p_pyopt, p_torch, rtol=1e-6, atol=1e-7)
    back = torch.optim.AdamW([p_torch], lr=0.5, amsgrad=True)
    back.load_state_dict(copy.deepcopy(opt_pyopt.state_dict()))
    p_torch.data.copy_(p_pyopt.data)
    for g in grads[5:]:
        p_torch.grad, p_pyopt.grad = g.clone(), g.clone()
        back.step()
        opt_pyopt.step()
    torch.testing.assert_close(p_pyopt, p_torch, rtol=1e-6, atol=1e-7)


def test_a_bad_state_dict_changes_nothing():
    p = torch.nn.Parameter(torch.ones(8))
    opt = pt.Adam([p], lr=0.1)
    p.grad = torch.ones(8)
    opt.step()
    before = copy.deepcopy(opt.state_dict())
    bad = copy.deepcopy(before)
    bad["state"][0]["exp_avg"] = torch.ones(9)
    with pytest.raises(ValueError, match="exp_avg"):
        opt.load_state_dict(bad)
    bad = copy.deepcopy(before)
    bad["param_groups"][0]["lr"] = -1.0
    with pytest.raises(ValueError, match="lr"):
        opt.load_state_dict(bad)
    with pytest.raises(ValueError, match="parameter groups"):
        opt.load_state_dict({"state": {}, "param_groups": []})
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    assert torch.equal(after["state"][0]["exp_avg"], before["state"][0]["exp_avg"])


def test_deepcopy_continues_identically():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = pt.Lion(model.parameters(), lr=0.01)
    x = torch.randn(8, 4)
    model(x).square().mean().backward()
    opt.step()
    model2 = copy.deepcopy(model)
    opt2 = pt.Lion(model2.parameters(), lr=0.01)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    clone = copy.deepcopy(opt)  # copies its params too: steps them, not the originals
    for o, m in ((opt, model), (opt2, model2)):
        o.zero_grad()
        m(x).square().mean().backward()
        o.step()
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    assert all(float(clone.state[p]["step"]) == 1 for p in clone.state)


def test_schedule_free_modes_and_sophia_hessian_updates():
    p = torch.nn.Parameter(torch.linspace(-1, 1, 9))
    opt = pt.ScheduleFreeAdamW([p], lr=0.1, warmup_steps=0)
    for _ in range(3):
        p.grad = p.detach().clone()
        opt.step()
    y = p.detach().clone()
    opt.eval()
    assert not opt.train_mode and not torch.equal(p, y)
    with pytest.raises(RuntimeError, match="eval mode"):
        opt.step()
    assert opt.state_dict()["train_mode"] is False
    opt.train()
    torch.testing.assert_close(p, y)

    q = torch.nn.Parameter(torch.ones(6))
    sophia = pt.SophiaG([q], lr=0.1)
    sophia.update_hessian([torch.full((6,), 2.0)])
    np.testing.assert_allclose(sophia.state[q]["hessian"].numpy(), 0.01 * 2.0, rtol=1e-6)
    with pytest.raises(ValueError, match="one estimate"):
        sophia.update_hessian([])


def test_per_tensor_optimizers_refuse_params_they_were_not_given():
    a = torch.nn.Parameter(torch.ones(4, 3))
    opt = pt.LAMB([a], lr=0.01)
    flat = torch.nn.Parameter(torch.ones(12))
    opt.param_groups[0]["params"] = [flat]
    flat.grad = torch.ones(12)
    with pytest.raises(ValueError, match="was not given to the optimizer.*lamb"):
        opt.step()
    assert torch.equal(flat, torch.ones(12))
    elementwise = pt.AdamW([torch.nn.Parameter(torch.ones(4, 3))], lr=0.01)
    elementwise.param_groups[0]["params"] = [flat]
    elementwise.step()
    assert flat[0].item() < 1.0


def test_torch_flags_and_unknown_arguments():
    p = [torch.nn.Parameter(torch.ones(2))]
    pt.AdamW(p, foreach=True, fused=True)  # accepted: pyopt's kernels are fused
    with pytest.raises(ValueError, match="capturable"):
        pt.AdamW(p, capturable=True)
    with pytest.raises(ValueError, match="differentiable"):
        pt.AdamW(p, differentiable=True)
    with pytest.raises(TypeError, match="AdamW.*momentum"):
        pt.AdamW(p, momentum=0.9)
    with pytest.raises(TypeError, match="Lion.*foreach"):
        pt.Lion(p, foreach=True)  # no torch.optim.Lion: no torch flags
    with pytest.raises(ValueError, match="Tensor lr must be 1-element"):
        pt.AdamW(p, lr=torch.tensor([0.1, 0.2]))
