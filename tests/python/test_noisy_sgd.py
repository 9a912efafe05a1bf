"""NoisySGD (pyopt/noisy_sgd.py) against optax.noisy_sgd 0.2.8.

jax's noise cannot be reproduced, so: (a) with eta = 0 the trajectory equals optax's exactly
(float32 and float64, maximize too); (b) the noise pyopt adds has mean 0 and variance
eta / t**gamma (checked on a million elements at two steps, generous bounds); (c) the same seed
gives the same trajectory on every ISA path and thread count, another seed another one, and a
checkpoint resumes the same noise.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import pyopt
from refcheck import DTYPES, ISAS, isa_path, num_threads
from reference_impls import optax_module, optax_package
from reference_table import sparse_data


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("dtype_name", list(DTYPES))
def test_eta_zero_matches_optax_exactly(dtype_name: str, maximize: bool) -> None:
    pytest.importorskip("jax")
    hyper = dict(lr=0.03, eta=0.0, gamma=0.55, seed=0, maximize=maximize)
    params0, grads = sparse_data(11, DTYPES[dtype_name], 50)
    make = lambda h: optax_module().noisy_sgd(h["lr"], eta=h["eta"], gamma=h["gamma"], key=h["seed"])
    trajectory = optax_package(make, {})(hyper, params0, grads, (1, 50))
    params = [p.copy() for p in params0]
    opt = pyopt.NoisySGD(params, **hyper)
    for t, gs in enumerate(grads, start=1):
        opt.step(gs)
        if t in trajectory:
            for i, (p, q) in enumerate(zip(params, trajectory[t]["params"])):
                np.testing.assert_array_equal(p, q, err_msg=f"params[{i}] after step {t}")
    # teeth: a wrong lr is caught
    wrong = [p.copy() for p in params0]
    opt = pyopt.NoisySGD(wrong, **{**hyper, "lr": hyper["lr"] * 1.1})
    for gs in grads:
        opt.step(gs)
    assert any(not np.array_equal(p, q) for p, q in zip(wrong, trajectory[50]["params"]))


@pytest.mark.parametrize("dtype_name", list(DTYPES))
def test_noise_has_the_annealed_variance(dtype_name: str) -> None:
    """With g = 0 and lr = 1 each step moves p by the noise itself: its mean is 0 and its variance
    eta / t**gamma (n = 10^6: the sample variance is within 1% with overwhelming probability)."""
    n, eta, gamma = 1_000_000, 0.3, 0.55
    dtype = DTYPES[dtype_name]
    p = np.zeros(n, dtype)
    opt = pyopt.NoisySGD([p], lr=1.0, eta=eta, gamma=gamma, seed=5)
    zero = np.zeros(n, dtype)
    previous = p.copy()
    for t in range(1, 11):
        opt.step([zero])
        noise = (previous - p).astype(np.float64)  # p ← p − lr·σ·n
        previous = p.copy()
        if t in (1, 10):
            variance = eta / t ** gamma
            assert abs(noise.mean()) < 6 * math.sqrt(variance / n), (t, noise.mean())
            assert abs(noise.var() / variance - 1) < 0.01, (t, noise.var(), variance)
            # Gaussian, not uniform: the fourth moment is 3σ⁴.
            assert abs(np.mean(noise ** 4) / variance ** 2 - 3) < 0.05


def _run(seed: int, steps: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s) for s in [(7,), (31, 33), (100003,)]]
    opt = pyopt.NoisySGD(params, lr=0.1, eta=0.05, seed=seed)
    for t in range(steps):
        opt.step([np.full_like(p, 0.01 * t) for p in params])
    return params


def test_same_seed_same_trajectory_on_every_isa_and_thread_count() -> None:
    base = _run(3)
    for isa in ISAS:
        for threads in (1, 2, 3):
            with isa_path(isa), num_threads(threads):
                for p, q in zip(_run(3), base):
                    np.testing.assert_array_equal(p, q, err_msg=f"{isa}, {threads} threads")
    assert not any(np.array_equal(p, q) for p, q in zip(_run(4), base)), "another seed, other noise"


def test_checkpoint_resumes_the_same_noise() -> None:
    rng = np.random.default_rng(1)
    params = [rng.standard_normal(50), rng.standard_normal((4, 5))]
    copy = [p.copy() for p in params]
    grads = [[rng.standard_normal(p.shape) for p in params] for _ in range(6)]
    opt = pyopt.NoisySGD(params, lr=0.1, eta=0.1, seed=9)
    for gs in grads:
        opt.step(gs)
    first = pyopt.NoisySGD(copy, lr=0.1, eta=0.1, seed=9)
    for gs in grads[:3]:
        first.step(gs)
    resumed = pyopt.NoisySGD(copy, lr=0.1, eta=0.1, seed=9)
    resumed.load_state_dict(first.state_dict())
    for gs in grads[3:]:
        resumed.step(gs)
    for p, q in zip(copy, params):
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("bad, error", [
    (dict(lr=-1.0), ValueError), (dict(eta=-0.1), ValueError), (dict(gamma=float("nan")), ValueError),
    (dict(seed=-1), ValueError), (dict(seed=1.5), TypeError), (dict(maximize=1), TypeError)])
def test_bad_hyperparameters_are_refused_before_anything_changes(bad: dict, error: type) -> None:
    name = next(iter(bad))
    with pytest.raises(error, match=name):
        pyopt.NoisySGD([np.zeros(3)], **bad)
    p = np.ones(3)
    opt = pyopt.NoisySGD([p])
    opt.param_groups[0][name] = bad[name]
    with pytest.raises(error, match=name):
        opt.step([np.ones(3)])
    np.testing.assert_array_equal(p, np.ones(3))
    assert opt.state == {}
