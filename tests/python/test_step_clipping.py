"""Clipping fused into the step (clip_value, clip_norm) and skip_nonfinite."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import pyopt
from refcheck import ISAS, isa_path, num_threads

SHAPES = [(1,), (7,), (3, 17), (1023,), (100003,)]


def make(dtype: type, seed: int = 0, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[(rng.standard_normal(s) * scale).astype(dtype) for s in SHAPES] for _ in range(10)]
    return params, grads


def norm64(gs):
    return float(np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in gs)))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["adamw", "sgd", "lamb", "lion"])
def test_clip_norm_is_the_scaled_gradient(name: str, dtype: type, isa: str) -> None:
    """clip_norm = a plain step on g·c, c = clip_norm/(N + 1e-6) rounded to the dtype: bit for bit."""
    params, grads = make(dtype, scale=3.0)
    ref = [p.copy() for p in params]
    with isa_path(isa):
        opt = pyopt.create(name, params, lr=1e-2)
        plain = pyopt.create(name, ref, lr=1e-2)
        for gs in grads:
            originals = [g.copy() for g in gs]
            assert opt.step(gs, clip_norm=1.0) is True
            for g, o in zip(gs, originals):
                np.testing.assert_array_equal(g, o)  # the caller's gradients are not written
            n = norm64(gs)
            np.testing.assert_allclose(opt.last_grad_norm, n, rtol=1e-12)
            coef = 1.0 / (opt.last_grad_norm + 1e-6)
            assert coef < 1.0
            plain.step([g * dtype(coef) for g in gs])
    for p, r in zip(params, ref):
        np.testing.assert_array_equal(p, r)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_norm_matches_torch(dtype: type) -> None:
    torch = pytest.importorskip("torch")
    params, grads = make(dtype, scale=2.0)
    tparams = [torch.from_numpy(p.copy()) for p in params]
    topt = torch.optim.AdamW(tparams, lr=1e-2)
    opt = pyopt.AdamW(params, lr=1e-2)
    for gs in grads:
        for tp, g in zip(tparams, gs):
            tp.grad = torch.from_numpy(g.copy())
        total = torch.nn.utils.clip_grad_norm_(tparams, 0.5)
        topt.step()
        opt.step(gs, clip_norm=0.5)
        # torch accumulates a float32 norm in float32 (~1e-6 off over 1e5 elements); pyopt in float64.
        np.testing.assert_allclose(opt.last_grad_norm, float(total), rtol=1e-5 if dtype == np.float32 else 1e-12)
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p, tp.numpy(), rtol=1e-5 if dtype == np.float32 else 1e-11, atol=1e-6)


def test_clip_norm_above_the_norm_changes_nothing() -> None:
    params, grads = make(np.float32)
    ref = [p.copy() for p in params]
    opt, plain = pyopt.Adam(params), pyopt.Adam(ref)
    for gs in grads:
        opt.step(gs, clip_norm=1e6, skip_nonfinite=True)
        plain.step(gs)
    for p, r in zip(params, ref):
        np.testing.assert_array_equal(p, r)


@pytest.mark.parametrize("isa", ISAS)
def test_clip_value_is_the_clamped_gradient(isa: str) -> None:
    params, grads = make(np.float32, scale=2.0)
    ref = [p.copy() for p in params]
    with isa_path(isa):
        opt, plain = pyopt.NAdam(params, lr=1e-2), pyopt.NAdam(ref, lr=1e-2)
        for gs in grads:
            gs[0][0] = np.nan  # NaN stays NaN through the clamp, as in torch.clamp
            opt.step(gs, clip_value=0.7)
            plain.step([np.clip(g, -0.7, 0.7) for g in gs])
    for p, r in zip(params, ref):
        np.testing.assert_array_equal(p, r)
    assert np.isnan(params[0][0])


def test_value_then_norm() -> None:
    params, grads = make(np.float64, scale=2.0)
    ref = [p.copy() for p in params]
    opt, plain = pyopt.SGD(params, lr=0.1), pyopt.SGD(ref, lr=0.1)
    for gs in grads:
        opt.step(gs, clip_value=0.5, clip_norm=2.0)
        clamped = [np.clip(g, -0.5, 0.5) for g in gs]
        assert opt.last_grad_norm == pytest.approx(norm64(clamped), rel=1e-12)
        plain.step([g * (2.0 / (opt.last_grad_norm + 1e-6)) for g in clamped])
    for p, r in zip(params, ref):
        np.testing.assert_array_equal(p, r)


def test_norm_does_not_depend_on_threads() -> None:
    _, grads = make(np.float32, scale=1.0)
    norms = []
    for n in (1, 2, 3):
        with num_threads(n):
            params, _ = make(np.float32)
            opt = pyopt.SGD(params)
            opt.step(grads[0], clip_norm=1.0)
            norms.append(opt.last_grad_norm)
    assert norms[0] == norms[1] == norms[2]


def test_skip_nonfinite_touches_nothing() -> None:
    params = {"w": np.ones((4, 5), np.float32), "b": np.zeros(5, np.float32)}
    opt = pyopt.AdamW(params, lr=0.1)
    good = {"w": np.full((4, 5), 0.5, np.float32), "b": np.ones(5, np.float32)}
    assert opt.step(good, skip_nonfinite=True)
    snapshot = opt.state_dict()
    before = {k: v.copy() for k, v in params.items()}
    for bad_value in (np.nan, np.inf, -np.inf):
        bad = {"w": good["w"].copy(), "b": good["b"].copy()}
        bad["b"][2] = bad_value
        with pytest.warns(RuntimeWarning, match=r"params\['b'\]"):
            assert opt.step(bad, skip_nonfinite=True) is False
        for k in params:
            np.testing.assert_array_equal(params[k], before[k])
        after = opt.state_dict()
        assert after["state"][0]["step"] == snapshot["state"][0]["step"] == 1
        for i in after["state"]:
            for key, value in after["state"][i].items():
                np.testing.assert_array_equal(value, snapshot["state"][i][key])
    assert opt.skipped_steps == 3
    assert opt.step(good, skip_nonfinite=True)
    assert opt.state[0]["step"] == 2
    # Without skip_nonfinite the NaN propagates, as in torch.optim.
    bad = {"w": good["w"].copy(), "b": good["b"].copy()}
    bad["b"][0] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert opt.step(bad) is True
    assert np.isnan(params["b"][0])


def test_skip_nonfinite_keeps_schedules_in_place() -> None:
    """A skipped step does not advance an attached schedule: the next real step gets the lr the
    skipped one would have had."""
    params = [np.zeros(8)]
    opt = pyopt.SGD(params, lr=1.0)
    sched = pyopt.schedules.step_decay(step_size=1, gamma=0.5).attach(opt)
    ones = np.ones(8)
    opt.step([ones], skip_nonfinite=True)  # lr 1
    bad = ones.copy()
    bad[3] = np.inf
    with pytest.warns(RuntimeWarning):
        opt.step([bad], skip_nonfinite=True)
    assert sched.count == 1
    opt.step([ones], skip_nonfinite=True)  # lr 0.5
    np.testing.assert_array_equal(params[0], -1.5)


@pytest.mark.parametrize("kwargs, error", [
    ({"clip_norm": -1.0}, ValueError), ({"clip_norm": float("nan")}, ValueError), ({"clip_value": -0.1}, ValueError),
    ({"clip_norm": True}, TypeError), ({"clip_value": "1"}, TypeError),
])
def test_bad_clip_arguments(kwargs, error) -> None:
    params = [np.ones(3)]
    opt = pyopt.SGD(params, lr=1.0)
    with pytest.raises(error):
        opt.step([np.ones(3)], **kwargs)
    np.testing.assert_array_equal(params[0], 1.0)
    assert opt.state == {}
