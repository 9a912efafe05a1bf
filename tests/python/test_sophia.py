"""SophiaG against the official Liuhong99/Sophia code (sophia.py, _single_tensor_sophiag), run in
torch in the params' dtype, and a float64 numpy model of it.

Every 10th step (the paper's k) the test folds a Hessian estimate into both: pyopt through
``opt.update_hessian``, the reference as ``hess.mul_(β2).add_(ĥ, alpha=1 − β2)``. The estimates
are squares of random numbers (as Gauss-Newton-Bartlett's ĝ² is), some exactly 0, so ratio = 1
clipping, tiny h and h = 0 all occur. Sophia has no sqrt: on the FMA paths pyopt matches the
official code bit for bit in float32 and float64; on the baseline path (no FMA), where a rounding
can flip sign(m) of an m within an ulp of 0, to float rounding except in a handful of elements.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pyopt  # noqa: E402
from refcheck import DTYPES, ISAS, SHAPES, fma_isas, isa_path, loguniform, num_threads  # noqa: E402

STEPS = 100
HESSIAN_EVERY = 10


def draw(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng([seed, 2305, 14342])
    return {"lr": loguniform(rng, 1e-4, 1e-2), "betas": (float(rng.uniform(0.5, 0.99)), float(rng.uniform(0.9, 0.999))),
            "rho": loguniform(rng, 1e-3, 0.1), "weight_decay": 0.0 if seed == 0 else loguniform(rng, 1e-3, 0.3),
            "bs": float(rng.choice([1.0, 64.0, 5120.0])), "maximize": seed == 1}


def make_data(seed: int, dtype: type) -> tuple[list[np.ndarray], list[list[np.ndarray]], dict[int, list[np.ndarray]]]:
    rng = np.random.default_rng([seed, 7])
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads, estimates = [], {}
    for t in range(1, STEPS + 1):
        gs = []
        for s in SHAPES:
            g = (rng.standard_normal(s) * 0.1).astype(dtype)
            g[rng.random(s) < 0.05] = 0
            gs.append(g)
        grads.append(gs)
        if t % HESSIAN_EVERY == 1:  # after steps 1, 11, 21, ... as the official training loop does
            es = []
            for s in SHAPES:
                e = (rng.standard_normal(s) * 0.05).astype(dtype) ** 2
                e[rng.random(s) < 0.1] = 0
                es.append(e)
            estimates[t] = es
    return params, grads, estimates


def official(h: dict[str, Any], params: list[np.ndarray], grads, estimates) -> dict[str, list[np.ndarray]]:
    """Liuhong99/Sophia sophia.py SophiaG (capturable=False), in torch, in the params' dtype."""
    lr, (beta1, beta2), rho, wd, bs = h["lr"], h["betas"], h["rho"], h["weight_decay"], h["bs"]
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ps = [torch.from_numpy(p.copy()) for p in params]
        exp_avgs = [torch.zeros_like(p) for p in ps]
        hessians = [torch.zeros_like(p) for p in ps]
        for t, gs in enumerate(grads, start=1):
            for param, g, exp_avg, hess in zip(ps, gs, exp_avgs, hessians):
                grad = torch.from_numpy(g)
                grad = grad if not h["maximize"] else -grad
                param.mul_(1 - lr * wd)
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                step_size_neg = -lr
                ratio = (exp_avg.abs() / (rho * bs * hess + 1e-15)).clamp(None, 1)
                param.addcmul_(exp_avg.sign(), ratio, value=step_size_neg)
            if t in estimates:
                for hess, e in zip(hessians, estimates[t]):
                    hess.mul_(beta2).add_(torch.from_numpy(e), alpha=1 - beta2)
        return {"params": [p.numpy() for p in ps], "exp_avg": [m.numpy() for m in exp_avgs],
                "hessian": [x.numpy() for x in hessians]}
    finally:
        torch.set_num_threads(saved)


def model(h: dict[str, Any], params: list[np.ndarray], grads, estimates) -> dict[str, list[np.ndarray]]:
    """The same rule as a float64 numpy model."""
    lr, (beta1, beta2), rho, wd, bs = h["lr"], h["betas"], h["rho"], h["weight_decay"], h["bs"]
    ps = [p.astype(np.float64) for p in params]
    ms = [np.zeros_like(p) for p in ps]
    hs = [np.zeros_like(p) for p in ps]
    for t, gs in enumerate(grads, start=1):
        for p, g, m, hess in zip(ps, gs, ms, hs):
            g = -g.astype(np.float64) if h["maximize"] else g.astype(np.float64)
            p *= 1 - lr * wd
            m[...] = beta1 * m + (1 - beta1) * g
            p -= lr * np.sign(m) * np.minimum(np.abs(m) / (rho * bs * hess + 1e-15), 1.0)
        if t in estimates:
            for hess, e in zip(hs, estimates[t]):
                hess[...] = beta2 * hess + (1 - beta2) * e
    return {"params": ps, "exp_avg": ms, "hessian": hs}


def run_pyopt(h: dict[str, Any], params0: list[np.ndarray], grads, estimates) -> dict[str, list[np.ndarray]]:
    params = [p.copy() for p in params0]
    opt = pyopt.SophiaG(params, **h)
    for t, gs in enumerate(grads, start=1):
        opt.step(gs)
        if t in estimates:
            opt.update_hessian(estimates[t])
    return {"params": params, "exp_avg": [opt.state[i]["exp_avg"] for i in range(len(params))],
            "hessian": [opt.state[i]["hessian"] for i in range(len(params))]}


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("seed", (0, 1, 2, 3))
def test_sophia_matches_official(seed: int, dtype_name: str, isa: str) -> None:
    h = draw(seed)
    params0, grads, estimates = make_data(seed, DTYPES[dtype_name])
    ref = official(h, params0, grads, estimates)
    with isa_path(isa), num_threads(1):
        got = run_pyopt(h, params0, grads, estimates)
    exact = isa in fma_isas()
    for key in ("params", "exp_avg", "hessian"):
        for i, (a, r) in enumerate(zip(got[key], ref[key])):
            what = f"sophia {dtype_name} {isa} seed {seed} {h}: {key}[{i}]"
            if exact:
                np.testing.assert_array_equal(a, r, err_msg=what)
                continue
            # Without FMA: rounding differs; a flipped sign(m) moves a param by up to 2·lr per flip.
            tol = 1e-5 if dtype_name == "float32" else 1e-13
            bad = np.abs(a - r) > tol * (1 + np.abs(r))
            assert np.count_nonzero(bad) <= max(1, a.size // 10000), what
            assert not bad.any() or np.abs(a - r)[bad].max() <= 2 * STEPS * h["lr"], what
    # And the float64 model of the rule.
    ref64 = model(h, params0, grads, estimates)
    tol = 1e-12 if dtype_name == "float64" else 1e-4
    for i, (a, r) in enumerate(zip(got["params"], ref64["params"])):
        bad = np.abs(a - r) > tol * (1 + np.abs(r))
        assert np.count_nonzero(bad) <= max(1, a.size // 1000), f"model: params[{i}] {np.abs(a - r).max()}"


def test_sophia_update_hessian_arguments() -> None:
    p = {"w": np.ones((3, 4), np.float32), "b": np.zeros(4, np.float32)}
    opt = pyopt.SophiaG(p, lr=0.1)
    # Before any step: the state is allocated (h = 0) and folded.
    opt.update_hessian({"w": np.full((3, 4), 2.0, np.float32), "b": np.ones(4, np.float32)})
    assert np.allclose(opt.state[0]["hessian"], 0.02) and np.allclose(opt.state[1]["hessian"], 0.01)
    before = [x.copy() for x in (opt.state[0]["hessian"], opt.state[1]["hessian"])]
    with pytest.raises(ValueError, match="hessian estimate"):
        opt.update_hessian({"w": np.ones((4, 3), np.float32), "b": np.ones(4, np.float32)})
    with pytest.raises(ValueError, match="missing"):
        opt.update_hessian({"w": np.ones((3, 4), np.float32)})
    np.testing.assert_array_equal(opt.state[0]["hessian"], before[0])  # nothing changed
    opt.update_hessian({"w": None, "b": np.ones(4, np.float32)})  # None skips a param
    np.testing.assert_array_equal(opt.state[0]["hessian"], before[0])
    assert not np.array_equal(opt.state[1]["hessian"], before[1])
    # beta2 edits apply to the next fold; checkpoints carry h.
    opt.param_groups[0]["betas"] = (0.9, 0.5)
    opt.update_hessian({"w": np.zeros((3, 4), np.float32), "b": np.zeros(4, np.float32)})
    np.testing.assert_allclose(opt.state[0]["hessian"], before[0] * 0.5, rtol=1e-6)
    clone = pyopt.SophiaG({k: v.copy() for k, v in p.items()}, lr=0.1)
    clone.load_state_dict(opt.state_dict())
    np.testing.assert_array_equal(clone.state[0]["hessian"], opt.state[0]["hessian"])
    with pytest.raises(ValueError, match="bs"):
        pyopt.SophiaG(p, bs=0)
