"""MARS with mars_type="shampoo" (pyopt/mars_shampoo.py, pyopt.MARSShampoo) against pytorch-optimizer
4.1.0's MARS(mars_type="shampoo"), plus how pyopt.MARS, pyopt.create and pyopt.torch reach it, its
errors, checkpoints and tuner space.

Cost: each step orthogonalizes every matrix (r × c) with five Newton–Schulz steps, 15 GEMMs of
O(r·c·min(r, c)) flops, an SVD's order (the paper's update is U Vᵀ of the momentum's SVD, which the
iteration approximates), where MARS-AdamW's step is O(r·c); 1-D params take an elementwise AdamW step.

Both sides run the iteration in bfloat16 (pyopt.muon's iteration is checked against
pytorch-optimizer's per call in test_normuon.py), so as for NorMuon and AdaMuon the comparison is
twofold: the rule with both sides using pyopt's iteration (tight), and the plain trajectory, within
the now-and-then one-ulp bfloat16 differences of long dot products. Each run takes 60 steps and
halves lr on both sides after step 30 (the 1-D params' lr follows: the reference's lr_1d_factor)."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

import pyopt
from pycheck import (assert_refused_before_changes, assert_resumes_bit_identically, relative_update_errors,
                     run_one_tuning_trial)
from pyopt.muon import _zeropower_via_newtonschulz
from refcheck import loguniform

torch = pytest.importorskip("torch")
pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
reference_module = pytest.importorskip("pytorch_optimizer.optimizer.mars")

STEPS = 60
SHAPES = [(1, 1), (7, 17), (17, 7), (64, 33), (4, 3, 5), (1,), (7,), (1023,), (0,), ()]


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):  # (conftest.py)
    pass


def draw(seed: int) -> dict:
    """Random hyperparameters (seed 0: the defaults); optimize_1d alternates with the seed."""
    rng = np.random.default_rng([seed, 2411, 10438])
    if seed == 0:
        return {}
    beta1 = [0.0, float(rng.uniform(0.05, 0.5)), float(rng.uniform(0.8, 0.99))][seed % 3]
    beta2 = [float(rng.uniform(0.9, 0.9999)), 0.0, float(rng.uniform(0.5, 0.99))][seed % 3]
    return {"lr": loguniform(rng, 1e-4, 3e-2), "betas": (beta1, beta2),
            "gamma": [0.025, 0.0, loguniform(rng, 1e-3, 1.0)][seed % 3],
            "weight_decay": [0.0, loguniform(rng, 1e-3, 0.3)][(seed // 2) % 2],
            "weight_decouple": seed % 5 != 3, "fixed_decay": seed % 4 == 1, "ams_bound": seed % 3 == 2,
            "eps": [1e-8, 0.0, loguniform(rng, 1e-12, 1e-3)][seed % 3],
            "optimize_1d": seed % 2 == 1, "lr_1d": loguniform(rng, 1e-4, 3e-2),
            "betas_1d": (float(rng.uniform(0.0, 0.99)), float(rng.uniform(0.5, 0.999))),
            "weight_decay_1d": [0.1, 0.0, loguniform(rng, 1e-3, 0.3)][seed % 3],
            "maximize": seed % 6 == 5, "cautious": seed % 4 == 3}


def data(seed: int, dtype: type, steps: int = STEPS, shapes=SHAPES):
    """Params and gradients; each tensor's gradients have their own scale, tiny to huge."""
    rng = np.random.default_rng([seed, 11])
    params0 = [np.asarray(rng.standard_normal(s)).astype(dtype) for s in shapes]
    scales = [rng.choice([1e-6, 1e-3, 1.0, 1e3, 1e6]) for _ in shapes]
    grads = [[np.asarray(rng.standard_normal(s) * scale).astype(dtype) for s, scale in zip(shapes, scales)]
             for _ in range(steps)]
    return params0, grads


@contextlib.contextmanager
def default_dtype(dtype: type):
    """float64 runs with torch's default dtype float64 (the reference's scalars follow it)."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if dtype == np.float64 else torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


def run(h: dict, params0, grads, halve_lr_at: int | None = STEPS // 2):
    """Both optimizers on the same gradients (lr halved on both after ``halve_lr_at`` steps);
    returns (pyopt params, reference params, pyopt optimizer, reference optimizer, torch params)."""
    params = [p.copy() for p in params0]
    opt = pyopt.MARSShampoo(params, **h)
    with default_dtype(params0[0].dtype.type):
        tparams = [torch.from_numpy(p.copy()).requires_grad_() for p in params0]
        ref = pytorch_optimizer.MARS(tparams, mars_type="shampoo", **h)
        for step, step_grads in enumerate(grads):
            if step == halve_lr_at:
                opt.param_groups[0]["lr"] *= 0.5
                ref.param_groups[0]["lr"] *= 0.5
            opt.step(step_grads)
            for tp, g in zip(tparams, step_grads):
                tp.grad = torch.from_numpy(np.array(g))  # a copy: the reference edits grads in place
            ref.step()
    return params, [tp.detach().numpy() for tp in tparams], opt, ref, tparams


def shared_ns(g, num_steps=5, eps=1e-7, safety_factor=1.0, weights=(3.4445, -4.775, 2.0315), dtype=None):
    """pytorch-optimizer's Newton–Schulz replaced by pyopt's (exact bfloat16 values)."""
    x = _zeropower_via_newtonschulz(g.float().numpy(), tuple(weights), num_steps, eps)
    return torch.from_numpy(np.ascontiguousarray(x)).bfloat16()


def max_error(params, ref) -> float:
    """max |pyopt − ref| / max |ref| over all params (finite reference entries)."""
    num = max((float(np.abs(p.astype(np.float64) - r)[np.isfinite(r)].max(initial=0)) for p, r in zip(params, ref)))
    den = max(float(np.abs(r[np.isfinite(r)]).max(initial=0)) for r in ref)
    return num / den


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(8))
def test_rule_matches_with_shared_newton_schulz(monkeypatch, seed, dtype):
    """Everything around the iteration, both sides using pyopt's. Measured (seeds 0-7): max
    relative update error per tensor float32 1.5e-3, float64 1.6e-14; max |pyopt − ref| / max |ref|
    float32 3.1e-5, float64 1.2e-16. float32 is looser: the reference sums the clip's ‖c‖ in another
    order, and a one-ulp difference of the momentum now and then moves a bfloat16 rounding of the
    iteration's input."""
    monkeypatch.setattr(reference_module, "zero_power_via_newton_schulz_5", shared_ns)
    h = draw(seed)
    params0, grads = data(seed, dtype)
    params, ref, opt, topt, tparams = run(h, params0, grads)
    errors = relative_update_errors(params, ref, params0)
    print(f"seed {seed} {dtype.__name__}: max |pyopt - ref| / max |ref| = {max_error(params, ref):.3g}, "
          f"max relative update error {max(errors):.3g}")
    tol = 5e-3 if dtype == np.float32 else 1e-12
    assert max(errors) < tol, (h, dict(zip(SHAPES, errors)))
    for i, tp in enumerate(tparams):
        for key, value in opt.state.get(i, {}).items():
            if key == "step":
                continue
            r = topt.state[tp][key].numpy()
            np.testing.assert_allclose(value, r, rtol=tol * 10, atol=tol * 10 * float(np.abs(r).max(initial=0)),
                                       err_msg=f"{SHAPES[i]} {key}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(4))
def test_matches_pytorch_optimizer(seed, dtype):
    """The plain trajectory, each side with its own bfloat16 iteration. Measured (seeds 0-3): max
    relative update error per tensor float32 1.7e-3, float64 7.9e-4 (a one-ulp bfloat16 difference,
    2^-8, now and then in the iteration's long dot products); max |pyopt − ref| / max |ref| float32
    3.0e-5, float64 9.3e-6."""
    h = draw(seed)
    params0, grads = data(seed, dtype)
    params, ref, *_ = run(h, params0, grads)
    errors = relative_update_errors(params, ref, params0)
    print(f"seed {seed} {dtype.__name__}: max |pyopt - ref| / max |ref| = {max_error(params, ref):.3g}, "
          f"max relative update error {max(errors):.3g}")
    assert max(errors) < 5e-3, (h, dict(zip(SHAPES, errors)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_tiny_nan_and_inf_gradients_as_the_reference(monkeypatch, dtype):
    """Gradients whose float32 squares overflow or underflow (in the clip's norm and the
    iteration's), and NaN, Inf and -Inf entries (a matrix's poisons it whole through the iteration):
    the same values, and the same NaN and Inf, as the reference."""
    monkeypatch.setattr(reference_module, "zero_power_via_newton_schulz_5", shared_ns)
    shapes = [(7, 17), (17, 7), (4, 3, 5), (5, 5), (1, 9), (7,), (9,), (3,)]
    params0, grads = data(7, dtype, steps=8, shapes=shapes)
    huge = 1e20 if dtype == np.float32 else 1e30
    for step in grads[:3]:
        step[3] *= huge
        step[4] /= huge
        step[6] *= huge
    grads[2][0][3, 1] = np.nan
    grads[3][1][1, 2] = np.inf
    grads[4][2][0, 0, 1] = -np.inf
    grads[5][7][1] = np.nan
    for h in ({}, {"eps": 0.0, "betas": (0.5, 0.9), "optimize_1d": True, "ams_bound": True},
              {"weight_decouple": False, "weight_decay": 0.1, "cautious": True}):
        params, ref, *_ = run(h, params0, grads, halve_lr_at=None)
        for shape, p, r in zip(shapes, params, ref):
            assert np.array_equal(np.isnan(p), np.isnan(r)) and np.array_equal(np.isinf(p), np.isinf(r)), (h, shape)
            finite = np.isfinite(r)
            np.testing.assert_allclose(p[finite], r[finite], rtol=1e-5,
                                       atol=1e-5 * float(np.abs(r[finite]).max(initial=0)), err_msg=f"{h} {shape}")
        assert all(np.isnan(p).all() for p in params[:3])


def test_wrong_hyperparameter_fails(monkeypatch):
    """The comparison can fail: each changed hyperparameter moves some param away from the reference."""
    monkeypatch.setattr(reference_module, "zero_power_via_newton_schulz_5", shared_ns)
    h = {**draw(1), "weight_decay": 0.1, "betas": (0.8, 0.9), "gamma": 0.1, "optimize_1d": False}
    params0, grads = data(1, np.float64, steps=20)
    _, ref, *_ = run(h, params0, grads)
    # beta2 is read by MARS-AdamW only, the 1-D params' step with optimize_1d: here it changes nothing.
    for change in ({"betas": (0.8, 0.5)}, {}, {"lr": h["lr"] * 1.01}, {"betas": (0.5, 0.9)}, {"gamma": 0.2},
                   {"weight_decay": 0.2}, {"weight_decay_1d": h["weight_decay_1d"] + 0.1},
                   {"lr_1d": h["lr_1d"] * 1.01}, {"betas_1d": (0.5, 0.9)}, {"optimize_1d": True}, {"eps": 1e-2},
                   {"weight_decouple": False}, {"fixed_decay": not h["fixed_decay"]}, {"cautious": True},
                   {"ams_bound": True, "optimize_1d": True}):
        ps = [p.copy() for p in params0]
        opt = pyopt.MARSShampoo(ps, **{**h, **change})
        for step, g in enumerate(grads):
            if step == STEPS // 2:
                opt.param_groups[0]["lr"] *= 0.5
            opt.step(g)
        same = all(np.allclose(p, r, rtol=1e-9) for p, r in zip(ps, ref))
        assert same == (change in ({"betas": (0.8, 0.5)}, {})), change


def test_empty_and_one_element_params():
    """An empty matrix is left alone (the reference cannot reshape it); its state is allocated."""
    params = [np.zeros((0, 4)), np.zeros((3, 0)), np.zeros(0), np.ones((1, 1)), np.ones(())]
    opt = pyopt.MARSShampoo(params, optimize_1d=True)
    opt.step([np.zeros((0, 4)), np.zeros((3, 0)), np.zeros(0), np.ones((1, 1)), np.ones(())])
    assert set(opt.state[0]) == {"step", "exp_avg", "last_grad"}
    assert set(opt.state[2]) == {"step", "exp_avg", "exp_avg_sq", "last_grad"}
    # a 1 x 1 matrix orthogonalizes to ±1: the step is -lr·sign(g)
    assert params[3][0, 0] == pytest.approx(1 - 3e-3, rel=1e-2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("optimize_1d", [False, True])
def test_state_dict_and_save_resume_bit_identically(dtype, optimize_1d, tmp_path):
    """Resumed from a state_dict or a pyopt.save file into an optimizer made with the defaults:
    the hyperparameters come back, lr_1d_factor (lr_1d / lr of the group when made) included."""
    h = {**draw(3), "lr": 0.01, "lr_1d": 0.002, "optimize_1d": optimize_1d, "ams_bound": True}
    assert_resumes_bit_identically(lambda ps: pyopt.MARSShampoo(ps, **h), [(6, 5), (3, 2, 4), (7,), (0, 3), ()],
                                   dtype, tmp_path)


@pytest.mark.parametrize("bad, error, name", [
    ({"lr": -1e-3}, ValueError, "lr"), ({"lr_1d": -1.0}, ValueError, "lr_1d"),
    ({"betas": (1.0, 0.9)}, ValueError, r"betas\[0\]"), ({"betas": (0.9, -0.1)}, ValueError, r"betas\[1\]"),
    ({"betas": 0.9}, TypeError, "betas"), ({"betas_1d": (0.9, 1.0)}, ValueError, r"betas_1d\[1\]"),
    ({"betas_1d": (0.9,)}, TypeError, "betas_1d"), ({"gamma": -0.1}, ValueError, "gamma"),
    ({"gamma": float("inf")}, ValueError, "gamma"), ({"weight_decay": -1.0}, ValueError, "weight_decay"),
    ({"weight_decay_1d": float("nan")}, ValueError, "weight_decay_1d"), ({"eps": float("nan")}, ValueError, "eps"),
    ({"weight_decouple": 1}, TypeError, "weight_decouple"), ({"fixed_decay": None}, TypeError, "fixed_decay"),
    ({"ams_bound": "yes"}, TypeError, "ams_bound"), ({"optimize_1d": 0}, TypeError, "optimize_1d"),
    ({"maximize": 0}, TypeError, "maximize"), ({"cautious": 1.0}, TypeError, "cautious"),
    ({"lr_1d_factor": -1.0}, ValueError, "lr_1d_factor"),
])
def test_bad_hyperparameters_are_refused_before_anything_changes(bad, error, name):
    def make():
        params = [np.ones((3, 4)), np.ones(5)]
        return pyopt.MARSShampoo(params, lr=0.01), params

    if "lr_1d_factor" in bad:  # (set in a group, not a constructor argument)
        opt, params = make()
        opt.step([np.ones((3, 4)), np.ones(5)])
        before = [p.copy() for p in params]
        opt.param_groups[0]["lr_1d_factor"] = bad["lr_1d_factor"]
        with pytest.raises(error, match=name):
            opt.step([np.ones((3, 4)), np.ones(5)])
        assert all(np.array_equal(p, b) for p, b in zip(params, before))
        return
    assert_refused_before_changes(make, bad, error, name)


def test_memory_counts_the_second_moments_of_the_1d_params_only():
    params = [np.ones((6, 5), np.float32), np.ones(7, np.float32)]
    opt = pyopt.MARSShampoo(params)
    opt.step([np.ones((6, 5), np.float32), np.ones(7, np.float32)])
    assert opt.memory() == {"params": 148, "exp_avg": 148, "last_grad": 148, "exp_avg_sq": 28, "total": 472}
    with pytest.raises(ValueError, match="fewer than two dimensions"):
        pyopt.memory_estimate("mars_shampoo", [30, 7])


def test_lr_must_be_positive_when_a_group_is_made():
    with pytest.raises(ValueError, match="invalid lr: 0.0 .*lr_1d"):
        pyopt.MARSShampoo([np.ones((3, 4))], lr=0.0)
    opt = pyopt.MARSShampoo([np.ones((3, 4))], lr=0.01, lr_1d=0.05)
    assert opt.param_groups[0]["lr_1d_factor"] == pytest.approx(5.0)
    opt.add_param_group({"params": [np.ones(4)], "lr": 0.1})  # its own lr_1d / lr
    assert opt.param_groups[1]["lr_1d_factor"] == pytest.approx(0.5)
    opt.param_groups[0]["lr"] = 0.0  # (an edit, as a schedule's, keeps the ratio)
    opt.step([np.ones((3, 4)), np.ones(4)])


def test_mars_type_selects_the_optimizer():
    """pyopt.MARS and pyopt.create("mars") take pytorch-optimizer's mars_type: 'shampoo' builds a
    MARSShampoo from the same arguments, 'lion' is lion=True; a bad one is refused naming it."""
    ps = [np.ones((3, 4)), np.ones(5)]
    opt = pyopt.MARS(ps, 0.01, (0.9, 0.98), 0.05, mars_type="shampoo", optimize_1d=True, lr_1d=0.02)
    assert type(opt) is pyopt.MARSShampoo
    group = opt.param_groups[0]
    assert (group["lr"], group["betas"], group["gamma"], group["optimize_1d"]) == (0.01, (0.9, 0.98), 0.05, True)
    assert type(pyopt.create("mars", ps, mars_type="shampoo", lr=0.02)) is pyopt.MARSShampoo
    routed = pyopt.create("mars", ps, mars_type="shampoo", optimize_1d=True, lr_1d=0.02)  # its own keywords
    assert type(routed) is pyopt.MARSShampoo and routed.param_groups[0]["optimize_1d"] is True
    assert pyopt.MARS(ps, mars_type="lion").param_groups[0]["lion"] is True
    assert pyopt.create("mars", ps, mars_type="adamw").param_groups[0]["lion"] is False
    for bad, error in (({"mars_type": "muon"}, ValueError), ({"mars_type": None}, TypeError),
                       ({"mars_type": "shampoo", "lion": True}, ValueError),
                       ({"mars_type": "shampoo", "state_dtype": "bfloat16"}, ValueError)):
        with pytest.raises(error, match="mars_type"):
            pyopt.MARS(ps, **bad)
        with pytest.raises(error, match="mars_type"):
            pyopt.create("mars", ps, **bad)
    with pytest.raises(TypeError, match="optimize_1d"):  # MARS-AdamW's is pinned (optimize_1d=True)
        pyopt.MARS(ps, optimize_1d=True)


def test_torch_twin_steps_as_the_numpy_class():
    """pyopt.torch.MARS(mars_type="shampoo") is pyopt.torch.MARSShampoo, stepping as the numpy
    class (a scheduled lr included), and its state_dict resumes it."""
    import pyopt.torch as pt

    h = {"lr": 0.01, "lr_1d": 0.002, "weight_decay": 0.05, "gamma": 0.1}
    params0, grads = data(4, np.float32, steps=12, shapes=[(6, 5), (5,), (3, 2, 4)])
    params = [p.copy() for p in params0]
    opt = pyopt.MARSShampoo(params, **h)
    tparams = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params0]
    topt = pt.MARS(tparams, mars_type="shampoo", **h)
    assert type(topt) is pt.MARSShampoo
    sched = torch.optim.lr_scheduler.StepLR(topt, step_size=4, gamma=0.5)
    for step, step_grads in enumerate(grads):
        opt.param_groups[0]["lr"] = topt.param_groups[0]["lr"]
        opt.step(step_grads)
        for tp, g in zip(tparams, step_grads):
            tp.grad = torch.from_numpy(g.copy())
        topt.step()
        sched.step()
    for p, tp in zip(params, tparams):
        np.testing.assert_array_equal(p, tp.detach().numpy())
    # The group keeps lr_1d_factor (as the reference's): a resume after the schedule halved lr
    # steps the 1-D params with the ratio of the first lr, not lr_1d / the current lr.
    assert topt.param_groups[0]["lr_1d_factor"] == pytest.approx(0.2) and topt.param_groups[0]["lr"] < 0.01
    resumed_params = [torch.nn.Parameter(tp.detach().clone()) for tp in tparams]
    resumed = pt.MARSShampoo(resumed_params)
    resumed.load_state_dict(topt.state_dict())
    for step_grads in grads[:4]:
        for opt_, ps in ((topt, tparams), (resumed, resumed_params)):
            for tp, g in zip(ps, step_grads):
                tp.grad = torch.from_numpy(g.copy())
            opt_.step()
    for tp, rp in zip(tparams, resumed_params):
        assert torch.equal(tp, rp)
    assert type(pt.MARS(tparams, mars_type="lion")) is pt.MARS
    with pytest.raises(ValueError, match="mars_type"):
        pt.MARS(tparams, mars_type="sophia")


def test_created_by_name_and_tunable():
    opt = pyopt.create("mars_shampoo", [np.ones((3, 4), np.float32), np.ones(3, np.float32)], lr=0.01)
    assert isinstance(opt, pyopt.MARSShampoo) and opt.defaults["betas_1d"] == (0.9, 0.95)
    run_one_tuning_trial("mars_shampoo")
