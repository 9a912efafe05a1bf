"""Every pyopt optimizer against torch.optim 2.13's single-tensor path (foreach=False).

For each (optimizer, dtype, seed) case: random hyperparameters (boolean flags included), five
tensors of sizes {1, 7, 17, 1023, 100003} (some 2-D) stepped together in one ``opt.step`` call,
``STEPS`` steps of fresh random gradients. torch runs once per case (its trajectory is cached)
and pyopt is compared against it on every ISA path this machine has, at a few checkpoints:
params, every state array, the step count and the per-tensor scalars (NAdam's ``mu_product``,
ASGD's ``eta`` and ``mu``).

Tolerances (see RULES.md "How to match a reference"). On the FMA paths (avx2, avx512) pyopt fuses
exactly the multiply-adds torch's CPU kernels fuse and rounds every other operation as torch does
(rules/common.hpp), so what is left is torch's sqrt, which is not correctly rounded (MKL: ~17% of
float32 and ~1% of float64 results are 1 ulp off IEEE sqrt):
  - rules without a sqrt (sgd, momentum, nag, adamax, asgd, rprop) match bit for bit, float32 and
    float64;
  - the others are held to rtol 1e-6 with an atol of 1e-7 × the array's largest magnitude in
    float32 (observed: rtol 1.5e-7; adadelta, whose two sqrts per step compound through its
    state, rtol 1e-4, observed 1.7e-5), and to rtol 3e-15 with an atol of 1e-15 × the largest
    magnitude in float64 (observed: ≤ 3.3e-16);
  - test_fma_paths_match_torch_with_ieee_sqrt_bit_for_bit swaps a correctly rounded sqrt into
    torch and then requires every rule to match bit for bit.
The baseline path (x86-64-v2, no FMA) rounds each multiply-add twice, so it drifts by ulps per
step: float32 is held to rtol 1e-4 with an atol of 1e-6 × the largest magnitude, float64 to rtol
1e-13 with an atol of 1e-14 × the largest magnitude (observed: max |a − d| / max |d| ≤ 4e-14).
Besides the elementwise checks, the update itself (p_t − p_0) must match normwise, so a small
learning rate cannot hide behind the params' size.

Set PYOPT_REFERENCE_REPORT=<path> to dump the largest observed errors as JSON.
"""
from __future__ import annotations

import collections
import json
import os
import textwrap
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pyopt  # noqa: E402
from pyopt import functional  # noqa: E402
from pyopt._spec import spec  # noqa: E402
from pyopt.optimizers import CLASSES  # noqa: E402
from refcheck import (  # noqa: E402
    DTYPES, ISAS, SEEDS, SHAPES, STEPS, RecentCache, fma_isas, ieee_sqrt, isa_path, loguniform, merge_errors,
    num_threads, update_error, write_report)

# torch.optim's optimizers; the others are checked in test_reference_modern.py.
TORCH_NAMES = ("sgd", "momentum", "nag", "adagrad", "rmsprop", "adadelta", "adamax", "adam", "adamw", "amsgrad",
               "nadam", "radam", "asgd", "rprop")
NAMES = [n for n in pyopt.available() if n in TORCH_NAMES]
CHECKPOINTS = (1, 6, STEPS)  # 6: RAdam's rho_t crosses 5 around here for beta2 ~ 0.999

# Tolerances: elementwise rtol with an atol relative to the array's largest magnitude, and a
# normwise bound on the total update ||Δp_pyopt − Δp_torch|| / ||Δp_torch||.
TOL = {  # paths without FMA
    "float64": dict(rtol=1e-13, atol_scale=1e-14, update=1e-12),
    "float32": dict(rtol=1e-4, atol_scale=1e-6, update=1e-3),
}
TOL_FMA = {  # FMA paths, rules with a sqrt: only torch's sqrt differs
    "float64": dict(rtol=3e-15, atol_scale=1e-15, update=1e-14),
    "float32": dict(rtol=1e-6, atol_scale=1e-7, update=5e-6),
}
TOL_FMA_ADADELTA_F32 = dict(rtol=1e-4, atol_scale=1e-7, update=5e-6)
# Rules without a sqrt: bit for bit on the FMA paths.
EXACT_ON_FMA = ("sgd", "momentum", "nag", "adamax", "asgd", "rprop")
# pyopt's ISA paths with hardware FMA where torch fuses too; elsewhere the loose tolerances.
FMA_ISAS = fma_isas()


def tolerance(name: str, dtype_name: str, isa: str) -> dict[str, float] | None:
    """The tolerance for ``name`` on ISA path ``isa``; None means bit for bit."""
    if isa not in FMA_ISAS:
        return TOL[dtype_name]
    if name in EXACT_ON_FMA:
        return None
    if name == "adadelta" and dtype_name == "float32":
        return TOL_FMA_ADADELTA_F32
    return TOL_FMA[dtype_name]


TORCH_CLASS = {
    "sgd": "SGD", "momentum": "SGD", "nag": "SGD", "adagrad": "Adagrad", "rmsprop": "RMSprop",
    "adadelta": "Adadelta", "adamax": "Adamax", "adam": "Adam", "adamw": "AdamW", "amsgrad": "Adam",
    "nadam": "NAdam", "radam": "RAdam", "asgd": "ASGD", "rprop": "Rprop",
}

# Largest observed errors, per (name, dtype, isa): "scaled" max |a − d| / max |d| and "rtol" (the
# smallest rtol that passes with the atol used), over params and state; "update" (normwise Δp).
OBSERVED: dict[tuple[str, str, str], dict[str, float]] = collections.defaultdict(dict)


# ----- hyperparameters --------------------------------------------------------------------------
def draw_hyper(name: str, seed: int) -> dict[str, Any]:
    """Random hyperparameters for ``name``. seed 0: optional features off, 1: all on, else random."""
    rng = np.random.default_rng([seed, NAMES.index(name), 7919])
    mode = {0: "off", 1: "on"}.get(seed, "random")

    def flag() -> bool:
        return {"off": False, "on": True}.get(mode, bool(rng.integers(2)))

    def optional(lo: float, hi: float, log: bool = True) -> float:
        """A value that is 0 when the feature is off."""
        value = loguniform(rng, lo, hi) if log else float(rng.uniform(lo, hi))
        return value if flag() else 0.0

    def betas(b1: tuple[float, float] = (0.3, 0.95), b2: tuple[float, float] = (0.95, 0.9995)) -> tuple[float, float]:
        return (float(rng.uniform(*b1)), float(rng.uniform(*b2)))

    h: dict[str, Any]
    if name in ("sgd", "momentum", "nag"):
        h = {"lr": loguniform(rng, 3e-3, 1e-1), "weight_decay": optional(1e-4, 1e-1)}
        if name == "sgd":
            h["momentum"] = optional(0.5, 0.95, log=False)
        else:
            h["momentum"] = float(rng.uniform(0.5, 0.95))
        # nesterov needs momentum > 0 and dampening == 0 (torch raises otherwise).
        nesterov = True if name == "nag" else (h["momentum"] > 0 and flag())
        h["nesterov"] = nesterov
        h["dampening"] = 0.0 if nesterov else optional(0.05, 0.5, log=False)
    elif name == "adagrad":
        h = {"lr": loguniform(rng, 3e-3, 1e-1), "lr_decay": optional(1e-3, 1e-1),
             "weight_decay": optional(1e-4, 1e-1), "initial_accumulator_value": optional(1e-2, 1.0),
             "eps": loguniform(rng, 1e-10, 1e-6)}
    elif name == "rmsprop":
        h = {"lr": loguniform(rng, 1e-3, 1e-2), "alpha": float(rng.uniform(0.8, 0.999)),
             "eps": loguniform(rng, 1e-8, 1e-4), "weight_decay": optional(1e-4, 1e-1),
             "momentum": optional(0.5, 0.95, log=False), "centered": flag()}
    elif name == "adadelta":
        h = {"lr": float(rng.uniform(0.3, 2.0)), "rho": float(rng.uniform(0.8, 0.99)),
             "eps": loguniform(rng, 1e-6, 1e-3), "weight_decay": optional(1e-4, 1e-1)}
    elif name == "adamax":
        h = {"lr": loguniform(rng, 1e-3, 3e-2), "betas": betas(), "eps": loguniform(rng, 1e-8, 1e-4),
             "weight_decay": optional(1e-4, 1e-1)}
    elif name in ("adam", "adamw", "amsgrad"):
        h = {"lr": loguniform(rng, 1e-3, 3e-2), "betas": betas(), "eps": loguniform(rng, 1e-8, 1e-4)}
        if name == "adamw":
            h["weight_decay"] = loguniform(rng, 1e-4, 1e-1) if mode != "off" else 0.0
        else:
            h["weight_decay"] = optional(1e-4, 1e-1)
            h["decoupled_weight_decay"] = flag()
        if name != "amsgrad":
            h["amsgrad"] = flag()
    elif name == "nadam":
        h = {"lr": loguniform(rng, 1e-3, 3e-2), "betas": betas(), "eps": loguniform(rng, 1e-8, 1e-4),
             "weight_decay": optional(1e-4, 1e-1), "momentum_decay": loguniform(rng, 1e-3, 3e-2),
             "decoupled_weight_decay": flag()}
    elif name == "radam":
        h = {"lr": loguniform(rng, 1e-3, 3e-2), "betas": betas(b2=(0.9, 0.9995)),
             "eps": loguniform(rng, 1e-8, 1e-4), "weight_decay": optional(1e-4, 1e-1),
             "decoupled_weight_decay": flag()}
    elif name == "asgd":
        # t0 within the 100 steps when on, so the averaging (mu < 1) runs; non-integer t0 gives
        # mu = 1 / (t - t0) values that round.
        h = {"lr": loguniform(rng, 1e-3, 1e-1), "lambd": loguniform(rng, 1e-4, 1e-1),
             "alpha": float(rng.uniform(0.5, 1.0)), "t0": float(rng.uniform(0.0, 60.0)) if flag() else 1e6,
             "weight_decay": optional(1e-4, 1e-1)}
    elif name == "rprop":
        # Narrow step-size bounds when on, so the clamp binds on both sides.
        h = {"lr": loguniform(rng, 1e-4, 1e-2), "etas": (float(rng.uniform(0.3, 0.7)), float(rng.uniform(1.05, 1.5))),
             "step_sizes": (loguniform(rng, 1e-4, 3e-3) if flag() else 1e-6,
                            loguniform(rng, 1e-2, 3e-2) if flag() else 50.0)}
    else:  # pragma: no cover - a new optimizer needs a sampler and a torch mapping
        raise AssertionError(f"no hyperparameter sampler for {name!r}")
    h["maximize"] = flag()
    assert set(h) == set(spec(name).defaults), (name, sorted(set(spec(name).defaults) ^ set(h)))
    return h


def torch_kwargs(name: str, hyper: dict[str, Any]) -> dict[str, Any]:
    kw = dict(hyper)
    if name == "amsgrad":
        kw["amsgrad"] = True
    return {**kw, "foreach": False}


# ----- data -------------------------------------------------------------------------------------
def make_data(seed: int, dtype: type, steps: int = STEPS) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """Initial params and STEPS lists of gradients (fresh each step, per-tensor scales)."""
    rng = np.random.default_rng([seed, 104729])
    params = [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]
    scales = [float(10.0 ** rng.uniform(-1.0, 0.5)) for _ in SHAPES]
    grads = [
        [(rng.standard_normal(shape, dtype=dtype) * dtype(s)).astype(dtype) for shape, s in zip(SHAPES, scales)]
        for _ in range(steps)
    ]
    return params, grads


class _torch_settings:
    """torch keeps NAdam's mu_product, ASGD's eta and mu (and step) in the default dtype: match it to the params.
    One intra-op thread: the update is elementwise (same result), and torch's OpenMP threads
    spinning against pyopt's on a small machine make it 10-50x slower."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype

    def __enter__(self) -> None:
        self.saved = torch.get_default_dtype(), torch.get_num_threads()
        torch.set_default_dtype(self.dtype)
        torch.set_num_threads(1)

    def __exit__(self, *exc: Any) -> None:
        torch.set_default_dtype(self.saved[0])
        torch.set_num_threads(self.saved[1])


# Per-tensor scalar state torch keeps as 0-d tensors (NAdam's mu_product, ASGD's eta and mu).
SCALAR_STATE = ("mu_product", "eta", "mu")


def run_torch(name: str, hyper: dict[str, Any], params: list[np.ndarray], grads: list[list[np.ndarray]],
              checkpoints: tuple[int, ...] = CHECKPOINTS) -> dict[int, dict[str, Any]]:
    """torch's trajectory: at each checkpoint, numpy copies of params and of each param's state."""
    tdtype = torch.float64 if params[0].dtype == np.float64 else torch.float32
    out: dict[int, dict[str, Any]] = {}
    with _torch_settings(tdtype), torch.no_grad():
        tparams = [torch.from_numpy(p.copy()) for p in params]
        opt = getattr(torch.optim, TORCH_CLASS[name])(tparams, **torch_kwargs(name, hyper))
        for t, gs in enumerate(grads, start=1):
            for tp, g in zip(tparams, gs):
                tp.grad = torch.from_numpy(g.copy())
            opt.step()
            if t in checkpoints:
                states = []
                for tp in tparams:
                    entry = {}
                    for key, value in opt.state[tp].items():
                        if value is None:
                            continue
                        if key in SCALAR_STATE or key == "step":
                            entry[key] = float(value)
                        else:
                            entry[key] = value.numpy().copy()
                    states.append(entry)
                out[t] = {"params": [tp.numpy().copy() for tp in tparams], "state": states}
    return out


_CACHE = RecentCache(keep=2)


def reference(name: str, dtype_name: str, seed: int) -> tuple[dict, list[np.ndarray], list, dict]:
    """(hyper, initial params, grads, torch trajectory), computed once and reused across ISAs."""

    def compute() -> tuple[dict, list[np.ndarray], list, dict]:
        hyper = draw_hyper(name, seed)
        params, grads = make_data(seed * 31 + NAMES.index(name), DTYPES[dtype_name])
        return hyper, params, grads, run_torch(name, hyper, params, grads)

    return _CACHE.get((name, dtype_name, seed), compute)


# ----- comparison -------------------------------------------------------------------------------
def _errors(actual: np.ndarray, desired: np.ndarray, atol: float) -> dict[str, float]:
    """"scaled": max |a − d| / max |d|; "rtol": the smallest rtol that passes with this atol."""
    a = np.asarray(actual, np.float64)
    d = np.asarray(desired, np.float64)
    diff = np.abs(a - d)
    scale = float(np.max(np.abs(d)))
    excess = diff - atol
    bad = excess > 0
    return {
        "scaled": float(np.max(diff)) / scale if scale > 0 else float(np.max(diff)),
        "rtol": float(np.max(excess[bad] / np.abs(d[bad]))) if bad.any() else 0.0,
    }


def assert_close(actual: np.ndarray, desired: np.ndarray, tol: dict[str, float] | None, what: str) -> dict[str, float]:
    """Elementwise check with ``tol`` (see ``tolerance``; None: bit for bit); returns the errors."""
    assert actual.shape == desired.shape and actual.dtype == desired.dtype, (what, actual.dtype, desired.dtype)
    assert np.isfinite(desired).all(), f"{what}: the torch reference is not finite (bad hyperparameter range)"
    if tol is None:
        np.testing.assert_array_equal(actual, desired, err_msg=what)
        return {"scaled": 0.0, "rtol": 0.0}
    atol = tol["atol_scale"] * float(np.max(np.abs(desired)))
    np.testing.assert_allclose(actual, desired, rtol=tol["rtol"], atol=atol, err_msg=what)
    return _errors(actual, desired, atol)


def compare(opt: pyopt.Optimizer, params: list[np.ndarray], initial: list[np.ndarray], ref: dict[str, Any],
            t: int, tol: dict[str, float] | None, where: str) -> dict[str, float]:
    """Assert pyopt's params and state equal torch's checkpoint ``ref``; return the errors seen."""
    seen: dict[str, float] = {}
    for i, (p, tp) in enumerate(zip(params, ref["params"])):
        merge_errors(seen, assert_close(p, tp, tol, f"{where}: params[{i}] after step {t}"))
    update, _ = update_error(params, initial, ref["params"])
    bound = 0.0 if tol is None else tol["update"]
    assert update <= bound, (
        f"{where}: after step {t}, ||Δp − Δp_torch|| / ||Δp_torch|| = {update:.3g} > {bound:.0e}")

    state = opt.state
    for i, tstate in enumerate(ref["state"]):
        mine = state[i]
        assert mine["step"] == t, (where, i, mine["step"], t)
        if "step" in tstate:  # torch's SGD keeps no step count
            assert int(tstate["step"]) == t, (where, i, tstate["step"], t)
        arrays = {k for k, v in mine.items() if isinstance(v, np.ndarray)}
        tarrays = {k for k, v in tstate.items() if isinstance(v, np.ndarray)}
        assert tarrays <= arrays, f"{where}: params[{i}] lacks state {sorted(tarrays - arrays)} torch keeps"
        for key in sorted(tarrays):
            merge_errors(seen, assert_close(mine[key], tstate[key], tol,
                                            f"{where}: state[{i}][{key!r}] after step {t}"))
        for key in sorted(arrays - tarrays):
            # Slots torch does not keep for these hyperparameters must at least be untouched.
            assert not np.any(mine[key]), f"{where}: state[{i}][{key!r}] changed but torch has no such state"
        for key in SCALAR_STATE:
            if key in tstate:
                # Same float operations on both sides: to the last bit in float64, and float32 keeps
                # the scalar rounded to float32 each step as torch does.
                assert mine[key] == tstate[key], (where, i, key, mine[key], tstate[key])
    merge_errors(seen, {"update": update})
    return seen


def run_pyopt(name: str, hyper: dict[str, Any], params0: list[np.ndarray], grads: list[list[np.ndarray]],
              trajectory: dict[int, dict[str, Any]], dtype_name: str, where: str,
              exact: bool = False) -> dict[str, float]:
    """Step ``name`` through ``grads`` and compare at torch's checkpoints: bit for bit if ``exact``,
    else with the tolerance for the current ISA path."""
    tol = None if exact else tolerance(name, dtype_name, pyopt.info()["isa"])
    params = [p.copy() for p in params0]
    opt = CLASSES[name](params, **hyper)
    seen: dict[str, float] = {}
    first = [g.copy() for g in grads[0]]
    for t, gs in enumerate(grads, start=1):
        opt.step(gs)
        if t == 1:  # the grads are shared with the other ISA runs: step must not write them
            for g, g0 in zip(gs, first):
                np.testing.assert_array_equal(g, g0, err_msg=f"{where}: step modified a gradient")
        if t in trajectory:
            merge_errors(seen, compare(opt, params, params0, trajectory[t], t, tol, where))
    return seen


# ----- fixtures ---------------------------------------------------------------------------------
@pytest.fixture
def isa(request: pytest.FixtureRequest):
    """Switch the kernels to ISA path ``request.param`` for one test; restore the previous path."""
    with isa_path(request.param) as name:
        yield name


@pytest.fixture
def threads(request: pytest.FixtureRequest):
    """Run pyopt's kernels on ``request.param`` threads (default 1) for one test; restore afterwards.

    The torch comparisons run single-threaded: the rules are elementwise, and
    ``test_thread_count_does_not_change_results`` checks that more threads give the same bits.
    Several OpenMP threads on a busy 2-core machine wait milliseconds per step at the barrier."""
    with num_threads(getattr(request, "param", 1)) as n:
        yield n


@pytest.fixture(scope="module", autouse=True)
def _report():
    """Set PYOPT_REFERENCE_REPORT=<path> to dump OBSERVED as JSON after this module."""
    yield
    write_report(OBSERVED)


# ----- the matrix -------------------------------------------------------------------------------
CASES = [(n, d, s) for n in NAMES for d in DTYPES for s in SEEDS]


@pytest.mark.parametrize(
    "case, isa",
    [pytest.param(c, i, id=f"{c[0]}-{c[1]}-seed{c[2]}-{i}") for c in CASES for i in ISAS],
    indirect=["isa"],
)
def test_matches_torch(case: tuple[str, str, int], isa: str, threads: int) -> None:
    name, dtype_name, seed = case
    hyper, params0, grads, trajectory = reference(name, dtype_name, seed)
    errs = run_pyopt(name, hyper, params0, grads, trajectory, dtype_name, f"{name} {dtype_name} {isa} {hyper}")
    merge_errors(OBSERVED[(name, dtype_name, isa)], errs)


# The lerp weight (1 − β1, or 1 − α for centered RMSprop) ≥ 0.5 takes torch's other lerp form.
LARGE_LERP_WEIGHT = {"adamax": "betas", "adam": "betas", "nadam": "betas", "radam": "betas", "rmsprop": "alpha"}
IEEE_SQRT_CASES = [(n, d, c) for n in NAMES if n not in EXACT_ON_FMA for d in DTYPES for c in ("seed1", "seed2")] + [
    (n, d, "large-lerp-weight") for n in LARGE_LERP_WEIGHT for d in DTYPES]


@pytest.mark.skipif(not FMA_ISAS, reason="no FMA path on this machine, or torch does not fuse")
@pytest.mark.parametrize("name, dtype_name, case", [pytest.param(*c, id="-".join(c)) for c in IEEE_SQRT_CASES])
def test_fma_paths_match_torch_with_ieee_sqrt_bit_for_bit(name: str, dtype_name: str, case: str, threads: int) -> None:
    """With a correctly rounded sqrt swapped into torch, every rule matches it bit for bit on the
    FMA paths, params and state: all that separates pyopt from stock torch is MKL's sqrt."""
    seed = 2 if case == "seed2" else 1  # seed 1: every optional feature on (centered RMSprop)
    hyper = draw_hyper(name, seed)
    if case == "large-lerp-weight":
        key = LARGE_LERP_WEIGHT[name]
        hyper[key] = (0.3, hyper[key][1]) if key == "betas" else 0.3
    params0, grads = make_data(seed * 31 + NAMES.index(name), DTYPES[dtype_name])
    with ieee_sqrt():
        trajectory = run_torch(name, hyper, params0, grads)
    saved = pyopt.info()["isa"]
    try:
        for isa in FMA_ISAS:
            pyopt.set_isa(isa)
            run_pyopt(name, hyper, params0, grads, trajectory, dtype_name,
                      f"{name} {dtype_name} {isa} {hyper} vs torch with IEEE sqrt", exact=True)
    finally:
        pyopt.set_isa(saved)


def test_every_optimizer_is_covered() -> None:
    assert sorted(NAMES) == sorted(TORCH_CLASS) and set(NAMES) <= set(CLASSES)
    for name in NAMES:
        flags = {k for k, v in spec(name).defaults.items() if isinstance(v, bool)}
        drawn = [draw_hyper(name, s) for s in SEEDS]
        # Every boolean flag is exercised both ways (nag pins nesterov=True by design).
        for f in flags - ({"nesterov"} if name == "nag" else set()):
            assert {h[f] for h in drawn} == {False, True}, (name, f)


@pytest.mark.parametrize("dtype_name, seed", [("float32", 2), ("float64", 1)])
@pytest.mark.parametrize("name", NAMES)
def test_wrong_hyperparameter_fails(name: str, dtype_name: str, seed: int, threads: int) -> None:
    """The comparison has teeth: a 10% larger lr, or any boolean flag flipped, must be caught
    (seed 1 turns every optional feature on, so every flag matters there)."""
    hyper, params0, grads, trajectory = reference(name, dtype_name, seed)
    wrongs = [("lr * 1.1", {**hyper, "lr": hyper["lr"] * 1.1})]
    for key, value in hyper.items():
        if isinstance(value, bool) and (seed == 1 or key == "maximize"):
            wrongs.append((f"{key}={not value}", {**hyper, key: not value}))
    assert len(wrongs) >= 2
    for label, wrong in wrongs:
        with pytest.raises(AssertionError):
            run_pyopt(name, wrong, params0, grads, trajectory, dtype_name, f"{name} deliberately wrong: {label}")
    # ... and the right hyperparameters pass on the same data.
    run_pyopt(name, hyper, params0, grads, trajectory, dtype_name, f"{name} control")


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("isa", ISAS, indirect=True)
def test_thread_count_does_not_change_results(name: str, dtype_name: str, isa: str) -> None:
    """1, 2 and 3 threads split the step's work list differently (inside the 100003-element
    tensor, at different offsets); the rules are elementwise, so the bits must not change."""
    steps = 5
    hyper = draw_hyper(name, 1)
    params0, grads = make_data(NAMES.index(name), DTYPES[dtype_name], steps)
    results = []
    saved = pyopt.info()["num_threads"]
    try:
        for n in (1, 2, 3):
            pyopt.set_num_threads(n)
            params = [p.copy() for p in params0]
            opt = CLASSES[name](params, **hyper)
            for gs in grads:
                opt.step(gs)
            results.append((n, params, opt.state))
    finally:
        pyopt.set_num_threads(saved)
    _, base_params, base_state = results[0]
    for n, params, state in results[1:]:
        for i, (p, q) in enumerate(zip(params, base_params)):
            np.testing.assert_array_equal(p, q, err_msg=f"{name} {isa}: params[{i}] with {n} threads vs 1")
            for key, value in base_state[i].items():
                np.testing.assert_array_equal(state[i][key], value, err_msg=f"{name} {isa}: state[{i}][{key!r}], {n} threads")


# ----- the functional layer ---------------------------------------------------------------------
@pytest.mark.parametrize("seed", (0, 1, 2))
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("isa", ISAS, indirect=True)
def test_functional_matches_class(name: str, dtype_name: str, seed: int, isa: str) -> None:
    """pyopt.functional.<name>_ reproduces the class bit for bit (same kernel, same scalars)."""
    steps = 20
    hyper = draw_hyper(name, seed)
    rng = np.random.default_rng([seed, NAMES.index(name)])
    dtype = DTYPES[dtype_name]
    shapes = [(1,), (7,), (1, 17), (31, 33), (10007,)]
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    fparams = [p.copy() for p in params]
    fhyper = dict(hyper)
    slots = functional.state_slots(name, **fhyper)
    fstate = [[np.full_like(p, init) for _, init in slots] for p in fparams]
    scalars = [{n: init for n, init in spec(name).scalars} for _ in fparams]
    fn = getattr(functional, f"{name}_")
    opt = CLASSES[name](params, **hyper)
    for t in range(1, steps + 1):
        grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
        opt.step(grads)
        for i, (p, g) in enumerate(zip(fparams, grads)):
            out = fn(p, g, *fstate[i], step=t, **fhyper, **scalars[i])
            if scalars[i]:
                assert set(out) == set(scalars[i])
                scalars[i] = out
            else:
                assert out is None
    for i, (p, fp) in enumerate(zip(params, fparams)):
        np.testing.assert_array_equal(fp, p, err_msg=f"{name} params[{i}]")
        for (slot, _), arr in zip(slots, fstate[i]):
            np.testing.assert_array_equal(arr, opt.state[i][slot], err_msg=f"{name} state[{i}][{slot!r}]")
        for key, value in scalars[i].items():
            assert value == opt.state[i][key], (name, key, value, opt.state[i][key])
        assert opt.state[i]["step"] == steps


def test_functional_adam_and_nadam_against_torch(threads: int) -> None:
    """functional.adam_ / nadam_ (with the returned mu_product threaded through) against torch."""
    for name in ("adam", "nadam"):
        for dtype_name, dtype in DTYPES.items():
            hyper, params0, grads, trajectory = reference(name, dtype_name, 1)
            params = [p.copy() for p in params0]
            slots = functional.state_slots(name, **hyper)
            state = [[np.full_like(p, init) for _, init in slots] for p in params]
            scalars = [{n: init for n, init in spec(name).scalars} for _ in params]
            for t, gs in enumerate(grads, start=1):
                for i, (p, g) in enumerate(zip(params, gs)):
                    out = getattr(functional, f"{name}_")(p, g, *state[i], step=t, **hyper, **scalars[i])
                    scalars[i] = out or {}
            final = trajectory[STEPS]
            tol = tolerance(name, dtype_name, pyopt.info()["isa"])
            for i in range(len(params)):
                assert_close(params[i], final["params"][i], tol, f"functional {name} params[{i}]")
                for (slot, _), arr in zip(slots, state[i]):
                    if slot in final["state"][i]:
                        assert_close(arr, final["state"][i][slot], tol, f"functional {name} {slot}")
                if name == "nadam":
                    assert scalars[i]["mu_product"] == final["state"][i]["mu_product"]


# ----- PYOPT_ISA in a fresh process -------------------------------------------------------------
_CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np, torch, pyopt
    torch.set_num_threads(1)
    info = pyopt.info()
    rng = np.random.default_rng(5)
    worst = {}
    for dtype, tdtype, rtol, atol in ((np.float32, torch.float32, 1e-4, 1e-6), (np.float64, torch.float64, 1e-12, 1e-14)):
        torch.set_default_dtype(tdtype)
        for name, cls, tcls, hyper in (
            ("adam", pyopt.Adam, torch.optim.Adam, dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-2, amsgrad=True)),
            ("sgd", pyopt.SGD, torch.optim.SGD, dict(lr=5e-2, momentum=0.9, dampening=0.1, weight_decay=1e-3)),
        ):
            shapes = [(1,), (7,), (1, 17), (31, 33), (100003,)]
            params = [rng.standard_normal(s).astype(dtype) for s in shapes]
            tparams = [torch.from_numpy(p.copy()) for p in params]
            opt = cls(params, **hyper)
            topt = tcls(tparams, foreach=False, **hyper)
            for _ in range(20):
                grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
                opt.step(grads)
                for tp, g in zip(tparams, grads):
                    tp.grad = torch.from_numpy(g.copy())
                with torch.no_grad():
                    topt.step()
            for i, (p, tp) in enumerate(zip(params, tparams)):
                ref = tp.numpy()
                for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer"):
                    if key in topt.state[tp]:
                        np.testing.assert_allclose(opt.state[i][key], topt.state[tp][key].numpy(), rtol=rtol,
                                                   atol=atol * float(np.abs(topt.state[tp][key].numpy()).max()))
                np.testing.assert_allclose(p, ref, rtol=rtol, atol=atol * float(np.abs(ref).max()))
                scaled = float(np.abs(p - ref).max() / np.abs(ref).max())
                key = name + "/" + np.dtype(dtype).name
                worst[key] = max(worst.get(key, 0.0), scaled)
    print(json.dumps({"isa": info["isa"], "worst": worst}))
    """
)


@pytest.mark.parametrize("isa_name", ISAS)
def test_pyopt_isa_env_in_subprocess(isa_name: str, python_child) -> None:
    env = {**os.environ, "PYOPT_ISA": isa_name}
    proc = python_child("-c", _CHILD, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["isa"] == isa_name, result
