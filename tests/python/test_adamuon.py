"""AdaMuon (pyopt/adamuon.py) against pytorch-optimizer 4.1.0's AdaMuon (use_muon=True groups,
foreach=False), plus its errors, checkpoints and tuner space.

Both run the Newton–Schulz iteration in bfloat16 (pyopt.muon's iteration is checked against
pytorch-optimizer's per call in test_normuon.py), so as for NorMuon the comparison is twofold: the
rule with both sides using pyopt's iteration (tight), and the plain trajectory, within the
now-and-then one-ulp bfloat16 differences of long dot products."""
from __future__ import annotations

import numpy as np
import pytest

import pyopt
from pycheck import (STEPS, assert_refused_before_changes, assert_resumes_bit_identically, relative_update_errors,
                     run_against, run_one_tuning_trial)
from pyopt.muon import _zeropower_via_newtonschulz
from refcheck import loguniform

torch = pytest.importorskip("torch")
pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
reference_module = pytest.importorskip("pytorch_optimizer.optimizer.muon.adamuon")

COEFFS = (3.4445, -4.775, 2.0315)
SHAPES = [(1, 1), (1, 17), (17, 1), (7, 17), (17, 7), (64, 33), (3, 1023), (4, 3, 5), (8, 3, 3, 3), (1, 100003)]


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):  # (conftest.py)
    pass


def draw(seed: int) -> dict:
    rng = np.random.default_rng([seed, 2507, 11005])
    if seed == 0:
        return {}
    beta1 = [0.0, float(rng.uniform(0.05, 0.45)), float(rng.uniform(0.5, 0.99))][seed % 3]
    beta2 = [0.0, float(rng.uniform(0.5, 0.999))][seed % 2]
    return {"lr": loguniform(rng, 1e-3, 1e-1), "betas": (beta1, beta2),
            "weight_decay": [0.0, loguniform(rng, 1e-3, 0.2)][(seed // 2) % 2],
            "weight_decouple": seed % 5 != 3, "use_adjusted_lr": seed % 4 != 2,
            "eps": [1e-10, 0.0, loguniform(rng, 1e-12, 1e-3)][seed % 3], "maximize": seed % 6 == 5}


def reference(h: dict):
    ref = dict(h)
    if "ns_coefficients" in ref:
        ref["ns_coeffs"] = tuple(ref.pop("ns_coefficients"))
    return lambda ts: pytorch_optimizer.AdaMuon([{"params": ts, "use_muon": True}], foreach=False, **ref)


def data(seed: int, dtype: type, steps: int = STEPS, shapes=SHAPES):
    rng = np.random.default_rng([seed, 11])
    params0 = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[(rng.standard_normal(s) * rng.choice([1e-3, 1.0, 1e3])).astype(dtype) for s in shapes]
             for _ in range(steps)]
    return params0, grads


def run(seed: int, dtype: type, hyper: dict | None = None, **kw):
    h = draw(seed) if hyper is None else hyper
    params0, grads = data(seed, dtype, **kw)
    return h, params0, run_against(lambda ps: pyopt.AdaMuon(ps, **h), reference(h), params0, grads)


def shared_ns(g, num_steps=5, eps=1e-7, safety_factor=1.0, weights=COEFFS, dtype=None):
    """pytorch-optimizer's Newton–Schulz replaced by pyopt's (exact bfloat16 values)."""
    weights = tuple(weights[0]) if isinstance(weights, list) else tuple(weights)
    x = _zeropower_via_newtonschulz(g.float().numpy(), weights, num_steps, eps)
    return torch.from_numpy(np.ascontiguousarray(x)).bfloat16()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(6))
def test_rule_matches_with_shared_newton_schulz(monkeypatch, seed, dtype):
    """Everything around the iteration, both sides using pyopt's. The update after the iteration
    is bfloat16 on both sides, so a float32 (float64) difference of the second moment shows only
    when it moves a bfloat16 rounding. Measured max relative update error per tensor (seeds 0-5):
    float32 9.8e-6, float64 1.1e-15."""
    monkeypatch.setattr(reference_module, "zero_power_via_newton_schulz_5", shared_ns)
    h, params0, (params, ref, opt, topt, tparams) = run(seed, dtype)
    errors = relative_update_errors(params, ref, params0)
    tol = 1e-4 if dtype == np.float32 else 1e-13
    assert max(errors) < tol, (h, dict(zip(SHAPES, errors)))
    for i, tp in enumerate(tparams):
        for key in ("m", "v"):
            r = topt.state[tp][key].numpy()
            np.testing.assert_allclose(opt.state[i][key], r, rtol=tol * 10, atol=tol * 10 * float(np.abs(r).max()),
                                       err_msg=key)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(4))
def test_matches_pytorch_optimizer(seed, dtype):
    """The plain trajectory, each side with its own bfloat16 iteration. Measured max relative
    update error per tensor (seeds 0-3): 3.0e-3 (float32 2.9e-3), a one-ulp bfloat16 difference
    (2^-8) now and then in the iteration's long dot products."""
    h, params0, (params, ref, *_) = run(seed, dtype)
    errors = relative_update_errors(params, ref, params0)
    assert max(errors) < 5e-3, (h, dict(zip(SHAPES, errors)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_tiny_nan_and_inf_gradients_as_the_reference(monkeypatch, dtype):
    """Gradients whose float32 squares overflow or underflow in the iteration's norm, and NaN, Inf
    and -Inf entries (each poisons its whole matrix through the iteration): the same values, and
    the same NaN and Inf, as the reference."""
    monkeypatch.setattr(reference_module, "zero_power_via_newton_schulz_5", shared_ns)
    shapes = [(7, 17), (17, 7), (4, 3, 5), (5, 5), (1, 9)]
    params0, grads = data(7, dtype, steps=8, shapes=shapes)
    huge = 1e20 if dtype == np.float32 else 1e30
    for step in grads[:3]:
        step[3] *= huge
        step[4] /= huge
    grads[2][0][3, 1] = np.nan
    grads[3][1][1, 2] = np.inf
    grads[4][2][0, 0, 1] = -np.inf
    for h in ({"eps": 1e-10}, {"eps": 0.0, "betas": (0.5, 0.9)}):
        params, ref, *_ = run_against(lambda ps: pyopt.AdaMuon(ps, **h), reference(h), params0, grads)
        for p, r in zip(params, ref):
            assert np.array_equal(np.isnan(p), np.isnan(r)) and np.array_equal(np.isinf(p), np.isinf(r)), h
            finite = np.isfinite(r)
            np.testing.assert_allclose(p[finite], r[finite], rtol=1e-5,
                                       atol=1e-5 * float(np.abs(r[finite]).max(initial=0)))
        assert all(np.isnan(p).all() for p in params[:3])


def test_wrong_hyperparameter_fails(monkeypatch):
    monkeypatch.setattr(reference_module, "zero_power_via_newton_schulz_5", shared_ns)
    h = {**draw(1), "weight_decay": 0.1, "betas": (0.8, 0.9)}
    _, _, (_, ref, *_) = run(1, np.float64, hyper=h, steps=20)
    for change in ({"lr": h["lr"] * 1.01}, {"betas": (0.8, 0.5)}, {"betas": (0.5, 0.9)},
                   {"use_adjusted_lr": not h["use_adjusted_lr"]}, {"weight_decay": 0.2}, {"eps": 1e-2}):
        params0, grads = data(1, np.float64, steps=20)
        ps = [p.copy() for p in params0]
        opt = pyopt.AdaMuon(ps, **{**h, **change})
        for g in grads:
            opt.step(g)
        assert any(not np.allclose(p, r, rtol=1e-9) for p, r in zip(ps, ref)), change


def test_only_matrices():
    for bad in (np.zeros(3), np.zeros(())):
        with pytest.raises(ValueError, match="two or more dimensions"):
            pyopt.AdaMuon([bad])
    empty = np.zeros((0, 4))
    opt = pyopt.AdaMuon([empty, np.ones((2, 3))])
    opt.step([np.zeros((0, 4)), np.ones((2, 3))])
    assert opt.state[0]["v"].shape == (0,) and opt.state[1]["v"].shape == (6,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_state_dict_and_save_resume_bit_identically(dtype, tmp_path):
    h = {**draw(2), "ns_steps": 4}
    assert_resumes_bit_identically(lambda ps: pyopt.AdaMuon(ps, **h), [(6, 5), (3, 2, 4), (0, 3)], dtype, tmp_path)


@pytest.mark.parametrize("bad, error, name", [
    ({"lr": -1e-3}, ValueError, "lr"), ({"betas": (1.0, 0.9)}, ValueError, r"betas\[0\]"),
    ({"betas": (0.9, -0.1)}, ValueError, r"betas\[1\]"), ({"betas": 0.9}, TypeError, "betas"),
    ({"weight_decay": -1.0}, ValueError, "weight_decay"), ({"eps": float("nan")}, ValueError, "eps"),
    ({"weight_decouple": 1}, TypeError, "weight_decouple"),
    ({"ns_coefficients": "original"}, TypeError, "ns_coefficients"),
    ({"ns_coefficients": (1.0, float("inf"), 2.0)}, ValueError, r"ns_coefficients\[1\]"),
    ({"ns_steps": 0}, ValueError, "ns_steps"), ({"ns_steps": 2.5}, TypeError, "ns_steps"),
    ({"use_adjusted_lr": None}, TypeError, "use_adjusted_lr"), ({"maximize": 0}, TypeError, "maximize"),
])
def test_bad_hyperparameters_are_refused_before_anything_changes(bad, error, name):
    def make():
        params = [np.ones((3, 4)), np.ones((5, 2))]
        return pyopt.AdaMuon(params, lr=0.01), params

    assert_refused_before_changes(make, bad, error, name)


def test_adamw_groups_are_not_taken():
    with pytest.raises(TypeError, match="adamw_lr"):
        pyopt.AdaMuon([np.ones((3, 4))], adamw_lr=1e-3)


def test_created_by_name_and_tunable():
    opt = pyopt.create("adamuon", [np.ones((3, 4), np.float32)], lr=0.01)
    assert isinstance(opt, pyopt.AdaMuon) and opt.defaults["ns_coefficients"] == COEFFS
    assert opt.defaults["betas"] == (0.9, 0.95) and opt.defaults["use_adjusted_lr"] is True
    run_one_tuning_trial("adamuon", matrices_only=True)
