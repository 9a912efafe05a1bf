"""The optax rules (adamaxw, optax_nadamw, optimistic_gradient_descent, optimistic_adam, cocob) and
noisy_sgd beyond the reference matrix: bit for bit with optax 0.2.8 (run op by op) on tensors of
two elements or more, and searchable by the tuner from their records.

The matrix (test_reference.py) holds them to a few ulps because of its 1-element tensor: XLA
divides a 1-element array by a scalar exactly, while for larger arrays it multiplies by the
scalar's reciprocal, which the rules reproduce (rules/optax.hpp).
"""
from __future__ import annotations

import numpy as np
import pytest

import pyopt
from quadratic_task import Quadratic
from refcheck import DTYPES, ISAS, isa_path
from reference_table import BY_NAME, PACKAGES

OPTAX_RULES = ["adamaxw", "optax_nadamw", "optimistic_gradient_descent", "optimistic_adam", "cocob"]
SHAPES = [(2,), (7,), (1, 17), (31, 33), (10007,)]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("name", OPTAX_RULES)
def test_bit_for_bit_with_optax_on_every_isa_path(name: str, dtype_name: str, seed: int) -> None:
    pytest.importorskip("jax")
    row = BY_NAME[name]
    hyper = row.draw(seed)
    rng = np.random.default_rng([seed, 77, row.index])
    dtype = DTYPES[dtype_name]
    params0 = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[(rng.standard_normal(s) * 0.5).astype(dtype) for s in SHAPES] for _ in range(60)]
    trajectory = row.reference(hyper, params0, grads, (60,))
    for isa in ISAS:
        with isa_path(isa):
            params = [p.copy() for p in params0]
            opt = pyopt.create(name, params, **hyper)
            for gs in grads:
                opt.step(gs)
            for i, (p, q) in enumerate(zip(params, trajectory[60]["params"])):
                np.testing.assert_array_equal(p, q, err_msg=f"{name} {dtype_name} {isa} {hyper}: params[{i}]")
                for key, value in trajectory[60]["state"][i].items():
                    np.testing.assert_array_equal(opt.state[i][key], value, err_msg=f"{name} {isa}: state[{i}][{key!r}]")


@pytest.mark.parametrize("name", OPTAX_RULES + ["noisy_sgd"])
def test_the_tuner_searches_it_from_its_record(name: str) -> None:
    optuna = pytest.importorskip("optuna")
    from pyopt import tuner
    from pyopt.tuner import space

    assert name in space.tunable()
    dims = {d.label for d in space.dimensions(name, "full")}
    assert "lr" in dims
    params = {"optimizer": name, **space.default_params(name, "full")}
    hyper = space.suggest(optuna.trial.FixedTrial(params), name, "full")
    assert hyper["lr"] > 0

    value, info = tuner.train(Quadratic("quadratic-optax", 2, batches=5, random_start=False), name, hyper)
    assert np.isfinite(value) and info["epochs"] == 2


@pytest.mark.parametrize("eps_zero", [False, True])
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("name", OPTAX_RULES)
def test_extreme_values_as_optax(name: str, dtype_name: str, eps_zero: bool) -> None:
    """Huge, tiny and zero gradients, then NaN and ±Inf ones, and ε = 0 where the record allows it
    (cocob's ε is L's start: > 0): the same bits as optax, NaN where optax has NaN."""
    pytest.importorskip("jax")
    row = BY_NAME[name]
    hyper = row.draw(1)
    if eps_zero:
        if "eps" not in hyper or name == "cocob":
            pytest.skip("no eps, or eps must be > 0")
        hyper["eps"] = 0.0
    dtype = DTYPES[dtype_name]
    rng = np.random.default_rng([3, row.index])
    big, tiny = (1e30, 1e-30) if dtype is np.float32 else (1e200, 1e-200)
    params0 = [rng.standard_normal(64).astype(dtype), rng.standard_normal((3, 5)).astype(dtype)]
    grads = []
    for t in range(8):
        g = [rng.standard_normal(p.shape).astype(dtype) for p in params0]
        g[0][:8] = [big, -big, tiny, -tiny, 0.0, 0.0, big, tiny]
        if t >= 5:
            g[1].flat[:3] = [np.nan, np.inf, -np.inf]
        grads.append(g)
    with np.errstate(all="ignore"):
        trajectory = row.reference(hyper, params0, grads, (4, 8))
        params = [p.copy() for p in params0]
        opt = pyopt.create(name, params, **hyper)
        for t, gs in enumerate(grads, start=1):
            opt.step(gs)
            if t in trajectory:
                for i, (p, q) in enumerate(zip(params, trajectory[t]["params"])):
                    np.testing.assert_array_equal(p, q, err_msg=f"{name} {hyper}: params[{i}] after step {t}")
