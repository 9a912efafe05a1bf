"""Adafactor against torch.optim.Adafactor 2.13 (the reference), in the params' dtype.

Vectors follow torch's element operations one for one, so they differ only through torch's
float32 norms (‖p‖, ‖u‖, accumulated in float32; pyopt's in float64) and its rsqrt: an ulp or so.
Matrices also differ by the row and column norms, a few ulps after 100 steps. The kernel's sums
run in a fixed order, so threads do not change a bit; it is compiled per ISA like the rules
(test_maps.py checks that set_isa applies to it)."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pyopt  # noqa: E402
from refcheck import loguniform, num_threads  # noqa: E402

SHAPES = [(1,), (7,), (1, 17), (31, 33), (100003,), (2, 3, 17), (300, 257)]
STEPS = 100


def draw(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng([seed, 1804, 4235])
    return {"lr": loguniform(rng, 1e-3, 1e-1), "beta2_decay": float(rng.uniform(-1.0, -0.5)),
            "eps": (None if seed % 2 == 0 else loguniform(rng, 1e-30, 1e-20), loguniform(rng, 1e-4, 1e-2)),
            "d": float(rng.uniform(1.0, 2.0)), "weight_decay": 0.0 if seed == 0 else loguniform(rng, 1e-3, 1e-1),
            "maximize": seed == 3}


def run(dtype: type, seed: int):
    h = draw(seed)
    rng = np.random.default_rng([seed, 11])
    params0 = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    params = [p.copy() for p in params0]
    tparams = [torch.from_numpy(p.copy()) for p in params0]
    opt = pyopt.Adafactor(params, **h)
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        topt = torch.optim.Adafactor(tparams, foreach=False, **h)
        for _ in range(STEPS):
            gs = [(rng.standard_normal(s) * 0.3).astype(dtype) for s in SHAPES]
            gs[1][2] = 0
            for tp, g in zip(tparams, gs):
                tp.grad = torch.from_numpy(g.copy())
            topt.step()
            opt.step(gs)
    finally:
        torch.set_num_threads(saved)
    return h, params, tparams, opt, topt


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_torch_adafactor(seed: int, dtype: type) -> None:
    h, params, tparams, opt, topt = run(dtype, seed)
    for i, (p, tp) in enumerate(zip(params, tparams)):
        what = f"adafactor {dtype.__name__} seed {seed} {h}: params[{i}] shape {p.shape}"
        state, tstate = opt.state[i], topt.state[tp]
        if p.ndim <= 1:  # the same element operations as torch
            rtol = 2e-6 if dtype == np.float32 else 1e-14
            np.testing.assert_allclose(p, tp.numpy(), rtol=rtol, atol=rtol, err_msg=what)
            np.testing.assert_allclose(state["variance"], tstate["variance"].numpy(), rtol=rtol, err_msg=what)
            continue
        rtol = 1e-5 if dtype == np.float32 else 1e-13
        scale = float(np.abs(tp.numpy()).max())
        np.testing.assert_allclose(p, tp.numpy(), rtol=rtol, atol=rtol * scale, err_msg=what)
        for key in ("row_var", "col_var"):
            assert state[key].shape == tuple(tstate[key].shape), what
            np.testing.assert_allclose(state[key], tstate[key].numpy(), rtol=rtol * 10, err_msg=f"{what} {key}")


def test_wrong_hyperparameter_fails() -> None:
    """The comparison has teeth: lr 10% off, or another beta2_decay, moves the params off torch's."""
    h, params, tparams, _, _ = run(np.float64, 1)
    for change in ({"lr": h["lr"] * 1.1}, {"beta2_decay": h["beta2_decay"] * 0.9}, {"d": h["d"] * 1.5},
                   {"weight_decay": h["weight_decay"] * 2}):
        rng = np.random.default_rng([1, 11])
        ps = [rng.standard_normal(s) for s in SHAPES]
        opt = pyopt.Adafactor(ps, **{**h, **change})
        for _ in range(STEPS):
            opt.step([rng.standard_normal(s) * 0.3 for s in SHAPES])
        assert any(not np.allclose(p, tp.numpy(), rtol=1e-9) for p, tp in zip(ps, tparams)), change


def test_threads_do_not_change_bits() -> None:
    results = []
    for n in (1, 2, 3):
        with num_threads(n):
            rng = np.random.default_rng(4)
            ps = [rng.standard_normal(s).astype(np.float32) for s in [(400, 300), (70001,)]]
            opt = pyopt.Adafactor(ps, lr=0.05)
            for _ in range(5):
                opt.step([rng.standard_normal(p.shape).astype(np.float32) for p in ps])
            results.append(ps)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_state_dict_round_trip_and_errors(tmp_path) -> None:
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((4, 6)), "b": rng.standard_normal(6)}
    opt = pyopt.Adafactor(params, lr=0.05)
    for _ in range(3):
        opt.step({k: rng.standard_normal(v.shape) for k, v in params.items()})
    assert opt.state[0]["row_var"].shape == (4, 1) and opt.state[0]["col_var"].shape == (1, 6)
    assert set(opt.state[1]) == {"step", "variance"}
    pyopt.save(opt, tmp_path / "ada.npz")
    copy = {k: v.copy() for k, v in params.items()}
    clone = pyopt.load(tmp_path / "ada.npz", copy)
    grads = {k: rng.standard_normal(v.shape) for k, v in params.items()}
    opt.step(grads)
    clone.step(grads)
    for k in params:
        np.testing.assert_array_equal(params[k], copy[k])
    bad = opt.state_dict()
    bad["state"][0]["row_var"] = np.zeros((1, 6))
    with pytest.raises(ValueError, match="row_var"):
        clone.load_state_dict(bad)
    for kwargs in ({"lr": -1.0}, {"beta2_decay": 0.5}, {"d": 0.5}, {"eps": (None, -1.0)}, {"weight_decay": -1.0}):
        with pytest.raises(ValueError):
            pyopt.Adafactor([np.ones(3)], **kwargs)
    with pytest.raises(TypeError):
        pyopt.Adafactor([np.ones(3)], eps=1e-3)
    with pytest.raises(ValueError, match="shape"):
        opt.step({"w": np.ones((6, 4)), "b": np.ones(6)})
