"""SM3, Fromage, PolyakSGD, DoG and MoMo against optax 0.2.8 itself (the reference).

Each run steps pyopt and optax side by side for STEPS steps over params of many shapes (0-size,
1, 7, 17, 1023, a matrix, a 3-D tensor, 100003), in float64 (jax with x64) and float32 (jax
without: optax then computes in float32 as pyopt does), with random hyperparameters including
extremes, zero gradients at the first step, and NaN/Inf. The differences are rounding: the order
of numpy's and XLA's sums (norms, inner products) and XLA's rsqrt. ``python -m pytest
test_optax_family.py -k max_errors -s`` prints the largest relative error per optimizer and dtype.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
import jax.numpy as jnp  # noqa: E402
from optax import contrib  # noqa: E402

import pyopt  # noqa: E402
from refcheck import loguniform  # noqa: E402

SHAPES = [(0,), (1,), (7,), (17,), (1023,), (13, 9), (3, 5, 4), (100003,)]
STEPS = 50
SEEDS = (0, 1, 2, 3)
NAMES = ("sm3", "fromage", "polyak_sgd", "dog", "momo")
# Largest relative error allowed (against max |param|, element-wise, after STEPS steps).
TOLERANCE = {np.float64: 1e-11, np.float32: 2e-4}


@contextlib.contextmanager
def jax_x64(enabled: bool) -> Iterator[None]:
    saved = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", enabled)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", saved)


def draw(name: str, seed: int) -> dict[str, Any]:
    """Random hyperparameters; seed 0 the defaults but lr, seed 1 extremes."""
    rng = np.random.default_rng([seed, 2025, NAMES.index(name)])
    if name == "sm3":
        momentum = [0.9, 0.0, float(rng.uniform(0.5, 0.99)), 0.999][seed]
        return {"lr": loguniform(rng, 1e-4, 1.0), "momentum": momentum}
    if name == "fromage":
        min_norm = [1e-6, 0.0, loguniform(rng, 1e-8, 1e-2), 1e3][seed]
        return {"lr": [1e-2, 1.0, loguniform(rng, 1e-4, 0.3), 1e-9][seed], "min_norm": min_norm}
    if name == "polyak_sgd":
        return {"lr": [1.0, 3.0, loguniform(rng, 0.1, 3), loguniform(rng, 0.1, 3)][seed],
                "max_learning_rate": [1.0, 1e-3, loguniform(rng, 1e-2, 10), 1e6][seed],
                "f_min": [0.0, -1.0, float(rng.uniform(-1, 0.5)), 0.5][seed],
                "eps": [0.0, 1e-3, loguniform(rng, 1e-10, 1e-2), 0.0][seed],
                "variant": ["sps", "sps+", "sps", "sps+"][seed]}
    if name == "dog":
        init_step = [("heuristic", 1e-6), ("distance", 1e-2), ("learning_rate", loguniform(rng, 1e-4, 1e-1)),
                     ("heuristic", 1e-4)][seed]
        return {"lr": [1.0, 3.0, loguniform(rng, 0.3, 3), 0.5][seed], "init_step": init_step,
                "eps": [1e-8, 0.0, loguniform(rng, 1e-10, 1e-4), 1e-8][seed],
                "weight_decay": [0.0, 0.1, loguniform(rng, 1e-4, 1e-1), 0.0][seed]}
    assert name == "momo"
    return {"lr": [1.0, 10.0, loguniform(rng, 0.01, 10), 1e-3][seed],
            "beta": [0.9, 0.0, float(rng.uniform(0.5, 0.99)), 0.99][seed],
            "lower_bound": [0.0, -1.0, float(rng.uniform(-1, 0.3)), 0.3][seed],
            "weight_decay": [0.0, 0.1, loguniform(rng, 1e-4, 1e-1), 0.0][seed],
            "adapt_lower_bound": [False, True, True, False][seed]}


def optax_of(name: str, h: dict[str, Any]) -> Any:
    """optax's optimizer for pyopt's hyperparameters (pyopt's lr is optax's learning_rate;
    PolyakSGD's is optax's scaling)."""
    if name == "sm3":
        return optax.sm3(h["lr"], momentum=h["momentum"])
    if name == "fromage":
        return optax.fromage(h["lr"], min_norm=h["min_norm"])
    if name == "polyak_sgd":
        return optax.polyak_sgd(max_learning_rate=h["max_learning_rate"], scaling=h["lr"], f_min=h["f_min"],
                                eps=h["eps"], variant=h["variant"])
    if name == "dog":
        return contrib.dog(h["lr"], init_step=h["init_step"], eps=h["eps"],
                           weight_decay=h["weight_decay"] or None)
    return contrib.momo(h["lr"], beta=h["beta"], lower_bound=h["lower_bound"], weight_decay=h["weight_decay"],
                        adapt_lower_bound=h["adapt_lower_bound"])


def data(seed: int, dtype: type, shapes: list[tuple[int, ...]], special: str | None = None
         ) -> tuple[list[np.ndarray], list[list[np.ndarray]], list[float]]:
    """Initial params, STEPS gradient lists and losses. Every gradient is zero at the first step
    on seed 1 (one param's on the others); gradient scales span 1e-6 .. 1e3. ``special``: a NaN
    or Inf in a gradient midway, or a NaN loss."""
    rng = np.random.default_rng([seed, 77])
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    scales = [10.0 ** rng.uniform(-6, 3) for _ in shapes]
    grads, losses = [], []
    for t in range(STEPS):
        gs = [(rng.standard_normal(s) * scale).astype(dtype) for s, scale in zip(shapes, scales)]
        if t == 0:
            for k, g in enumerate(gs):
                if seed == 1 or k == 2:
                    g[...] = 0
        if t == STEPS // 2 and special in ("nan", "inf"):
            gs[3].reshape(-1)[5] = np.nan if special == "nan" else np.inf
        grads.append(gs)
        losses.append(float(np.nan) if special == "nan_loss" and t == STEPS // 2 else float(rng.uniform(-0.5, 3.0)))
    return params, grads, losses


def run_optax(name: str, h: dict[str, Any], params0: list[np.ndarray], grads: list[list[np.ndarray]],
              losses: list[float]) -> list[np.ndarray]:
    dtype = params0[0].dtype
    with jax_x64(dtype == np.float64):
        opt = optax_of(name, h)
        params = [jnp.asarray(p) for p in params0]
        assert all(p.dtype == dtype for p in params)
        state = opt.init(params)
        needs_value = name in ("polyak_sgd", "momo")

        @jax.jit
        def step(params: Any, state: Any, grads: Any, value: Any) -> Any:
            kwargs = {"value": value} if needs_value else {}
            updates, state = opt.update(grads, state, params, **kwargs)
            return optax.apply_updates(params, updates), state

        for gs, loss in zip(grads, losses):
            params, state = step(params, state, [jnp.asarray(g) for g in gs], loss)
        return [np.asarray(p) for p in params]


def run_pyopt(name: str, h: dict[str, Any], params0: list[np.ndarray], grads: list[list[np.ndarray]],
              losses: list[float]) -> tuple[list[np.ndarray], Any]:
    params = [p.copy() for p in params0]
    opt = pyopt.create(name, params, **h)
    for gs, loss in zip(grads, losses):
        if opt.step_requires_loss:
            opt.step(gs, loss=loss)
        else:
            opt.step(gs)
    return params, opt


def shapes_for(name: str) -> list[tuple[int, ...]]:
    return SHAPES


def relative_error(params: list[np.ndarray], ref: list[np.ndarray], what: str) -> float:
    """max |p - ref| / max(|ref|) per param (the NaN/Inf positions must match), the largest."""
    worst = 0.0
    for k, (p, r) in enumerate(zip(params, ref)):
        assert p.shape == r.shape and p.dtype == r.dtype, what
        finite = np.isfinite(r)
        np.testing.assert_array_equal(np.isnan(p), np.isnan(r), err_msg=f"{what}: params[{k}] NaN positions")
        np.testing.assert_array_equal(p[~finite & ~np.isnan(r)], r[~finite & ~np.isnan(r)],
                                      err_msg=f"{what}: params[{k}] infinities")
        if not finite.any():
            continue
        scale = float(np.max(np.abs(r[finite]).astype(np.float64)))
        diff = float(np.max(np.abs(p[finite].astype(np.float64) - r[finite])))
        worst = max(worst, diff / scale if scale > 0 else diff)
    return worst


MEASURED: dict[tuple[str, str], float] = {}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", NAMES)
def test_matches_optax(name: str, seed: int, dtype: type) -> None:
    h = draw(name, seed)
    params0, grads, losses = data(seed, dtype, shapes_for(name))
    ref = run_optax(name, h, params0, grads, losses)
    params, _ = run_pyopt(name, h, params0, grads, losses)
    what = f"{name} {dtype.__name__} seed {seed} {h}"
    err = relative_error(params, ref, what)
    key = (name, dtype.__name__)
    MEASURED[key] = max(MEASURED.get(key, 0.0), err)
    if err > TOLERANCE[dtype] and dtype == np.float32:
        # Ill-conditioned runs (MoMo's τ* subtracts nearly equal averages, ⟨d, x⟩ − γ): optax's
        # own float32 result is as far from its float64 one.
        wide = [p.astype(np.float64) for p in params0]
        exact = run_optax(name, h, wide, [[g.astype(np.float64) for g in gs] for gs in grads], losses)
        own = relative_error([r.astype(np.float64) for r in ref], exact, what)
        assert err <= 4 * own, f"{what}: relative error {err:.3g}, optax's float32 vs its float64 {own:.3g}"
    else:
        assert err <= TOLERANCE[dtype], f"{what}: relative error {err:.3g}"
    moved = sum(float(np.sum((p.astype(np.float64) - p0) ** 2)) for p, p0 in zip(params, params0))
    assert moved > 0 or h.get("lr") == 0, what  # (the comparison has something to compare)


@pytest.mark.parametrize("special", ["nan", "inf", "nan_loss"])
@pytest.mark.parametrize("name", NAMES)
def test_nan_and_inf_as_optax(name: str, special: str) -> None:
    if special == "nan_loss" and name not in ("polyak_sgd", "momo"):
        pytest.skip("no loss")
    h = draw(name, 2)
    params0, grads, losses = data(2, np.float64, shapes_for(name), special)
    ref = run_optax(name, h, params0, grads, losses)
    params, _ = run_pyopt(name, h, params0, grads, losses)
    err = relative_error(params, ref, f"{name} {special} {h}")
    assert err <= TOLERANCE[np.float64] or math.isnan(err)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_hyperparameter_fails(name: str) -> None:
    """The comparison has teeth: lr 10% off moves the params away from optax's."""
    h = draw(name, 2)
    params0, grads, losses = data(2, np.float64, shapes_for(name))
    ref = run_optax(name, h, params0, grads, losses)
    params, _ = run_pyopt(name, {**h, "lr": h["lr"] * 1.1}, params0, grads, losses)
    assert relative_error(params, ref, name) > 1e-6


def test_max_errors() -> None:
    """Prints the largest relative errors measured by test_matches_optax in this session."""
    for (name, dtype), err in sorted(MEASURED.items()):
        print(f"{name:12s} {dtype:8s} {err:.3g}")
