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
    relative update error per tensor float32 TBD, float64 TBD; max |pyopt − ref| / max |ref|
    float32 TBD, float64 TBD."""
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
    relative update error per tensor TBD; max |pyopt − ref| / max |ref| float32 TBD, float64 TBD."""
    h = draw(seed)
    params0, grads = data(seed, dtype)
    params, ref, *_ = run(h, params0, grads)
    errors = relative_update_errors(params, ref, params0)
    print(f"seed {seed} {dtype.__name__}: max |pyopt - ref| / max |ref| = {max_error(params, ref):.3g}, "
          f"max relative update error {max(errors):.3g}")
    assert max(errors) < 5e-3, (h, dict(zip(SHAPES, errors)))
