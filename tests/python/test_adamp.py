"""AdamP (pyopt/adamp.py) against pytorch-optimizer 4.1.0's AdamP (foreach=False), plus its errors,
checkpoints and tuner space.

The projection is chosen per tensor at every step (per output channel first, else per tensor),
so the grads here are of three kinds: random (cosines ~1/sqrt(n), mostly not projected), made
orthogonal to each output channel of the param (projected per channel, as for weights before a
normalization layer), or to the whole param (projected per tensor). Some draws use a huge delta
(every tensor projected) or delta 0 (none)."""
from __future__ import annotations

import numpy as np
import pytest

import pyopt
from pycheck import (SHAPES, STEPS, assert_refused_before_changes, assert_resumes_bit_identically,
                     relative_update_errors, run_against, run_one_tuning_trial)
from refcheck import loguniform

torch = pytest.importorskip("torch")
pytorch_optimizer = pytest.importorskip("pytorch_optimizer")

# The reference cannot take an empty param of two or more dimensions (max of no cosines).
REF_SHAPES = SHAPES + [(33, 31)]


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):  # (conftest.py)
    pass


def draw(seed: int) -> dict:
    rng = np.random.default_rng([seed, 2006, 8217])
    if seed == 0:
        return {}  # the defaults
    return {"lr": loguniform(rng, 1e-4, 1e-1),
            "betas": (float(rng.choice([0.0, rng.uniform(0.5, 0.95)])), float(rng.uniform(0.9, 0.9999))),
            "weight_decay": [0.0, loguniform(rng, 1e-3, 0.5)][seed % 2],
            "weight_decouple": seed % 5 != 3, "fixed_decay": seed % 4 == 1,
            "delta": [0.1, 0.0, 1e6, float(rng.uniform(0.01, 1.0))][seed % 4],
            "wd_ratio": float(rng.uniform(0.0, 0.99)), "nesterov": seed % 3 == 2,
            "eps": [1e-8, 0.0, loguniform(rng, 1e-12, 1e-3)][seed % 3], "maximize": seed % 6 == 5}


def orthogonal(g: np.ndarray, p: np.ndarray, rows: int) -> np.ndarray:
    """g minus its projection on p, per row of ``(rows, -1)`` views."""
    g2, p2 = g.reshape(rows, -1).astype(np.float64), p.reshape(rows, -1).astype(np.float64)
    unit = p2 / np.maximum(np.linalg.norm(p2, axis=1, keepdims=True), 1e-300)
    return (g2 - np.sum(g2 * unit, axis=1, keepdims=True) * unit).reshape(g.shape)


def data(seed: int, dtype: type, steps: int = STEPS, shapes=REF_SHAPES):
    rng = np.random.default_rng([seed, 11])
    params0 = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = []
    for t in range(steps):
        step = []
        for k, (s, p) in enumerate(zip(shapes, params0)):
            g = rng.standard_normal(s) * rng.choice([1e-6, 1.0, 1e4])
            if len(s) > 1 and s[0] and (k + seed) % 3:
                g = orthogonal(g, p, s[0] if (k + seed) % 3 == 1 else 1)  # w.r.t. the initial p: mostly kept
            step.append(g.astype(dtype))
        grads.append(step)
    return params0, grads


def run(seed: int, dtype: type, hyper: dict | None = None, **kw):
    h = draw(seed) if hyper is None else hyper
    params0, grads = data(seed, dtype, **kw)
    ref = pytorch_optimizer.AdamP
    out = run_against(lambda ps: pyopt.AdamP(ps, **h), lambda ts: ref(ts, foreach=False, **h), params0, grads)
    return h, params0, out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(8))
def test_matches_pytorch_optimizer(seed, dtype):
    """60 steps over sizes 1 .. 100003 and 2-D/3-D/4-D shapes. Measured max relative update error
    per tensor (seeds 0-7): float32 4.0e-6, float64 1.9e-14."""
    h, params0, (params, ref, opt, topt, tparams) = run(seed, dtype)
    errors = relative_update_errors(params, ref, params0)
    tol = 2e-5 if dtype == np.float32 else 1e-11
    assert max(errors) < tol, (h, dict(zip(REF_SHAPES, errors)))
    for i, tp in enumerate(tparams):
        for key in ("exp_avg", "exp_avg_sq"):
            r = topt.state[tp][key].numpy()
            np.testing.assert_allclose(opt.state[i][key], r, rtol=tol * 10, atol=tol * 10 * float(np.abs(r).max(initial=0)))


def test_projection_happens_in_the_cases_drawn():
    """The comparison covers both branches: per channel, per tensor, and none."""
    from pyopt.adamp import _cosine_similarity

    params0, grads = data(1, np.float64, steps=1)
    kinds = set()
    for p, g in zip(params0, grads[0]):
        if p.ndim < 2 or not p.size:
            continue
        for rows in (p.shape[0], 1):
            cos = np.abs(_cosine_similarity(g.reshape(rows, -1), p.reshape(rows, -1), 1e-8))
            if cos.max() < 0.1 / np.sqrt(p.size // rows):
                kinds.add("channel" if rows > 1 else "tensor")
                break
        else:
            kinds.add("none")
    assert kinds == {"channel", "tensor", "none"}


def test_cosine_similarity_is_torchs():
    from pyopt.adamp import _cosine_similarity

    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        for scale in (1e-12, 1.0, 1e10):
            x, y = (rng.standard_normal((7, 33)) * scale).astype(dtype), rng.standard_normal((7, 33)).astype(dtype)
            ref = torch.nn.functional.cosine_similarity(torch.from_numpy(x), torch.from_numpy(y), dim=1, eps=1e-8)
            np.testing.assert_allclose(_cosine_similarity(x, y, 1e-8), ref.numpy(), rtol=1e-6 if dtype == np.float32 else 1e-14,
                                       atol=1e-7 if dtype == np.float32 else 1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_and_inf_as_the_reference(dtype):
    """A NaN or an Inf in a gradient spreads as in pytorch-optimizer (NaN cosines project nothing)."""
    shapes = [(7,), (5, 6), (17, 3)]
    params0, grads = data(4, dtype, steps=6, shapes=shapes)
    grads[2][0][3] = np.nan
    grads[3][1][1, 2] = np.inf
    grads[4][2][0, 0] = -np.inf
    h = draw(4)
    params, ref, *_ = run_against(lambda ps: pyopt.AdamP(ps, **h),
                                  lambda ts: pytorch_optimizer.AdamP(ts, foreach=False, **h), params0, grads)
    for p, r in zip(params, ref):
        assert np.array_equal(np.isnan(p), np.isnan(r)) and np.array_equal(np.isinf(p), np.isinf(r))
        finite = np.isfinite(r)
        np.testing.assert_allclose(p[finite], r[finite], rtol=1e-5)
    assert any(np.isnan(p).any() for p in params)


def test_wrong_hyperparameter_fails():
    """The comparison has teeth: another delta, wd_ratio or lr moves the params off the reference."""
    h = {**draw(3), "delta": 1e6, "weight_decay": 0.1, "weight_decouple": True}
    _, params0, (_, ref, *_) = run(1, np.float64, hyper=h, steps=20)
    for change in ({"lr": h["lr"] * 1.01}, {"delta": 1e-9}, {"wd_ratio": h["wd_ratio"] * 0.5 + 0.01},
                   {"nesterov": not h["nesterov"]}):
        params0_, grads = data(1, np.float64, steps=20)
        ps = [p.copy() for p in params0_]
        opt = pyopt.AdamP(ps, **{**h, **change})
        for g in grads:
            opt.step(g)
        assert any(not np.allclose(p, r, rtol=1e-9) for p, r in zip(ps, ref)), change


def test_empty_params_are_left_alone():
    params = [np.zeros((0, 3)), np.zeros((3, 0)), np.zeros(0), np.ones((2, 2))]
    opt = pyopt.AdamP(params, lr=0.1)
    opt.step([np.zeros(p.shape) + 1 for p in params])
    assert opt.state[0]["step"] == 1 and opt.state[0]["exp_avg"].shape == (0, 3)
    assert not np.array_equal(params[3], np.ones((2, 2)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_state_dict_and_save_resume_bit_identically(dtype, tmp_path):
    h = {**draw(2), "weight_decouple": True}

    def grads(rng, ps):
        return [orthogonal(rng.standard_normal(p.shape), p, p.shape[0]).astype(p.dtype) if p.ndim > 1
                else rng.standard_normal(p.shape).astype(p.dtype) for p in ps]

    assert_resumes_bit_identically(lambda ps: pyopt.AdamP(ps, **h), [(7,), (6, 5), (3, 2, 4), (0,)], dtype,
                                   tmp_path, grads=grads)


@pytest.mark.parametrize("bad, error, name", [
    ({"lr": -1e-3}, ValueError, "lr"), ({"betas": (1.0, 0.999)}, ValueError, r"betas\[0\]"),
    ({"betas": (0.9, -0.1)}, ValueError, r"betas\[1\]"), ({"betas": 0.9}, TypeError, "betas"),
    ({"weight_decay": -1.0}, ValueError, "weight_decay"), ({"wd_ratio": 1.0}, ValueError, "wd_ratio"),
    ({"delta": float("nan")}, ValueError, "delta"), ({"eps": -1e-8}, ValueError, "eps"),
    ({"nesterov": 1}, TypeError, "nesterov"), ({"weight_decouple": "yes"}, TypeError, "weight_decouple"),
    ({"lr": "0.1"}, TypeError, "lr"),
])
def test_bad_hyperparameters_are_refused_before_anything_changes(bad, error, name):
    def make():
        params = [np.ones((3, 4)), np.ones(5)]
        return pyopt.AdamP(params, lr=0.01), params

    assert_refused_before_changes(make, bad, error, name)


def test_created_by_name_and_tunable():
    w = np.ones((3, 4), np.float32)
    opt = pyopt.create("adamp", [w], lr=0.01)
    assert isinstance(opt, pyopt.AdamP) and opt.defaults["betas"] == (0.9, 0.999)
    run_one_tuning_trial("adamp")
