"""CAME (pyopt/came.py) against pytorch-optimizer 4.1.0's CAME (foreach=False), plus its errors,
checkpoints and tuner space. Vectors keep a full second moment; matrices and batches of them (the
last two axes) factored ones, of the squared gradient and of the update's squared residual."""
from __future__ import annotations

import numpy as np
import pytest

import pyopt
from pycheck import (SHAPES, STEPS, assert_refused_before_changes, assert_resumes_bit_identically,
                     relative_update_errors, run_against, run_one_tuning_trial)
from refcheck import loguniform

torch = pytest.importorskip("torch")
pytorch_optimizer = pytest.importorskip("pytorch_optimizer")

# The reference's row or column means of an empty matrix are NaN (its state); pyopt leaves an
# empty param's state at zero, so the empty shapes here are 1-D.
REF_SHAPES = SHAPES + [(33, 31), (2, 0)]


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):  # (conftest.py)
    pass


def draw(seed: int) -> dict:
    rng = np.random.default_rng([seed, 2307, 2047])
    if seed == 0:
        return {"lr": 1e-3}  # the defaults but a larger lr
    return {"lr": loguniform(rng, 1e-4, 1e-1),
            "betas": (float(rng.choice([0.0, rng.uniform(0.5, 0.95)])), float(rng.uniform(0.9, 0.9999)),
                      float(rng.choice([1.0, rng.uniform(0.9, 0.99999)]))),
            "weight_decay": [0.0, loguniform(rng, 1e-3, 0.5)][seed % 2],
            "weight_decouple": seed % 5 != 3, "fixed_decay": seed % 4 == 1,
            "clip_threshold": [1.0, loguniform(rng, 1e-3, 1e3)][seed % 2],
            "ams_bound": seed % 3 == 2, "eps1": [1e-30, 0.0, loguniform(rng, 1e-30, 1e-8)][seed % 3],
            "eps2": [1e-16, loguniform(rng, 1e-20, 1e-6)][seed % 2], "maximize": seed % 6 == 5}


def data(seed: int, dtype: type, steps: int = STEPS, shapes=REF_SHAPES):
    rng = np.random.default_rng([seed, 11])
    params0 = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[(rng.standard_normal(s) * rng.choice([1e-6, 1.0, 1e4])).astype(dtype) for s in shapes]
             for _ in range(steps)]
    return params0, grads


def make_ref(h):
    ref = {**h}
    clip, eps1, eps2 = ref.pop("clip_threshold", 1.0), ref.pop("eps1", 1e-30), ref.pop("eps2", 1e-16)
    return lambda ts: pytorch_optimizer.CAME(ts, foreach=False, clip_threshold=clip, eps1=eps1, eps2=eps2, **ref)


def run(seed: int, dtype: type, hyper: dict | None = None, **kw):
    h = draw(seed) if hyper is None else hyper
    params0, grads = data(seed, dtype, **kw)
    return h, params0, run_against(lambda ps: pyopt.CAME(ps, **h), make_ref(h), params0, grads)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(8))
def test_matches_pytorch_optimizer(seed, dtype):
    """60 steps over sizes 0 .. 100003 and 2-D/3-D/4-D shapes (the factored ones). Measured max
    relative update error per tensor (seeds 0-7): float64 8.1e-14; float32 6.1e-6, and 4.6e-5
    for the 100003-element vector: torch's float32 norm of it (the update's RMS, for the clipping)
    is up to 6e-5 off the exact one, pyopt's (summed in float64) within 1e-7."""
    h, params0, (params, ref, opt, topt, tparams) = run(seed, dtype)
    errors = relative_update_errors(params, ref, params0)
    tol = 3e-5 if dtype == np.float32 else 1e-12
    for shape, error in zip(REF_SHAPES, errors):
        assert error < (2e-4 if dtype == np.float32 and np.prod(shape) > 10**5 else tol), (h, shape, error)
    tol = 2e-4 if dtype == np.float32 else 1e-12
    for i, tp in enumerate(tparams):
        if not tp.numel():
            continue
        for key, r in topt.state[tp].items():
            if key == "RMS":
                continue
            r = r.numpy()
            np.testing.assert_allclose(opt.state[i][key], r, rtol=tol * 100,
                                       atol=tol * 100 * float(np.abs(r).max(initial=0)), err_msg=key)
        assert set(opt.state[i]) == set(topt.state[tp]) - {"RMS"} | {"step"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_and_inf_as_the_reference(dtype):
    shapes = [(7,), (5, 6), (2, 3, 4)]
    params0, grads = data(4, dtype, steps=6, shapes=shapes)
    grads[2][0][3] = np.nan
    grads[3][1][1, 2] = np.inf
    grads[4][2][0, 0, 1] = -np.inf
    h = draw(4)
    params, ref, *_ = run_against(lambda ps: pyopt.CAME(ps, **h), make_ref(h), params0, grads)
    for p, r in zip(params, ref):
        assert np.array_equal(np.isnan(p), np.isnan(r)) and np.array_equal(np.isinf(p), np.isinf(r))
        finite = np.isfinite(r)
        np.testing.assert_allclose(p[finite], r[finite], rtol=1e-5)
    assert any(np.isnan(p).any() for p in params)


def test_wrong_hyperparameter_fails():
    h = {**draw(1), "weight_decay": 0.1}
    _, _, (_, ref, *_) = run(1, np.float64, hyper=h, steps=20)
    for change in ({"lr": h["lr"] * 1.01}, {"betas": (h["betas"][0], h["betas"][1], 0.5)},
                   {"clip_threshold": 1e-3}, {"ams_bound": not h["ams_bound"]}, {"weight_decay": 0.2}):
        params0, grads = data(1, np.float64, steps=20)
        ps = [p.copy() for p in params0]
        opt = pyopt.CAME(ps, **{**h, **change})
        for g in grads:
            opt.step(g)
        assert any(not np.allclose(p, r, rtol=1e-9) for p, r in zip(ps, ref)), change


def test_state_shapes():
    params = [np.ones((4, 6)), np.ones(6), np.ones((2, 3, 5)), np.ones(0)]
    opt = pyopt.CAME(params, ams_bound=True)
    opt.step([np.ones(p.shape) for p in params])
    shapes = [{k: v.shape for k, v in opt.state[i].items() if k != "step"} for i in range(4)]
    assert shapes[0] == {"exp_avg": (4, 6), "exp_avg_sq_row": (4,), "exp_avg_sq_col": (6,), "exp_avg_res_row": (4,),
                         "exp_avg_res_col": (6,), "exp_avg_sq_hat": (4, 6)}
    assert shapes[1] == {"exp_avg": (6,), "exp_avg_sq": (6,), "exp_avg_sq_hat": (6,)}
    assert shapes[2]["exp_avg_sq_row"] == (2, 3) and shapes[2]["exp_avg_res_col"] == (2, 5)
    assert shapes[3] == {"exp_avg": (0,), "exp_avg_sq": (0,), "exp_avg_sq_hat": (0,)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ams_bound", [False, True])
def test_state_dict_and_save_resume_bit_identically(dtype, ams_bound, tmp_path):
    h = {**draw(3), "ams_bound": ams_bound}
    assert_resumes_bit_identically(lambda ps: pyopt.CAME(ps, **h), [(7,), (6, 5), (3, 2, 4), (0,)], dtype, tmp_path)


@pytest.mark.parametrize("bad, error, name", [
    ({"lr": -1e-3}, ValueError, "lr"), ({"betas": (0.9, 0.999)}, TypeError, "betas"),
    ({"betas": (0.9, 1.0, 0.9999)}, ValueError, r"betas\[1\]"), ({"betas": (0.9, 0.999, 1.5)}, ValueError, r"betas\[2\]"),
    ({"weight_decay": -1.0}, ValueError, "weight_decay"), ({"clip_threshold": 0.0}, ValueError, "clip_threshold"),
    ({"eps1": -1.0}, ValueError, "eps1"), ({"eps2": float("nan")}, ValueError, "eps2"),
    ({"ams_bound": 1}, TypeError, "ams_bound"), ({"maximize": None}, TypeError, "maximize"),
])
def test_bad_hyperparameters_are_refused_before_anything_changes(bad, error, name):
    def make():
        params = [np.ones((3, 4)), np.ones(5)]
        return pyopt.CAME(params, lr=0.01), params

    assert_refused_before_changes(make, bad, error, name)


def test_created_by_name_and_tunable():
    opt = pyopt.create("came", [np.ones((3, 4), np.float32)], lr=0.01)
    assert isinstance(opt, pyopt.CAME) and opt.defaults["betas"] == (0.9, 0.999, 0.9999)
    run_one_tuning_trial("came")
