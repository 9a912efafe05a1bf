"""Edge cases where a rule's per-step gate must select a term, not multiply it by 0 (inf·0 and
0/0 are NaN): ADOPT's first step and LaProp's centering switch, against pytorch-optimizer 4.1.0
(per-param path) on every ISA path.

- ADOPT, eps=0: an element whose first gradient is 0 gives ĝ = 0/max(√0, 0) = NaN at step 1, a
  step the reference skips (it only accumulates v). Likewise a NaN first gradient (any eps): it
  makes v NaN, but the reference leaves the param and m alone until step 2.
- LaProp, centered=True: before `steps_before_using_centered`, a gradient so large that v and
  mean² overflow to inf must leave s = v (= inf, so that element's update is 0), not v − inf·0.

The reference runs in the same dtype. On the FMA paths, with torch's sqrt made correctly rounded,
pyopt matches it bit for bit; on the others it is held to a few float roundings.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytorch_optimizer = pytest.importorskip("pytorch_optimizer")

import pyopt  # noqa: E402
from refcheck import DTYPES, ISAS, fma_isas, ieee_sqrt, isa_path, num_threads  # noqa: E402

FMA_ISAS = fma_isas()
SHAPES = [(1,), (7,), (31, 33), (1003,)]  # a lone element, a SIMD tail, SIMD bodies with tails
# On the paths without FMA (reference_table.py's MODEL tolerance, for a path that rounds differently).
TOL = {"float32": dict(rtol=1e-4, atol=1e-6), "float64": dict(rtol=1e-12, atol=1e-13)}
HUGE = {"float32": 1e30, "float64": 1e160}  # g²·(1 − β2) overflows the dtype


def run_reference(cls_name: str, hyper: dict[str, Any], params: list[np.ndarray],
                  grads: list[list[np.ndarray]], slots: tuple[str, ...]) -> list[dict[str, list[np.ndarray]]]:
    """pytorch-optimizer's params and state after every step (foreach=False: the per-param path)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            tparams = [torch.from_numpy(p.copy()) for p in params]
            opt = getattr(pytorch_optimizer, cls_name)(tparams, foreach=False, **hyper)
            out = []
            for gs in grads:
                for tp, g in zip(tparams, gs):
                    tp.grad = torch.from_numpy(g.copy())
                opt.step()
                out.append({"params": [tp.numpy().copy() for tp in tparams],
                            **{s: [opt.state[tp][s].numpy().copy() for tp in tparams] for s in slots}})
    finally:
        torch.set_num_threads(saved)
    return out


def run_pyopt(name: str, hyper: dict[str, Any], params: list[np.ndarray], grads: list[list[np.ndarray]],
              slots: tuple[str, ...]) -> list[dict[str, list[np.ndarray]]]:
    ps = [p.copy() for p in params]
    opt = getattr(pyopt, name)(ps, **hyper)
    out = []
    for gs in grads:
        opt.step(gs)
        out.append({"params": [p.copy() for p in ps],
                    **{s: [opt.state[i][s].copy() for i in range(len(ps))] for s in slots}})
    return out


def assert_matches(got: list[dict], ref: list[dict], exact: bool, dtype_name: str, where: str) -> None:
    for t, (g_step, r_step) in enumerate(zip(got, ref), start=1):
        for key, r_arrays in r_step.items():
            for i, (a, r) in enumerate(zip(g_step[key], r_arrays)):
                what = f"{where}: {key}[{i}] after step {t}"
                assert np.isfinite(r).all() or key != "params", f"{what}: the reference is not finite"
                if exact:
                    np.testing.assert_array_equal(a, r, err_msg=what)
                else:
                    scale = float(np.max(np.abs(r[np.isfinite(r)]), initial=0.0))
                    np.testing.assert_allclose(a, r, rtol=TOL[dtype_name]["rtol"],
                                               atol=TOL[dtype_name]["atol"] * scale, err_msg=what)


def check_every_isa(cls_name: str, name: str, hyper: dict[str, Any], params: list[np.ndarray],
                    grads: list[list[np.ndarray]], slots: tuple[str, ...], dtype_name: str) -> None:
    ref = run_reference(cls_name, hyper, params, grads, slots)
    with ieee_sqrt():
        ref_ieee = run_reference(cls_name, hyper, params, grads, slots)
    with num_threads(1):
        for isa in ISAS:
            with isa_path(isa):
                got = run_pyopt(name, hyper, params, grads, slots)
            where = f"{name} {dtype_name} {isa} {hyper}"
            for step in got:
                assert all(np.isfinite(p).all() for p in step["params"]), f"{where}: a param turned NaN/inf"
            assert_matches(got, ref, False, dtype_name, where)
            if isa in FMA_ISAS:
                assert_matches(got, ref_ieee, True, dtype_name, where + " (torch with a correctly rounded sqrt)")


# ----- ADOPT: the first step only accumulates v --------------------------------------------------
def adopt_data(dtype: type, first: str, steps: int = 6) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """First gradients with about a third of their entries 0 (and the (7,) tensor all 0), or, for
    ``first="nan"``, NaN; later gradients are nonzero (with eps = 0, a 0 at step 2 where v = 0
    would be 0/0 in the reference too)."""
    rng = np.random.default_rng(11)
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = []
    for t in range(steps):
        gs = []
        for i, s in enumerate(SHAPES):
            g = (rng.standard_normal(s) + np.copysign(0.1, rng.standard_normal(s))).astype(dtype)
            if t == 0:
                picked = rng.random(s) < 0.35
                if first == "zero":
                    g[picked] = 0
                    if i == 1:
                        g[...] = 0
                else:
                    g[picked] = np.nan
            gs.append(g)
        grads.append(gs)
    return params, grads


ADOPT_HYPERS = [
    dict(lr=1e-2, betas=(0.9, 0.999)),
    dict(lr=3e-3, betas=(0.6, 0.99), weight_decay=0.05, weight_decouple=True),
    dict(lr=3e-3, betas=(0.3, 0.9999), weight_decay=0.05, weight_decouple=True, fixed_decay=True),
]


@pytest.mark.parametrize("dtype_name", DTYPES)
@pytest.mark.parametrize("hyper", ADOPT_HYPERS, ids=["plain", "decoupled_wd", "fixed_wd"])
def test_adopt_eps0_zero_first_gradient(dtype_name: str, hyper: dict[str, Any]) -> None:
    params, grads = adopt_data(DTYPES[dtype_name], "zero")
    check_every_isa("ADOPT", "ADOPT", {**hyper, "eps": 0.0}, params, grads, ("exp_avg", "exp_avg_sq"), dtype_name)


@pytest.mark.parametrize("dtype_name", DTYPES)
def test_adopt_eps0_coupled_decay_zero_first_gradient(dtype_name: str) -> None:
    """Coupled decay adds wd·p to the gradient at step 1 too: zero it where the gradient is 0 by
    making those params 0 as well."""
    params, grads = adopt_data(DTYPES[dtype_name], "zero")
    for p, g in zip(params, grads[0]):
        p[g == 0] = 0
    hyper = dict(lr=1e-2, betas=(0.9, 0.999), weight_decay=0.1, weight_decouple=False, eps=0.0)
    check_every_isa("ADOPT", "ADOPT", hyper, params, grads, ("exp_avg", "exp_avg_sq"), dtype_name)


@pytest.mark.parametrize("dtype_name", DTYPES)
def test_adopt_nan_first_gradient_leaves_param_and_m(dtype_name: str) -> None:
    """Step 1 only (from step 2 on, the NaN in v reaches the reference's param too)."""
    params, grads = adopt_data(DTYPES[dtype_name], "nan", steps=1)
    check_every_isa("ADOPT", "ADOPT", dict(lr=1e-2, betas=(0.9, 0.999)), params, grads,
                    ("exp_avg", "exp_avg_sq"), dtype_name)


# ----- LaProp: centering switched off by a gate -------------------------------------------------
def laprop_data(dtype_name: str, steps: int) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """Gradients with about 10% of the entries huge (HUGE[dtype], so g²·(1 − β2), v and mean²
    overflow), the others ordinary."""
    dtype = DTYPES[dtype_name]
    rng = np.random.default_rng(12)
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = []
    for _ in range(steps):
        gs = []
        for s in SHAPES:
            g = rng.standard_normal(s)
            huge = rng.random(s) < 0.1
            g[huge] = np.sign(g[huge]) * HUGE[dtype_name]
            gs.append(g.astype(dtype))
        grads.append(gs)
    return params, grads


@pytest.mark.parametrize("dtype_name", DTYPES)
@pytest.mark.parametrize("ams_bound", [False, True])
@pytest.mark.parametrize("beta2", [0.999, 0.3])  # torch's lerp takes its other form for 1 − β2 ≥ 0.5
def test_laprop_centered_huge_gradient_before_centering(dtype_name: str, ams_bound: bool, beta2: float) -> None:
    """Every step before centering starts (after it, the reference's v − mean² is inf − inf = NaN
    for the overflowed elements, so the comparison stops there)."""
    steps_before = 6
    params, grads = laprop_data(dtype_name, steps_before)
    hyper = dict(lr=1e-2, betas=(0.9, beta2), centered=True, steps_before_using_centered=steps_before,
                 ams_bound=ams_bound, weight_decay=0.01)
    slots = ("exp_avg", "exp_avg_sq", "exp_mean_avg_beta2") + (("max_exp_avg_sq",) if ams_bound else ())
    check_every_isa("LaProp", "LaProp", hyper, params, grads, slots, dtype_name)
