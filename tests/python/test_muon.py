"""Muon (pyopt/muon.py) against torch.optim.Muon 2.13, plus its API, errors and checkpoints.

torch 2.13 runs Muon's Newton–Schulz iteration in bfloat16 (whatever the param dtype) with
oneDNN GEMMs accumulating in float32. pyopt emulates that with numpy float32 GEMMs rounded to
bfloat16: each GEMM/addmm result is bit-identical to torch's unless float32 accumulation order
moves a value across a bfloat16 rounding boundary, which happens now and then for 33+ long dot
products and then spreads through the remaining iterations. So:

- the Newton–Schulz output is compared per call (bit-identical on small shapes, almost always on
  the others);
- the rest of the rule (momentum lerp, nesterov, weight decay, lr adjustment, the mixed-dtype add)
  is compared with both sides sharing one Newton–Schulz function: tight in float32, ~1e-12 in
  float64;
- the plain end-to-end trajectory is compared with a tolerance set from the measured bfloat16
  divergence.
"""
from __future__ import annotations

import numpy as np
import pytest

import pyopt
from pyopt import schedules as S
from pyopt.muon import Muon, _zeropower_via_newtonschulz

torch = pytest.importorskip("torch")
tmuon = pytest.importorskip("torch.optim._muon")

SHAPES = [(1, 1), (7, 17), (17, 7), (64, 33), (3, 1023)]
STEPS = 100
COEFFS = (3.4445, -4.775, 2.0315)


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):  # (conftest.py)
    pass


def hypers(seed: int) -> dict:
    """Seed 0: torch's defaults but Keller Jordan's lr; others random, covering nesterov on/off,
    momentum below and above 0.5 (torch's lerp takes a different branch), both adjust_lr_fn."""
    if seed == 0:
        return dict(lr=0.02, weight_decay=0.0, momentum=0.95, nesterov=True, adjust_lr_fn=None)
    rng = np.random.default_rng(1000 + seed)
    return dict(
        lr=float(np.exp(rng.uniform(np.log(1e-3), np.log(0.1)))),
        weight_decay=[0.0, float(rng.uniform(0.0, 0.2))][seed % 2],
        momentum=[0.0, float(rng.uniform(0.05, 0.45)), float(rng.uniform(0.5, 0.99)), 0.95][seed % 4],
        nesterov=bool(seed % 3 != 1),
        adjust_lr_fn=[None, "original", "match_rms_adamw"][seed % 3],
    )


def trajectories(dtype, seed, *, steps=STEPS, shapes=SHAPES):
    """pyopt's and torch's params after ``steps`` steps on the same random grads (grad scales
    1e-3 .. 1e3, and now and then a None grad)."""
    rng = np.random.default_rng(seed)
    hp = hypers(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    initial = [p.copy() for p in params]
    tparams = [torch.tensor(p, requires_grad=True) for p in params]
    opt = Muon(params, **hp)
    topt = torch.optim.Muon(tparams, **hp)
    for _ in range(steps):
        grads = [None if rng.random() < 0.05 else (rng.standard_normal(s) * rng.choice([1e-3, 1.0, 1e3])).astype(dtype)
                 for s in shapes]
        opt.step(grads)
        for tp, g in zip(tparams, grads):
            tp.grad = None if g is None else torch.from_numpy(g.copy())
        topt.step()
    return params, [tp.detach().numpy() for tp in tparams], initial, opt, topt


def update_errors(params, ref, initial):
    """Per tensor: ||Δp − Δp_torch|| / ||Δp_torch||, Δ from the initial params."""
    out = []
    for p, r, p0 in zip(params, ref, initial):
        r64 = r.astype(np.float64)
        den = np.linalg.norm(r64 - p0)
        out.append(float(np.linalg.norm(p.astype(np.float64) - r64) / den))
    return out


def shared_ns(grad, ns_coefficients, ns_steps, eps):
    """torch's Newton–Schulz replaced by pyopt's (exact bfloat16 values, so no rounding here)."""
    x = _zeropower_via_newtonschulz(grad.numpy(), tuple(ns_coefficients), ns_steps, eps)
    return torch.from_numpy(np.ascontiguousarray(x)).bfloat16()


def assert_buffers_close(opt, topt, tol):
    """Momentum buffers equal up to ``tol`` relative to each buffer's largest entry (float64
    buffers cancel to near zero in places, where torch's FMA lerp and numpy's differ by an ulp of
    the larger terms)."""
    for i, tp in enumerate(topt.param_groups[0]["params"]):
        ref = topt.state[tp]["momentum_buffer"].numpy()
        np.testing.assert_allclose(opt.state[i]["momentum_buffer"], ref, rtol=0, atol=tol * np.max(np.abs(ref)))


# ----- against torch ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_newton_schulz_matches_torch(dtype):
    """Per call, on inputs of every scale: the bfloat16 iteration gives torch's bits (small
    shapes: always; 33-long dot products: in >= 80% of calls, measured 90-96%), and the normwise
    relative difference stays below 1e-2 (measured max 3.7e-3 over 100 calls). An iteration in
    float32 instead would match in no call."""
    rng = np.random.default_rng(7)
    for shape in SHAPES + [(33, 64)]:
        identical = 0
        worst = 0.0
        for k in range(100):
            u = (rng.standard_normal(shape) * rng.choice([1e-6, 1e-3, 1.0, 1e3])).astype(dtype)
            coeffs, steps = (COEFFS, 5) if k % 4 else ((3.0, -3.2, 1.2), int(rng.integers(1, 9)))
            ref = tmuon._zeropower_via_newtonschulz(torch.from_numpy(u), coeffs, steps, 1e-7)
            assert ref.dtype == torch.bfloat16  # torch does it in bfloat16
            ref = ref.float().numpy()
            got = _zeropower_via_newtonschulz(u, coeffs, steps, 1e-7)
            assert got.shape == shape
            identical += bool(np.array_equal(got, ref))
            worst = max(worst, float(np.linalg.norm(got - ref) / np.linalg.norm(ref)))
        assert worst < 1e-2, (shape, worst)
        if max(shape) <= 17:
            assert identical == 100, (shape, identical)
        else:
            assert identical >= 80, (shape, identical)
    # A zero matrix (norm clamped to eps) and a tiny one.
    for scale in (0.0, 1e-30):
        u = (np.ones((5, 8)) * scale).astype(dtype)
        ref = tmuon._zeropower_via_newtonschulz(torch.from_numpy(u), COEFFS, 5, 1e-7).float().numpy()
        np.testing.assert_array_equal(_zeropower_via_newtonschulz(u, COEFFS, 5, 1e-7), ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_newton_schulz_norm_at_extreme_scales_matches_torch(dtype):
    """torch normalises by the norm of the bfloat16 matrix, accumulated in float32: entries of
    ~1e20 square to inf (norm inf, output 0); entries of ~1e-25 square to 0 (norm 0, clamped to
    eps; with eps = 0 that is 0/0 = NaN); entries of ~2e-23 square to float32 denormals. A
    one-element matrix's norm is its |x| (no square). Bit for bit, NaN included."""
    rng = np.random.default_rng(17)
    cases = [(1e20, 1e-7), (3e19, 1e-7), (1e-25, 0.0), (1e-25, 1e-30), (2e-23, 0.0), (1e-22, 0.0), (3e-22, 1e-30)]
    for shape in [(1, 1), (1, 9), (7, 17), (17, 7), (64, 33)]:
        for scale, eps in cases:
            for k in range(3):
                u = (rng.standard_normal(shape) * scale).astype(dtype)
                ref = tmuon._zeropower_via_newtonschulz(torch.from_numpy(u), COEFFS, 5, eps).float().numpy()
                got = _zeropower_via_newtonschulz(u, COEFFS, 5, eps)
                if max(shape) > 17 and np.isfinite(ref).all() and np.any(ref):
                    continue  # a finite, nonzero output: long dot products (see the test above)
                np.testing.assert_array_equal(got, ref, err_msg=f"{shape} scale {scale} eps {eps}")


def test_huge_gradient_step_matches_torch():
    """A gradient of ~1e20: torch's Newton–Schulz output is 0, so the param only decays."""
    rng = np.random.default_rng(18)
    w = rng.standard_normal((6, 9)).astype(np.float32)
    tw = torch.tensor(w, requires_grad=True)
    opt, topt = Muon([w], weight_decay=0.1), torch.optim.Muon([tw], lr=0.02, weight_decay=0.1)
    for _ in range(3):
        g = (rng.standard_normal(w.shape) * 1e20).astype(np.float32)
        opt.step([g])
        tw.grad = torch.from_numpy(g)
        topt.step()
        np.testing.assert_array_equal(w, tw.detach().numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(6))
def test_rule_matches_torch_with_shared_newton_schulz(monkeypatch, dtype, seed):
    """Everything around the Newton–Schulz iteration, with both sides using the same one.
    Measured max relative update error per tensor (20 seeds): float32 0 (bit-identical), float64
    2.8e-14 (torch fuses lerp/add into FMAs, numpy's float64 does not). Tolerances: float32 1e-6,
    float64 1e-12."""
    monkeypatch.setattr(tmuon, "_zeropower_via_newtonschulz", shared_ns)
    params, ref, initial, opt, topt = trajectories(dtype, seed)
    errors = update_errors(params, ref, initial)
    tol = 1e-6 if dtype == np.float32 else 1e-12
    assert max(errors) < tol, errors
    assert_buffers_close(opt, topt, tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(6))
def test_matches_torch(dtype, seed):
    """The plain trajectory: 100 steps, torch's bfloat16 Newton–Schulz against pyopt's. Measured
    max relative update error per tensor, both dtypes alike (the bfloat16 iteration dominates):
    5.4e-4 over these 6 seeds, 8.4e-4 over 20, from now-and-then one-ulp bfloat16 differences
    (see the module docstring). Tolerance 2e-3. An iteration in float32 instead gives 2.5e-3 to
    1.7e-2."""
    params, ref, initial, opt, topt = trajectories(dtype, seed)
    errors = update_errors(params, ref, initial)
    assert max(errors) < 2e-3, errors
    for p, p0 in zip(params, initial):
        assert p.dtype == dtype and not np.array_equal(p, p0)
    # The momentum buffers do not go through bfloat16: float32 bit-identical, float64 ~1 ulp.
    assert_buffers_close(opt, topt, 0.0 if dtype == np.float32 else 1e-13)


def test_param_groups_match_torch(monkeypatch):
    """Two groups with their own hyperparameters, and a hyperparameter edit between steps."""
    monkeypatch.setattr(tmuon, "_zeropower_via_newtonschulz", shared_ns)
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((6, 9)), rng.standard_normal((9, 6))
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    opt = Muon([{"params": [a]}, {"params": [b], "lr": 0.1, "nesterov": False, "adjust_lr_fn": "match_rms_adamw"}],
               weight_decay=0.01)
    topt = torch.optim.Muon([{"params": [ta]}, {"params": [tb], "lr": 0.1, "nesterov": False,
                                                "adjust_lr_fn": "match_rms_adamw"}], lr=0.02, weight_decay=0.01)
    for k in range(40):
        if k == 20:
            for o in (opt, topt):
                o.param_groups[0]["lr"] = 0.005
                o.param_groups[1]["momentum"] = 0.5
        ga, gb = rng.standard_normal(a.shape), rng.standard_normal(b.shape)
        opt.step([ga, gb])
        ta.grad, tb.grad = torch.from_numpy(ga), torch.from_numpy(gb)
        topt.step()
    np.testing.assert_allclose(a, ta.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(b, tb.detach().numpy(), rtol=1e-12, atol=1e-14)


# ----- API --------------------------------------------------------------------------------
def make(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return {"w1": rng.standard_normal((8, 5)).astype(dtype), "w2": rng.standard_normal((4, 12)).astype(dtype)}


def grads_for(params, rng):
    return {n: rng.standard_normal(p.shape).astype(p.dtype) for n, p in params.items()}


def test_defaults_and_signature():
    w = np.zeros((3, 4), np.float32)
    opt = Muon([w])
    assert opt.defaults == dict(lr=0.02, weight_decay=0.0, momentum=0.95, nesterov=True,
                                ns_coefficients=COEFFS, eps=1e-7, ns_steps=5, adjust_lr_fn=None)
    assert opt.param_groups[0]["params"][0] is w
    assert opt.state == {}
    assert "Muon" in repr(opt) and "ns_steps: 5" in repr(opt)


def test_param_forms_and_grad_forms_agree():
    """Array / list / dict / groups; grads as list, dict, lone array: same result."""
    rng = np.random.default_rng(1)
    g = rng.standard_normal((6, 4)).astype(np.float32)
    results = []
    for form in ("array", "list", "dict", "groups"):
        w = np.arange(24, dtype=np.float32).reshape(6, 4) / 10
        params = {"array": w, "list": [w], "dict": {"w": w}, "groups": [{"params": [w]}]}[form]
        opt = Muon(params, lr=0.1)
        for _ in range(3):
            opt.step({"w": g} if form == "dict" else (g if form == "array" else [g]))
        results.append(w)
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    assert not np.array_equal(results[0], np.arange(24, dtype=np.float32).reshape(6, 4) / 10)


def test_none_grad_skips_and_state():
    params = make()
    opt = Muon(params)
    rng = np.random.default_rng(2)
    g = grads_for(params, rng)
    w2_before = params["w2"].copy()
    opt.step([g["w1"], None])
    np.testing.assert_array_equal(params["w2"], w2_before)
    assert set(opt.state) == {0}
    assert opt.state[0]["step"] == 1
    np.testing.assert_array_equal(opt.state[0]["momentum_buffer"], (1 - 0.95) * g["w1"])
    opt.step(g)
    assert opt.state[0]["step"] == 2 and opt.state[1]["step"] == 1
    assert opt.state[1]["momentum_buffer"].dtype == np.float32


def test_hyperparameter_edit_takes_effect_next_step():
    params = make()
    opt = Muon(params)
    rng = np.random.default_rng(3)
    opt.step(grads_for(params, rng))
    opt.param_groups[0]["lr"] = 0.0
    before = {n: p.copy() for n, p in params.items()}
    opt.step(grads_for(params, rng))
    for n in params:
        np.testing.assert_array_equal(params[n], before[n])  # lr 0, wd 0: nothing moves
    opt.param_groups[0]["lr"] = 0.02
    opt.step(grads_for(params, rng))
    assert not np.array_equal(params["w1"], before["w1"])


def test_zero_state_restarts():
    params, fresh_params = make(), make()
    rng = np.random.default_rng(4)
    opt = Muon(params)
    for _ in range(5):
        opt.step(grads_for(params, rng))
    opt.zero_state()
    assert opt.state == {}
    for n in params:
        fresh_params[n][...] = params[n]
    fresh = Muon(fresh_params)
    for _ in range(5):
        g = grads_for(params, rng)
        opt.step(g)
        fresh.step(g)
    for n in params:
        np.testing.assert_array_equal(params[n], fresh_params[n])


def test_float64_and_grad_dtype_conversion():
    w = np.ones((3, 5))
    w32 = np.ones((3, 5), np.float32)
    g = np.random.default_rng(5).standard_normal((3, 5))
    Muon([w]).step([g.astype(np.float32)])  # float32 grad for a float64 param: converted
    Muon([w32]).step([g])
    assert w.dtype == np.float64 and w32.dtype == np.float32
    assert not np.array_equal(w, np.ones((3, 5))) and not np.array_equal(w32, np.ones((3, 5)))


# ----- errors ------------------------------------------------------------------------------
def test_non_2d_param_rejected_with_advice():
    for bad in (np.zeros(3, np.float32), np.zeros((2, 3, 4), np.float32), np.zeros((), np.float32)):
        with pytest.raises(ValueError, match=r"params\[1\].*only 2-D.*AdamW.*param_groups"):
            Muon([np.zeros((2, 2), np.float32), bad])
    with pytest.raises(ValueError, match=r"params\['b'\].*only 2-D"):
        Muon({"w": np.zeros((2, 2)), "b": np.zeros(2)})


def test_bad_arrays_rejected():
    with pytest.raises(TypeError, match=r"params\[0\].*dtype int64"):
        Muon([np.zeros((2, 2), np.int64)])
    with pytest.raises(TypeError, match=r"params\[0\].*dtype float16"):
        Muon([np.zeros((2, 2), np.float16)])
    with pytest.raises(ValueError, match=r"params\[0\].*C-contiguous"):
        Muon([np.zeros((4, 4), np.float32)[:, ::2]])
    frozen = np.zeros((2, 2))
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[0\].*read-only"):
        Muon([frozen])
    with pytest.raises(TypeError, match=r"numpy.ndarray"):
        Muon([[[1.0, 2.0]]])
    w = np.zeros((2, 2))
    with pytest.raises(ValueError, match="more than one place"):
        Muon([w, w])
    with pytest.raises(ValueError, match="empty parameter list"):
        Muon([])


@pytest.mark.parametrize("hyper, exc, pattern", [
    (dict(lr=-0.1), ValueError, "lr"),
    (dict(lr=float("nan")), ValueError, "lr"),
    (dict(momentum=1.0), ValueError, "momentum"),
    (dict(momentum=-0.1), ValueError, "momentum"),
    (dict(weight_decay=-1.0), ValueError, "weight_decay"),
    (dict(eps=-1e-7), ValueError, "eps"),
    (dict(ns_steps=0), ValueError, "ns_steps"),
    (dict(ns_steps=100), ValueError, "ns_steps"),
    (dict(ns_steps=2.0), TypeError, "ns_steps"),
    (dict(ns_steps=True), TypeError, "ns_steps"),
    (dict(ns_coefficients=(1.0, 2.0)), TypeError, "ns_coefficients"),
    (dict(ns_coefficients=(1.0, 2.0, float("inf"))), ValueError, "ns_coefficients"),
    (dict(nesterov=1), TypeError, "nesterov"),
    (dict(lr="0.1"), TypeError, "lr"),
    (dict(adjust_lr_fn="rms"), ValueError, "adjust_lr_fn"),
])
def test_bad_hyperparameters(hyper, exc, pattern):
    with pytest.raises(exc, match=pattern):
        Muon([np.zeros((2, 2))], **hyper)
    with pytest.raises(exc, match=rf"param group 1.*{pattern}"):
        Muon([{"params": [np.zeros((2, 2))]}, {"params": [np.zeros((2, 2))], **hyper}])
    with pytest.raises(TypeError, match="unknown hyperparameter 'betas'"):
        Muon([{"params": [np.zeros((2, 2))], "betas": (0.9, 0.99)}])


def _snapshot(opt, params):
    return ({n: p.copy() for n, p in params.items()},
            {i: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in s.items()} for i, s in opt.state.items()})


def _assert_unchanged(before, opt, params):
    values, state = before
    for n in params:
        np.testing.assert_array_equal(values[n], params[n])
    assert set(state) == set(opt.state)
    for i, entry in state.items():
        for k, v in entry.items():
            np.testing.assert_array_equal(v, opt.state[i][k])


def test_bad_grads_change_nothing():
    params = make()
    opt = Muon(params)
    rng = np.random.default_rng(6)
    opt.step(grads_for(params, rng))
    before = _snapshot(opt, params)
    good = rng.standard_normal((8, 5)).astype(np.float32)
    cases = [
        (ValueError, r"params\['w2'\].*shape \(12, 4\) does not match.*\(4, 12\)", [good, np.zeros((12, 4), np.float32)]),
        (TypeError, r"params\['w2'\].*dtype complex128", [good, np.zeros((4, 12), complex)]),
        (TypeError, r"params\['w2'\].*dtype bool", [good, np.zeros((4, 12), bool)]),
        (ValueError, "expected 2 gradients", [good]),
        (ValueError, "missing \\['w2'\\]", {"w1": good}),
        (ValueError, "single gradient array", good),
        (TypeError, "grads must be", "nope"),
    ]
    for exc, pattern, grads in cases:
        with pytest.raises(exc, match=pattern):
            opt.step(grads)
        _assert_unchanged(before, opt, params)
    # An invalid edit of a group's hyperparameter is caught at the next step, before any change.
    opt.param_groups[0]["momentum"] = 1.5
    with pytest.raises(ValueError, match=r"param group 0.*momentum"):
        opt.step(grads_for(params, rng))
    _assert_unchanged(before, opt, params)
    opt.param_groups[0]["momentum"] = 0.95
    opt.param_groups[0]["params"].pop()
    with pytest.raises(ValueError, match="add_param_group"):
        opt.step(grads_for(params, rng))
    _assert_unchanged(before, opt, params)


NAN = float("nan")
NAN_HYPERS = [dict(lr=NAN), dict(weight_decay=NAN), dict(momentum=NAN), dict(eps=NAN),
              dict(ns_coefficients=(NAN, -4.775, 2.0315)), dict(ns_coefficients=(3.4445, NAN, 2.0315)),
              dict(ns_coefficients=(3.4445, -4.775, NAN)), dict(ns_steps=NAN), dict(nesterov=NAN),
              dict(adjust_lr_fn=NAN), dict(lr=np.float64(NAN)), dict(momentum=np.float32(NAN))]


@pytest.mark.parametrize("hyper", NAN_HYPERS, ids=lambda h: f"{next(iter(h))}={next(iter(h.values()))!r}")
def test_nan_rejected_for_every_hyperparameter(hyper):
    """At construction, in a param group, and edited between steps (that step changes nothing)."""
    key = next(iter(hyper))
    with pytest.raises((TypeError, ValueError), match=key):
        Muon([np.zeros((2, 2))], **hyper)
    with pytest.raises((TypeError, ValueError), match=rf"param group 1.*{key}"):
        Muon([{"params": [np.zeros((2, 2))]}, {"params": [np.zeros((2, 2))], **hyper}])
    params = make()
    opt = Muon(params)
    rng = np.random.default_rng(19)
    opt.step(grads_for(params, rng))
    before = _snapshot(opt, params)
    opt.param_groups[0][key] = hyper[key]
    with pytest.raises((TypeError, ValueError), match=rf"param group 0.*{key}"):
        opt.step(grads_for(params, rng))
    _assert_unchanged(before, opt, params)


def _refused(opt, params, grads, exc, pattern):
    """The step raises ``exc`` matching ``pattern`` and changes nothing: params, state, step
    counts, attached schedules and group lrs."""
    before = _snapshot(opt, params)
    counts = [s.count for s in opt.schedules]
    lrs = [g["lr"] for g in opt.param_groups]
    with pytest.raises(exc, match=pattern):
        opt.step(grads)
    _assert_unchanged(before, opt, params)
    assert [s.count for s in opt.schedules] == counts
    assert [g["lr"] for g in opt.param_groups] == lrs


def test_param_made_read_only_refuses_the_whole_step():
    params = make()
    opt = Muon(params)
    rng = np.random.default_rng(20)
    opt.step(grads_for(params, rng))
    params["w2"].flags.writeable = False
    _refused(opt, params, grads_for(params, rng), ValueError, r"params\['w2'\].*read-only")
    params["w2"].flags.writeable = True
    opt.step(grads_for(params, rng))
    assert opt.state[0]["step"] == opt.state[1]["step"] == 2


def test_param_reshaped_in_place_refuses_the_whole_step():
    """A later param whose shape changed in place after construction: (2, 0) -> (2, 0, 3) (no
    longer 2-D), or (4, 12) -> (12, 4) (its momentum buffer no longer fits)."""
    first, empty = np.ones((2, 3), np.float32), np.zeros((2, 0), np.float32)
    opt = Muon([first, empty])
    empty.shape = (2, 0, 3)
    params = {"first": first, "empty": empty}
    _refused(opt, params, [np.ones((2, 3), np.float32), np.zeros((2, 0, 3), np.float32)], ValueError,
             r"params\[1\].*only 2-D")

    params = make()
    opt = Muon(params)
    rng = np.random.default_rng(21)
    opt.step(grads_for(params, rng))
    params["w2"].shape = (12, 4)
    _refused(opt, params, grads_for(params, rng), ValueError, r"params\['w2'\].*momentum_buffer.*\(4, 12\)")


def test_grad_sharing_memory_with_a_param_is_refused():
    """Its own param (torch's and the C++ engine's rule), another param of the step (updated
    first, it would change that gradient before its own update), or a view of either."""
    params = {"a": np.ones((3, 4), np.float32), "b": np.full((3, 4), 2.0, np.float32)}
    opt = Muon(params)
    g = np.random.default_rng(22).standard_normal((3, 4)).astype(np.float32)
    cases = [
        ([params["a"], g], r"params\['a'\].*gradient shares memory with its param"),
        ([g, params["a"]], r"params\['b'\].*gradient shares memory with params\['a'\]"),
        ([params["b"], g], r"params\['a'\].*gradient shares memory with params\['b'\]"),
        ([g, np.broadcast_to(params["b"][1], (3, 4))], r"params\['b'\].*gradient shares memory with its param"),
    ]
    for grads, pattern in cases:
        _refused(opt, params, grads, ValueError, pattern)


def test_grad_near_a_param_is_accepted():
    """Memory is compared exactly, not by address ranges: a strided gradient whose rows straddle
    a param without touching it is fine."""
    backing = np.zeros((6, 4), np.float32)
    param = backing[2:4]  # rows 2 and 3
    grad = backing[0::4]  # rows 0 and 4: its address range spans the param's
    grad[...] = 1.0
    opt = Muon([param])
    opt.step([grad])
    assert opt.state[0]["step"] == 1 and np.any(param != 0)
    np.testing.assert_array_equal(backing[[0, 4]], 1.0)


def test_refused_step_does_not_advance_schedules():
    """A step refused for a bad hyperparameter edit, a read-only param, or a schedule that sets a
    NaN lr leaves every schedule's count and every group's lr where they were."""
    params = make()
    opt = Muon(params, lr=0.04)
    sched = S.cosine(20).attach(opt)
    rng = np.random.default_rng(23)
    for _ in range(3):
        opt.step(grads_for(params, rng))
    opt.param_groups[0]["momentum"] = 1.5
    _refused(opt, params, grads_for(params, rng), ValueError, "momentum")
    opt.param_groups[0]["momentum"] = 0.95
    params["w1"].flags.writeable = False
    _refused(opt, params, grads_for(params, rng), ValueError, "read-only")
    params["w1"].flags.writeable = True
    assert sched.count == 3
    opt.step(grads_for(params, rng))
    assert sched.count == 4

    class NanAfterTwo(S.Schedule):
        kind = "nan_after_two"

        def value(self, step):
            return 1.0 if step < 2 else float("nan")

    other = make(1)
    opt2 = Muon(other, lr=0.04)
    nan_after_two = NanAfterTwo().attach(opt2)
    opt2.step(grads_for(other, rng))
    opt2.step(grads_for(other, rng))
    _refused(opt2, other, grads_for(other, rng), ValueError, r"param group 0.*lr")
    assert nan_after_two.count == 2


def test_unnamed_params_reject_dict_grads():
    opt = Muon([np.zeros((2, 3))])
    with pytest.raises(TypeError, match="not named"):
        opt.step({"w": np.zeros((2, 3))})


# ----- checkpoints and schedules ------------------------------------------------------------
def _run(opt, params, rng, steps):
    for _ in range(steps):
        g = grads_for(params, rng)
        opt.step(g if opt._names is not None else list(g.values()))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_state_dict_resume_is_bit_identical(dtype):
    ref_params, params = make(dtype=dtype), make(dtype=dtype)
    hp = dict(lr=0.03, weight_decay=0.05, momentum=0.9, nesterov=False, adjust_lr_fn="match_rms_adamw")
    ref = Muon(ref_params, **hp)
    _run(ref, ref_params, np.random.default_rng(8), 60)

    opt = Muon(params, **hp)
    rng = np.random.default_rng(8)
    _run(opt, params, rng, 30)
    sd = opt.state_dict()
    assert sd["format"] == pyopt.optimizer.STATE_DICT_FORMAT and sd["optimizer"] == "muon"
    assert set(sd["state"][0]) == {"step", "momentum_buffer"} and sd["state"][0]["step"] == 30
    assert sd["param_groups"][0]["ns_coefficients"] == list(COEFFS)
    assert sd["param_groups"][0]["params"] == [0, 1] and sd["param_groups"][0]["param_names"] == ["w1", "w2"]
    sd["state"][0]["momentum_buffer"] += 1  # a copy: the optimizer is not touched
    sd["state"][0]["momentum_buffer"] -= 1
    assert not np.shares_memory(sd["state"][0]["momentum_buffer"], opt.state[0]["momentum_buffer"])

    resumed_params = {n: p.copy() for n, p in params.items()}
    resumed = Muon(resumed_params)  # default hyperparameters: the state_dict brings them back
    resumed.load_state_dict(sd)
    assert resumed.param_groups[0]["ns_coefficients"] == COEFFS
    assert resumed.param_groups[0]["adjust_lr_fn"] == "match_rms_adamw"
    _run(resumed, resumed_params, rng, 30)
    for n in ref_params:
        np.testing.assert_array_equal(resumed_params[n], ref_params[n])


def test_load_state_dict_checks_before_changing():
    params = make()
    opt = Muon(params)
    _run(opt, params, np.random.default_rng(9), 2)
    sd = opt.state_dict()
    other = Muon(make(1))
    bad_shape = {**sd, "state": {0: {"step": 2, "momentum_buffer": np.zeros((5, 8))}}}
    with pytest.raises(ValueError, match="shape"):
        other.load_state_dict(bad_shape)
    with pytest.raises(ValueError, match="unknown state 'exp_avg'"):
        other.load_state_dict({**sd, "state": {0: {"step": 1, "exp_avg": np.zeros((8, 5))}}})
    with pytest.raises(ValueError, match="for optimizer 'adam'"):
        other.load_state_dict({**sd, "optimizer": "adam"})
    bad_group = {**sd, "param_groups": [{**sd["param_groups"][0], "momentum": 2.0}]}
    with pytest.raises(ValueError, match="momentum"):
        other.load_state_dict(bad_group)
    assert other.state == {} and other.param_groups[0]["momentum"] == 0.95
    with pytest.raises(ValueError, match="for optimizer 'muon'"):
        pyopt.Adam(list(make().values())).load_state_dict(sd)


@pytest.mark.parametrize("named", [True, False])
def test_save_load_roundtrip(tmp_path, named):
    ref_params, params = make(), make()
    ref = Muon(ref_params if named else list(ref_params.values()), lr=0.05, ns_steps=4)
    _run(ref, ref_params, np.random.default_rng(10), 40)

    opt = Muon(params if named else list(params.values()), lr=0.05, ns_steps=4)
    rng = np.random.default_rng(10)
    _run(opt, params, rng, 20)
    path = tmp_path / "muon.npz"
    pyopt.save(opt, path)
    resumed_params = {n: p.copy() for n, p in params.items()}
    loaded = pyopt.load(path, resumed_params if named else list(resumed_params.values()))
    assert isinstance(loaded, Muon)
    assert loaded.param_groups[0]["ns_steps"] == 4 and loaded.param_groups[0]["ns_coefficients"] == COEFFS
    assert loaded.state[1]["step"] == 20
    _run(loaded, resumed_params, rng, 20)
    for n in ref_params:
        np.testing.assert_array_equal(resumed_params[n], ref_params[n])


def test_schedule_drives_lr():
    """An attached schedule sets the lr before each step: the same trajectory as setting it by hand."""
    params, manual_params = make(), make()
    opt = Muon(params, lr=0.04)
    sched = S.step_decay(5, gamma=0.5).attach(opt)
    assert opt.schedules == (sched,)
    manual = Muon(manual_params, lr=0.04)
    rng = np.random.default_rng(11)
    for k in range(15):
        g = grads_for(params, rng)
        opt.step(g)
        manual.param_groups[0]["lr"] = 0.04 * 0.5 ** (k // 5)
        manual.step(g)
        assert opt.param_groups[0]["lr"] == manual.param_groups[0]["lr"]
    for n in params:
        np.testing.assert_array_equal(params[n], manual_params[n])
    assert opt.param_groups[0]["lr"] == 0.01
    sched.detach()
    assert opt.schedules == ()


def test_schedule_saved_with_optimizer(tmp_path):
    params = make()
    opt = Muon(params, lr=0.04)
    S.cosine(30).attach(opt)
    rng = np.random.default_rng(12)
    _run(opt, params, rng, 10)
    pyopt.save(opt, tmp_path / "ck.npz")
    assert opt.state_dict()["schedules"][0]["count"] == 10
    resumed_params = {n: p.copy() for n, p in params.items()}
    loaded = pyopt.load(tmp_path / "ck.npz", resumed_params)
    sched = S.cosine(30).attach(loaded)
    assert sched.count == 10 and sched.base_lrs == [0.04]
    rng_a, rng_b = np.random.default_rng(13), np.random.default_rng(13)
    _run(opt, params, rng_a, 10)
    _run(loaded, resumed_params, rng_b, 10)
    for n in params:
        np.testing.assert_array_equal(resumed_params[n], params[n])
    assert loaded.param_groups[0]["lr"] == opt.param_groups[0]["lr"] != 0.04
