"""pyopt.Prodigy, DAdaptAdam and DAdaptSGD against pytorch-optimizer 4.1.0's classes, side by side.

Both optimizers step the same start on the same noisy quadratic, two param groups of several params each,
for STEPS steps, with random hyperparameters (extremes included: growth_rate 1, eps 0 or None,
betas 0, large decays, maximize). pytorch-optimizer runs under torch's default dtype float64: it
keeps its sums in tensors of that dtype (pyopt keeps them in float64, as the official code's
``.item()`` does). Compared: every param at the end (max |difference| relative to the param's
largest magnitude) and the estimate d. Both are given the gradients at the reference's params (so
the estimate sees a real problem, and rounding differences do not feed back through the problem:
with beta2 = 0 and eps = 0 the closed loop is chaotic).

Known differences the harness accounts for (see pyopt/lr_free.py): Prodigy's coupled weight
decay is the official code's (pytorch-optimizer 4.1.0 adds it to the gradient after the update,
where it does nothing), so its reference there is fed ``g + weight_decay * p`` with
``weight_decay=0``; D-Adapt SGD's initial gradient norm is float64 in pyopt (float32 in
pytorch-optimizer's ``get_global_gradient_norm``), so the reference runs with a float64 one.

Measure the errors: ``python tests/python/test_lr_free.py`` prints the largest relative error per
optimizer and dtype over the random cases.
"""
from __future__ import annotations

import math
import os
import sys
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
from pytorch_optimizer.optimizer import dadapt as _dadapt  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from quadratic_task import Quadratic  # noqa: E402
from torch_defaults import default_dtype  # noqa: E402

import pyopt  # noqa: E402

NAMES = ("prodigy", "dadapt_adam", "dadapt_sgd")
REFERENCE = {"prodigy": pytorch_optimizer.Prodigy, "dadapt_adam": pytorch_optimizer.DAdaptAdam,
             "dadapt_sgd": pytorch_optimizer.DAdaptSGD}
CLASSES = {"prodigy": pyopt.Prodigy, "dadapt_adam": pyopt.DAdaptAdam, "dadapt_sgd": pyopt.DAdaptSGD}
STEPS = 60
# Sizes of the params: group 0 and group 1 (0, 1, 7, 17, 1023 and a matrix; BIG once).
SIZES = ([(7,), (0,), (1,), (17,)], [(1023,), (3, 5)])
BIG = ([(100003,), (7,)], [(1,)])
# Largest relative error allowed. float64 differs by rounding only (numpy's and torch's summation
# orders, torch's fused multiply-adds); float32 by the same in float32, which the estimate carries
# from step to step. Measured over CASES (the __main__ block): float64 3.3e-15 (prodigy), 9.8e-15
# (dadapt_adam), 1.4e-14 (dadapt_sgd); float32 2.6e-6, 5.0e-6, 2.4e-6.
TOLERANCE = {"float64": 1e-12, "float32": 1e-4}


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):  # (conftest.py)
    pass


def _float64_g0_norm(param_groups: Any, device: Any = None, **_: Any) -> torch.Tensor:
    """get_global_gradient_norm's result (the squared norm of all grads) in float64."""
    total = sum(float(p.grad.double().square().sum()) for g in param_groups for p in g["params"] if p.grad is not None)
    return torch.tensor([total], dtype=torch.float64)


# ----- random hyperparameters ---------------------------------------------------------------------
def draw(name: str, rng: np.random.Generator) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
    """(shared hyperparameters, per-group ones for 2 groups, maximize)."""
    pick = rng.integers
    lr = float(np.exp(rng.uniform(np.log(0.1), np.log(3.0)))) if pick(3) == 0 else 1.0
    growth = [math.inf, math.inf, math.inf, 1.0, 1.02, 2.0][pick(6)]
    d0 = [1e-6, 1e-6, 1e-3, 1e-8][pick(4)]
    maximize = bool(pick(5) == 0)

    def decay() -> dict[str, Any]:
        return {"weight_decay": [0.0, 1e-3, 0.1, 0.5][pick(4)], "weight_decouple": bool(pick(2)),
                "fixed_decay": bool(pick(2))}

    if name == "prodigy":
        b1, b2 = [0.9, 0.0, 0.5, 0.99][pick(4)], [0.999, 0.5, 0.9, 0.99][pick(4)]
        shared = {"lr": lr, "betas": (b1, b2), "beta3": [None, 0.0, 0.9, 1.0][pick(4)], "d0": d0,
                  "d_coef": [1.0, 0.5, 2.0, 0.1][pick(4)], "growth_rate": growth, "bias_correction": bool(pick(2))}
        groups = [{**decay(), "safeguard_warmup": bool(pick(2)), "eps": [1e-8, 0.0, None, 1e-3][pick(4)]}
                  for _ in range(2)]
    elif name == "dadapt_adam":
        b1, b2 = [0.9, 0.0, 0.5, 0.99][pick(4)], [0.999, 0.5, 0.9, 0.99][pick(4)]
        shared = {"lr": lr, "betas": (b1, b2), "d0": d0, "growth_rate": growth, "bias_correction": bool(pick(2))}
        groups = [{**decay(), "eps": [1e-8, 0.0, 1e-3][pick(3)]} for _ in range(2)]
    else:
        shared = {"lr": lr, "d0": d0, "growth_rate": growth}
        groups = [{**decay(), "momentum": [0.9, 0.0, 0.5, 0.99][pick(4)]} for _ in range(2)]
    return shared, groups, maximize


# ----- the side-by-side run -----------------------------------------------------------------------
def make_problem(sizes: tuple[list, list], dtype: np.dtype, seed: int, scale: float):
    """Starts, targets and curvatures per param: f = 0.5 sum c (p - target)^2, gradients noisy."""
    rng = np.random.default_rng(seed)
    shapes = [s for group in sizes for s in group]
    starts = [rng.standard_normal(s).astype(dtype) for s in shapes]
    targets = [rng.standard_normal(s) * 2.0 for s in shapes]
    curv = [np.exp(rng.uniform(-2, 1, s)) for s in shapes]
    return shapes, starts, targets, curv, rng


def run(name: str, dtype_name: str, seed: int, sizes=SIZES, steps: int = STEPS, scale: float = 1.0,
        zero_first: bool = False, poison: str | None = None, hyper=None) -> dict[str, Any]:
    """Steps pyopt and pytorch-optimizer side by side; returns the final params of both and d."""
    dtype = np.dtype(dtype_name)
    rng_h = np.random.default_rng(1000 + seed)
    shared, groups, maximize = hyper if hyper is not None else draw(name, rng_h)
    shapes, starts, targets, curv, rng = make_problem(sizes, dtype, seed, scale)
    n0 = len(sizes[0])
    mine = [s.copy() for s in starts]
    theirs = [torch.from_numpy(s.copy()) for s in starts]
    opt = CLASSES[name]([{"params": mine[:n0], **groups[0]}, {"params": mine[n0:], **groups[1]}],
                        **shared, maximize=maximize)
    ref_groups = [dict(g) for g in groups]
    folded = [0.0, 0.0]  # Prodigy's coupled decay, fed to the reference in the gradient
    if name == "prodigy":
        for k, g in enumerate(ref_groups):
            if not g["weight_decouple"] and g["weight_decay"] > 0:
                folded[k], g["weight_decay"] = g["weight_decay"], 0.0
    with default_dtype(torch.float64):
        ref = REFERENCE[name]([{"params": theirs[:n0], **ref_groups[0]}, {"params": theirs[n0:], **ref_groups[1]}],
                              **shared, maximize=maximize)
        sign = -1.0 if maximize else 1.0
        saved_norm = _dadapt.get_global_gradient_norm
        _dadapt.get_global_gradient_norm = _float64_g0_norm
        try:
            for step in range(steps):
                noise = [rng.standard_normal(s) * 0.1 for s in shapes]
                tgrads = [(sign * scale * (c * (p.numpy().astype(np.float64) - t) + e)).astype(dtype)
                          for p, t, c, e in zip(theirs, targets, curv, noise)]
                grads = [g.copy() for g in tgrads]
                if zero_first and step == 0:
                    grads = [np.zeros_like(g) for g in grads]
                    tgrads = [np.zeros_like(g) for g in tgrads]
                if poison and step == steps // 2:
                    bad = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}[poison]
                    grads[4].flat[3] = bad
                    tgrads[4].flat[3] = bad
                for k, (p, g) in enumerate(zip(theirs, tgrads)):
                    grad = torch.from_numpy(g.copy())
                    if folded[0 if k < n0 else 1]:
                        grad = grad + sign * folded[0 if k < n0 else 1] * p
                    p.grad = grad
                opt.step(grads)
                ref.step()
        finally:
            _dadapt.get_global_gradient_norm = saved_norm
    return {"mine": mine, "theirs": [t.numpy() for t in theirs], "d": opt.global_state.get("d"),
            "ref_d": ref.param_groups[0]["d"], "opt": opt, "starts": starts}


def relative_error(out: dict[str, Any]) -> float:
    worst = abs(out["d"] - out["ref_d"]) / abs(out["ref_d"])
    for a, b in zip(out["mine"], out["theirs"]):
        if a.size:
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
            finite = np.isfinite(b)
            np.testing.assert_array_equal(a[~finite], b[~finite])
            if finite.any():
                scale = max(float(np.abs(b[finite].astype(np.float64)).max()), 1e-30)
                diff = np.abs(a[finite].astype(np.float64) - b[finite].astype(np.float64)).max()
                worst = max(worst, float(diff) / scale)
    return worst


CASES = [(name, dtype, seed) for name in NAMES for dtype in ("float64", "float32") for seed in range(8)]


@pytest.mark.parametrize("name,dtype,seed", CASES)
def test_matches_pytorch_optimizer(name: str, dtype: str, seed: int) -> None:
    out = run(name, dtype, seed)
    assert relative_error(out) <= TOLERANCE[dtype]
    assert any(not np.array_equal(a, s) for a, s in zip(out["mine"], out["starts"]) if a.size)  # it moved


@pytest.mark.parametrize("name", NAMES)
def test_defaults_and_a_big_param(name: str) -> None:
    """The default hyperparameters, a 100003-element param, float32 and float64."""
    defaults = CLASSES[name]([np.zeros(1)]).defaults
    shared = {k: v for k, v in defaults.items() if k in CLASSES[name].shared}
    groups = [{k: v for k, v in defaults.items() if k not in CLASSES[name].shared and k != "maximize"}] * 2
    for dtype in ("float64", "float32"):
        out = run(name, dtype, 7, sizes=BIG, steps=50, hyper=(shared, groups, False))
        assert out["d"] > 1e-3  # (the estimate grew from d0 = 1e-6 toward the distance, ~2-3)
        assert relative_error(out) <= TOLERANCE[dtype]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scale", [1e-30, 1e25])
def test_tiny_and_huge_gradients(name: str, scale: float) -> None:
    for dtype in ("float64", "float32"):
        if dtype == "float32" and scale > 1e20:
            scale = 1e15  # (float32's squares overflow above ~1e19, and its sums above ~3e38)
        out = run(name, dtype, 3, scale=scale, steps=50)
        assert relative_error(out) <= TOLERANCE[dtype]


@pytest.mark.parametrize("name", NAMES)
def test_lr_zero_as_the_reference(name: str) -> None:
    """lr = 0 (the references skip the estimate's update then): nothing moves, in both."""
    shared, groups, _ = draw(name, np.random.default_rng(21))
    out = run(name, "float64", 21, steps=50, hyper=({**shared, "lr": 0.0}, groups, False))
    assert relative_error(out) <= TOLERANCE["float64"]
    decayed = any(g["weight_decay"] and g["weight_decouple"] and g["fixed_decay"] for g in groups)
    if not decayed:  # (fixed decoupled decay shrinks the params whatever lr is)
        for a, s in zip(out["mine"], out["starts"]):
            np.testing.assert_array_equal(a, s)


@pytest.mark.parametrize("name", NAMES)
def test_zero_gradient_first(name: str) -> None:
    """An all-zero first gradient: the sums the estimate divides by are 0 (nothing moves that
    step), then the run goes on as the reference's."""
    for dtype in ("float64", "float32"):
        out = run(name, dtype, 5, zero_first=True, steps=50)
        assert relative_error(out) <= TOLERANCE[dtype]
    opt = CLASSES[name]([p := np.ones(5)])
    opt.step([np.zeros(5)])
    assert np.array_equal(p, np.ones(5)) and opt.global_state["d"] == opt.param_groups[0]["d0"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("poison", ["nan", "inf", "-inf"])
def test_non_finite_gradients_as_the_reference(name: str, poison: str) -> None:
    for dtype in ("float64", "float32"):
        out = run(name, dtype, 11, poison=poison, steps=50)
        assert relative_error(out) <= TOLERANCE[dtype]
        assert math.isfinite(out["d"]) and out["d"] == pytest.approx(out["ref_d"], rel=TOLERANCE[dtype])


# ----- checkpoints --------------------------------------------------------------------------------
def _trajectory(name: str, split: int | None, via: str = "state_dict", tmp_path=None) -> list[np.ndarray]:
    """20 steps on two groups, the optimizer replaced by a restored copy after ``split`` steps."""
    rng = np.random.default_rng(4)
    params = [rng.standard_normal(s) for s in ((7,), (3, 4), (1,))]
    hyper = {"prodigy": dict(bias_correction=True, weight_decay=0.01),
             "dadapt_adam": dict(bias_correction=True, weight_decay=0.01, weight_decouple=True),
             "dadapt_sgd": dict(momentum=0.5, weight_decay=0.01)}[name]

    def build(ps):
        return CLASSES[name]([{"params": ps[:2]}, {"params": ps[2:], "weight_decay": 0.0}], **hyper)

    opt = build(params)
    for step in range(20):
        if step == split:
            copies = [p.copy() for p in params]
            if via == "state_dict":
                restored = build(copies)
                restored.load_state_dict(opt.state_dict())
            else:
                path = tmp_path / "ckpt.npz"
                pyopt.save(opt, path)
                restored = pyopt.load(path, [{"params": copies[:2]}, {"params": copies[2:]}])
            opt, params = restored, copies
        opt.step([np.sin(3.0 * p + step) + 0.3 * (p - 1.0) for p in params])
    return params + [np.array([opt.global_state[k] for k in opt.estimate])]


@pytest.mark.parametrize("name", NAMES)
def test_resumed_run_is_bit_identical(name: str, tmp_path) -> None:
    straight = _trajectory(name, None)
    for via in ("state_dict", "file"):
        for split in (0, 1, 9):
            resumed = _trajectory(name, split, via, tmp_path)
            for a, b in zip(straight, resumed):
                np.testing.assert_array_equal(a, b)
    opt = CLASSES[name]([np.ones(3)])
    sd = opt.state_dict()
    assert "global_state" not in sd  # nothing before the first step
    opt.step([np.ones(3)])
    sd = opt.state_dict()
    assert set(sd["global_state"]) == {"step", *opt.estimate} and sd["global_state"]["step"] == 1
    opt.zero_state()
    assert opt.global_state == {} and opt.state == {}


@pytest.mark.parametrize("name", NAMES)
def test_bad_global_state_is_refused_before_anything_changes(name: str) -> None:
    opt = CLASSES[name]([np.ones(3)])
    opt.step([np.ones(3)])
    good = opt.state_dict()
    before = (opt.global_state, {k: v.copy() for k, v in opt.state[0].items() if isinstance(v, np.ndarray)})
    bad = [({**good["global_state"], "d": "x"}, TypeError), ({**good["global_state"], "extra": 1.0}, ValueError),
           ({k: v for k, v in good["global_state"].items() if k != "d"}, ValueError),
           ({**good["global_state"], "step": -1}, ValueError), ([1.0], TypeError)]
    for value, exc in bad:
        with pytest.raises(exc, match="global_state"):
            opt.load_state_dict({**good, "global_state": value})
        assert opt.global_state == before[0]
        for k, v in before[1].items():
            np.testing.assert_array_equal(opt.state[0][k], v)


@pytest.mark.parametrize("name", NAMES)
def test_torch_twin_matches_and_round_trips(name: str) -> None:
    """pyopt.torch's twin steps as the numpy class (one param group) and its state_dict, the
    estimate included, resumes bit for bit."""
    import pyopt.torch as pt

    twin_class = getattr(pt, CLASSES[name].__name__)
    rng = np.random.default_rng(8)
    starts = [rng.standard_normal(s) for s in ((5,), (2, 3))]
    grads = [[rng.standard_normal(s.shape) for s in starts] for _ in range(12)]
    arrays = [s.copy() for s in starts]
    numpy_opt = CLASSES[name](arrays)
    tensors = [torch.tensor(s, requires_grad=True) for s in starts]
    twin = twin_class(tensors)
    for step, gs in enumerate(grads):
        if step == 6:
            sd = twin.state_dict()
            copies = [torch.tensor(t.detach().numpy(), requires_grad=True) for t in tensors]
            twin = twin_class(copies)
            twin.load_state_dict(sd)
            tensors = copies
        numpy_opt.step(gs)
        for t, g in zip(tensors, gs):
            t.grad = torch.from_numpy(g.copy())
        twin.step()
    for a, t in zip(arrays, tensors):
        np.testing.assert_array_equal(a, t.detach().numpy())


@pytest.mark.parametrize("name", NAMES)
def test_torch_twin_with_two_groups_keeps_one_estimate(name: str) -> None:
    """pyopt.torch steps each param group with a numpy optimizer of its own; they step together
    (lr_free.step_together), so the twin with two groups steps as the numpy class with two groups,
    and round-trips; a shared hyperparameter that differs between groups is refused."""
    import pyopt.torch as pt

    twin_class = getattr(pt, CLASSES[name].__name__)
    rng = np.random.default_rng(9)
    starts = [rng.standard_normal(s) for s in ((5,), (2, 3), (4,))]
    grads = [[rng.standard_normal(s.shape) for s in starts] for _ in range(10)]
    arrays = [s.copy() for s in starts]
    numpy_opt = CLASSES[name]([{"params": arrays[:2]}, {"params": arrays[2:], "weight_decay": 0.1}])
    tensors = [torch.tensor(s, requires_grad=True) for s in starts]

    def build(ts):
        return twin_class([{"params": ts[:2]}, {"params": ts[2:], "weight_decay": 0.1}])

    twin = build(tensors)
    for step, gs in enumerate(grads):
        if step == 5:
            sd = twin.state_dict()
            assert [g["global_state"] for g in sd["param_groups"]] == [numpy_opt.global_state] * 2
            copies = [torch.tensor(t.detach().numpy(), requires_grad=True) for t in tensors]
            twin = build(copies)
            twin.load_state_dict(sd)
            tensors = copies
        numpy_opt.step(gs)
        for t, g in zip(tensors, gs):
            t.grad = torch.from_numpy(g.copy())
        twin.step()
    for a, t in zip(arrays, tensors):
        np.testing.assert_array_equal(a, t.detach().numpy())
    assert [g["global_state"] for g in twin.param_groups] == [numpy_opt.global_state] * 2
    twin.param_groups[1]["lr"] = 0.5
    before = [t.detach().clone() for t in tensors]
    with pytest.raises(ValueError, match="lr"):
        twin.step()
    for b, t in zip(before, tensors):
        assert torch.equal(b, t.detach())


def test_step_together_checks_everything_first() -> None:
    from pyopt.lr_free import step_together

    a, b = np.ones(3), np.ones(2)
    first, second = pyopt.Prodigy([a]), pyopt.Prodigy([b])
    with pytest.raises(ValueError, match="gradient shape"):
        step_together([first, second], [[np.ones(3)], [np.ones(3)]])
    second.param_groups[0]["d_coef"] = 2.0
    with pytest.raises(ValueError, match="d_coef"):
        step_together([first, second], [[np.ones(3)], [np.ones(2)]])
    assert first.global_state == second.global_state == {} and first.state == second.state == {}
    with pytest.raises(TypeError, match="one class"):
        step_together([first, pyopt.DAdaptAdam([np.ones(1)])], [[np.ones(3)], [np.ones(1)]])
    second.param_groups[0]["d_coef"] = 1.0
    step_together([first, second], [[np.ones(3)], [np.ones(2)]])
    together = pyopt.Prodigy([{"params": [c := np.ones(3)]}, {"params": [e := np.ones(2)]}])
    together.step([np.ones(3), np.ones(2)])
    assert first.global_state == second.global_state == together.global_state
    assert np.array_equal(a, c) and np.array_equal(b, e)


# ----- bad input ----------------------------------------------------------------------------------
BAD = {
    "prodigy": [(dict(lr=-1.0), ValueError, "lr"), (dict(betas=(1.0, 0.9)), ValueError, r"betas\[0\]"),
                (dict(betas=(0.9,)), TypeError, "betas"), (dict(beta3=1.5), ValueError, "beta3"),
                (dict(d0=0.0), ValueError, "d0"), (dict(d_coef=0.0), ValueError, "d_coef"),
                (dict(growth_rate=0.5), ValueError, "growth_rate"), (dict(weight_decay=-1e-3), ValueError, "weight_decay"),
                (dict(eps=-1.0), ValueError, "eps"), (dict(eps="1e-8"), TypeError, "eps"),
                (dict(bias_correction=1), TypeError, "bias_correction"), (dict(lr=math.nan), ValueError, "lr"),
                (dict(safeguard_warmup=None), TypeError, "safeguard_warmup")],
    "dadapt_adam": [(dict(lr=-1.0), ValueError, "lr"), (dict(betas=(0.9, 1.0)), ValueError, r"betas\[1\]"),
                    (dict(d0=-1.0), ValueError, "d0"), (dict(growth_rate=math.nan), ValueError, "growth_rate"),
                    (dict(eps=None), TypeError, "eps"), (dict(eps=-1e-8), ValueError, "eps"),
                    (dict(weight_decouple="yes"), TypeError, "weight_decouple"),
                    (dict(d0=math.inf), ValueError, "d0")],
    "dadapt_sgd": [(dict(lr=-1.0), ValueError, "lr"), (dict(momentum=1.0), ValueError, "momentum"),
                   (dict(momentum=-0.1), ValueError, "momentum"), (dict(d0=0.0), ValueError, "d0"),
                   (dict(fixed_decay=0), TypeError, "fixed_decay"), (dict(maximize=None), TypeError, "maximize")],
}


@pytest.mark.parametrize("name", NAMES)
def test_bad_hyperparameters_raise_naming_them_before_anything_changes(name: str) -> None:
    cls = CLASSES[name]
    for kwargs, exc, word in BAD[name]:
        with pytest.raises(exc, match=word):
            cls([np.ones(3)], **kwargs)
        p = np.ones(3)
        opt = cls([p])
        opt.step([np.full(3, 0.5)])
        before = (p.copy(), opt.global_state)
        for key, value in kwargs.items():
            opt.param_groups[0][key] = value
        with pytest.raises(exc, match=word):
            opt.step([np.full(3, 0.5)])
        assert np.array_equal(p, before[0]) and opt.global_state == before[1]
        assert opt.state[0]["step"] == 1


@pytest.mark.parametrize("name", NAMES)
def test_groups_must_share_the_estimates_hyperparameters(name: str) -> None:
    cls = CLASSES[name]
    a, b = np.ones(3), np.ones(2)
    with pytest.raises(ValueError, match="lr"):
        cls([{"params": [a]}, {"params": [b], "lr": 0.5}])
    opt = cls([{"params": [a]}, {"params": [b], "weight_decay": 0.1}])  # per group: fine
    with pytest.raises(ValueError, match="d0"):
        opt.add_param_group({"params": [np.ones(1)], "d0": 1e-3})
    assert len(opt.param_groups) == 2
    opt.param_groups[1]["lr"] = 2.0
    with pytest.raises(ValueError, match="lr"):
        opt.step([np.ones(3), np.ones(2)])
    assert np.array_equal(a, np.ones(3)) and opt.global_state == {} and opt.state == {}


@pytest.mark.parametrize("name", NAMES)
def test_grads_are_not_modified_and_none_skips(name: str) -> None:
    cls = CLASSES[name]
    p, q = np.ones(4), np.full(3, 2.0)
    opt = cls([{"params": [p], "weight_decay": 0.1, "weight_decouple": False}, {"params": [q]}], maximize=True)
    g = np.linspace(-1, 1, 4)
    keep = g.copy()
    opt.step([g, None])
    opt.step([g, None])
    assert np.array_equal(g, keep) and np.array_equal(q, np.full(3, 2.0)) and 1 not in opt.state


# ----- tuner --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_tuner_searches_it(name: str) -> None:
    optuna = pytest.importorskip("optuna")
    from pyopt import tuner
    from pyopt.tuner import space

    assert name in space.tunable()
    labels = {d.label for d in space.dimensions(name, "full")}
    lo, hi = space.lr_range(name)
    assert lo < 1.0 < hi and hi / lo <= 10.0  # lr: a multiplier, searched narrowly around 1
    assert "weight_decay" in labels and ({"1-betas[0]", "1-betas[1]"} <= labels or "1-momentum" in labels)
    for budget in space.BUDGETS:
        params = {"optimizer": name, **space.default_params(name, budget)}
        hyper = space.suggest(optuna.trial.FixedTrial(params), name, budget)
        assert hyper["lr"] == 1.0 and CLASSES[name]([np.zeros(2)], **hyper)

    task = Quadratic("quadratic-lr-free", 2, curvature=(0.0, 0.0), random_start=False)
    val, info = tuner.train(task, name, space.defaults(name))
    assert val < info["initial_val_loss"] and not info["diverged"]
    result = tuner.tune(task, [name], trials=2, progress=False)
    assert len(result.studies[0].trials) == 2


if __name__ == "__main__":  # the errors measured over CASES, per optimizer and dtype
    worst: dict[tuple[str, str], float] = {}
    for name, dtype, seed in CASES:
        worst[name, dtype] = max(worst.get((name, dtype), 0.0), relative_error(run(name, dtype, seed)))
    for key, value in worst.items():
        print(*key, f"{value:.3g}")
