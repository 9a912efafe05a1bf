"""How pyopt's state at a checkpoint is compared with a reference's, for the two suites of
reference_table.py. Each ``check_*`` asserts and returns the errors it saw (for the report).

Tolerances: None means bit for bit; otherwise ``rtol`` elementwise with an atol of
``atol_scale`` × the array's largest magnitude, and ``update``: a bound on the normwise error of
the total update ||Δp − Δp_ref|| / ||Δp_ref||, so a small lr cannot hide behind the params' size.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from refcheck import merge_errors, update_error
from reference_impls import SCALAR_STATE


# ----- torch.optim: same dtype, every state entry torch keeps, scalar state to the bit ----------
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


def assert_close_torch(actual: np.ndarray, desired: np.ndarray, tol: dict[str, float] | None, what: str) -> dict[str, float]:
    assert actual.shape == desired.shape and actual.dtype == desired.dtype, (what, actual.dtype, desired.dtype)
    assert np.isfinite(desired).all(), f"{what}: the torch reference is not finite (bad hyperparameter range)"
    if tol is None:
        np.testing.assert_array_equal(actual, desired, err_msg=what)
        return {"scaled": 0.0, "rtol": 0.0}
    atol = tol["atol_scale"] * float(np.max(np.abs(desired)))
    np.testing.assert_allclose(actual, desired, rtol=tol["rtol"], atol=atol, err_msg=what)
    return _errors(actual, desired, atol)


def check_torch(opt: Any, params: list[np.ndarray], initial: list[np.ndarray], ref: dict[str, Any], t: int,
                tol: dict[str, float] | None, where: str, flips: tuple[float, float]) -> dict[str, float]:
    """pyopt's params and state against torch's checkpoint ``ref`` (``flips`` is unused: torch.optim's
    rules take no sign of a value that rounds)."""
    seen: dict[str, float] = {}
    for i, (p, tp) in enumerate(zip(params, ref["params"])):
        merge_errors(seen, assert_close_torch(p, tp, tol, f"{where}: params[{i}] after step {t}"))
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
            merge_errors(seen, assert_close_torch(mine[key], tstate[key], tol,
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


# ----- packages and float64 models: the slots the reference keeps, sign flips allowed ----------
def assert_close_package(actual: np.ndarray, desired: np.ndarray, tol: dict[str, float] | None, what: str,
                         flips: float = 0.0, initial: np.ndarray | None = None) -> dict[str, float]:
    """Elementwise: bit for bit if ``tol`` is None, else rtol plus an atol relative to the largest
    magnitude (of the array, or of its ``initial`` value if larger: a param that crossed 0 carries
    the rounding of its earlier magnitude). ``flips`` > 0: up to 1e-4 of the elements may instead
    be off by at most ``flips``."""
    assert actual.shape == desired.shape, what
    assert np.isfinite(desired).all(), f"{what}: the reference is not finite"
    if tol is None:
        assert actual.dtype == desired.dtype, what
        np.testing.assert_array_equal(actual, desired, err_msg=what)
        return {"scaled": 0.0}
    a = actual.astype(np.float64)
    d = np.asarray(desired, np.float64)
    scale = float(np.max(np.abs(d)))
    if initial is not None:
        scale = max(scale, float(np.max(np.abs(initial))))
    diff = np.abs(a - d)
    bad = diff > tol["rtol"] * np.abs(d) + tol["atol_scale"] * scale
    if flips and bad.any():
        assert np.count_nonzero(bad) <= max(1, bad.size // 10000) and diff[bad].max() <= flips * (1 + 1e-3), (
            f"{what}: {np.count_nonzero(bad)} elements off, worst {diff[bad].max():.3g} (sign flips allow {flips:.3g})")
        diff = np.where(bad, 0.0, diff)
        bad[...] = False
    if bad.any():
        np.testing.assert_allclose(a, d, rtol=tol["rtol"], atol=tol["atol_scale"] * scale, err_msg=what)
    return {"scaled": float(diff.max()) / scale if scale > 0 else float(diff.max())}


def check_package(opt: Any, params: list[np.ndarray], initial: list[np.ndarray], ref: dict[str, Any], t: int,
                  tol: dict[str, float] | None, where: str, flips: tuple[float, float]) -> dict[str, float]:
    """pyopt's params and the state slots the reference keeps, against checkpoint ``ref``;
    ``flips`` = (params, state) allowances for a few sign-flipped elements (see sign flips in
    reference_table.py)."""
    param_flips, state_flips = flips
    seen: dict[str, float] = {}
    for i, (p, p0, rp) in enumerate(zip(params, initial, ref["params"])):
        merge_errors(seen, assert_close_package(p, rp, tol, f"{where}: params[{i}] after step {t}", param_flips, p0))
    update, den = update_error(params, initial, ref["params"])
    # A handful (≤ 9) of sign-flipped elements, each off by ≤ flips, add ≤ 3·flips to the norm.
    bound = 0.0 if tol is None else tol["update"] + (3 * param_flips / den ** 0.5 if param_flips and den > 0 else 0.0)
    assert update <= bound, f"{where}: after step {t}, ||Δp − Δp_ref|| / ||Δp_ref|| = {update:.3g} > {bound:.0e}"
    merge_errors(seen, {"update": update})
    for i, rstate in enumerate(ref["state"]):
        assert opt.state[i]["step"] == t
        for key, value in rstate.items():
            assert key in opt.state[i], f"{where}: params[{i}] lacks state {key!r} the reference keeps"
            merge_errors(seen, assert_close_package(opt.state[i][key], value, tol,
                                                    f"{where}: state[{i}][{key!r}] after step {t}", state_flips))
    return seen


def run_pyopt(row: Any, hyper: dict[str, Any], params0: list[np.ndarray], grads: list[list[np.ndarray]],
              trajectory: dict[int, dict[str, Any]], dtype_name: str, where: str,
              tol: Any = "row") -> dict[str, float]:
    """Step ``row``'s optimizer through ``grads`` and compare at the reference's checkpoints, with
    ``tol`` (None: bit for bit; "row": the row's tolerance on the current ISA path)."""
    import pyopt
    from pyopt.optimizers import CLASSES

    if tol == "row":
        tol = row.tolerance(dtype_name, pyopt.info()["isa"])
    flips = row.sign_flips(hyper) if row.sign_flips and tol is not None else (0.0, 0.0)
    check = CHECKS[row.suite.check]
    params = [p.copy() for p in params0]
    opt = CLASSES[row.name](params, **hyper)
    seen: dict[str, float] = {}
    first = [g.copy() for g in grads[0]]
    for t, gs in enumerate(grads, start=1):
        opt.step(gs)
        if t == 1:  # the grads are shared with the other ISA runs: step must not write them
            for g, g0 in zip(gs, first):
                np.testing.assert_array_equal(g, g0, err_msg=f"{where}: step modified a gradient")
        if t in trajectory:
            merge_errors(seen, check(opt, params, params0, trajectory[t], t, tol, where, flips))
    return seen


CHECKS = {"torch": check_torch, "package": check_package}
