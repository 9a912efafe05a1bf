"""The reference implementations the table in reference_table.py compares pyopt with.

Each reference is a function ``run(hyper, params, grads, checkpoints) -> trajectory``: it steps
copies of ``params`` through ``grads`` and returns, for each checkpoint step t, ``{"params": [...],
"state": [{slot: array, ...}, ...]}``. Four kinds:
  - ``torch_optim(cls)``: torch.optim's single-tensor path (foreach=False), in the params' dtype;
  - ``torch_package(make, slots)``: another torch optimizer package, in the params' dtype;
  - ``optax_package(make, slots)``: an optax 0.2.8 transformation on jax's CPU backend, in the
    params' dtype (jax_enable_x64 on for float64, off for float32, restored afterwards);
  - ``numpy_model(init, step)``: a float64 numpy model, which runs without torch.
torch is imported only when a torch reference runs, so the numpy models need no torch.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import io
from typing import Any, Callable

import numpy as np
import pytest

Trajectory = dict[int, dict[str, Any]]
Reference = Callable[[dict, list, list, tuple], Trajectory]

# Per-tensor scalar state torch keeps as 0-d tensors (NAdam's mu_product, ASGD's eta and mu).
SCALAR_STATE = ("mu_product", "eta", "mu")


@contextlib.contextmanager
def torch_settings(dtype: Any):
    """torch keeps NAdam's mu_product, ASGD's eta and mu (and step) in the default dtype: match it to the params.
    One intra-op thread: the update is elementwise (same result), and torch's OpenMP threads
    spinning against pyopt's on a small machine make it 10-50x slower."""
    import torch

    saved = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(dtype)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_default_dtype(saved[0])
        torch.set_num_threads(saved[1])


# ----- torch.optim -------------------------------------------------------------------------------
def torch_optim(cls_name: str, **fixed: Any) -> Reference:
    """torch.optim.<cls_name> (foreach=False) with ``fixed`` keyword arguments added; every state
    entry it keeps is recorded (0-d tensors as floats)."""

    def run(hyper: dict, params: list[np.ndarray], grads: list[list[np.ndarray]], checkpoints: tuple) -> Trajectory:
        torch = pytest.importorskip("torch")
        tdtype = torch.float64 if params[0].dtype == np.float64 else torch.float32
        out: Trajectory = {}
        with torch_settings(tdtype), torch.no_grad():
            tparams = [torch.from_numpy(p.copy()) for p in params]
            hyper = {k: v for k, v in hyper.items() if k != "cautious"}  # pinned off: torch.optim has none
            opt = getattr(torch.optim, cls_name)(tparams, **{**hyper, **fixed, "foreach": False})
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

    return run


def torch_sparse_adam(hyper: dict, params: list[np.ndarray], grads: list[list[np.ndarray]], checkpoints: tuple) -> Trajectory:
    """torch.optim.SparseAdam, each dense gradient given to it as a sparse COO tensor holding every
    row (index along dim 0): pyopt's meaning of a dense gradient for sparse_adam."""
    torch = pytest.importorskip("torch")
    tdtype = torch.float64 if params[0].dtype == np.float64 else torch.float32
    out: Trajectory = {}
    with torch_settings(tdtype), torch.no_grad():
        tparams = [torch.from_numpy(p.copy()) for p in params]
        opt = torch.optim.SparseAdam(tparams, **hyper)
        for t, gs in enumerate(grads, start=1):
            for tp, g in zip(tparams, gs):
                rows = torch.arange(g.shape[0]).reshape(1, -1)
                tp.grad = torch.sparse_coo_tensor(rows, torch.from_numpy(g.copy()), g.shape,
                                                  is_coalesced=True, check_invariants=True)
            opt.step()
            if t in checkpoints:
                states = [{key: float(value) if key == "step" else value.numpy().copy()
                           for key, value in opt.state[tp].items()} for tp in tparams]
                out[t] = {"params": [tp.numpy().copy() for tp in tparams], "state": states}
    return out


# ----- other torch packages ----------------------------------------------------------------------
def torch_package(make: Callable[[list, dict], Any], slots: dict[str, str]) -> Reference:
    """A torch optimizer built by ``make(tparams, hyper)``, in the params' dtype; ``slots`` maps
    pyopt's state names to the package's. maximize is applied by negating the gradient fed to it."""

    def run(hyper: dict, params: list[np.ndarray], grads: list[list[np.ndarray]], checkpoints: tuple) -> Trajectory:
        torch = pytest.importorskip("torch")
        out: Trajectory = {}
        saved = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.no_grad():
                tparams = [torch.from_numpy(p.copy()) for p in params]
                opt = make(tparams, {k: v for k, v in hyper.items() if k != "maximize"})
                sign = -1.0 if hyper.get("maximize") else 1.0
                for t, gs in enumerate(grads, start=1):
                    for tp, g in zip(tparams, gs):
                        tp.grad = torch.from_numpy((g * g.dtype.type(sign)).astype(g.dtype))
                    opt.step()
                    if t in checkpoints:
                        out[t] = {"params": [tp.numpy().copy() for tp in tparams],
                                  "state": [{mine: opt.state[tp][theirs].numpy().copy() for mine, theirs in slots.items()
                                             if theirs in opt.state[tp]} for tp in tparams]}
        finally:
            torch.set_num_threads(saved)
        return out

    return run


def _versioned(module: str, distribution: str, version: str) -> Any:
    package = pytest.importorskip(module)
    found = importlib.metadata.version(distribution)
    assert found == version, f"the reference is {distribution} {version}, found {found}"
    return package


def lion_package(tparams: list, hyper: dict[str, Any]):
    assert not hyper.get("cautious"), "lion-pytorch has no cautious steps (test_cautious.py)"
    return pytest.importorskip("lion_pytorch").Lion(tparams, **{k: v for k, v in hyper.items() if k != "cautious"})


def grams_package(tparams: list, hyper: dict[str, Any]):
    return pytest.importorskip("grams").Grams(tparams, **hyper)


def pytorch_optimizer(cls_name: str, **fixed: Any) -> Callable[[list, dict], Any]:
    """pytorch-optimizer 4.1.0's ``cls_name`` on its per-param path (foreach=False)."""

    def make(tparams: list, hyper: dict[str, Any]):
        package = _versioned("pytorch_optimizer", "pytorch-optimizer", "4.1.0")
        return getattr(package, cls_name)(tparams, foreach=False, **fixed, **hyper)

    return make


def laprop_package(tparams: list, hyper: dict[str, Any]):
    """LaProp takes steps_before_using_centered as an int constructor argument."""
    hyper = dict(hyper)
    steps = int(hyper.pop("steps_before_using_centered"))
    return pytorch_optimizer("LaProp", steps_before_using_centered=steps)(tparams, hyper)


def ademamix_package(tparams: list, hyper: dict[str, Any]):
    """AdEMAMix: pyopt's t_alpha_beta3 = 0 (no warmup) is the reference's None."""
    hyper = dict(hyper)
    hyper["t_alpha_beta3"] = hyper["t_alpha_beta3"] or None
    return pytorch_optimizer("AdEMAMix")(tparams, hyper)


def mars_package(tparams: list, hyper: dict[str, Any]):
    """MARS on every tensor (optimize_1d=True: pyopt has no shapes); pyopt's lion flag (pinned by
    the mars_lion alias) is the reference's mars_type."""
    hyper = dict(hyper)
    lion = hyper.pop("lion", True)  # absent under mars_lion, which pins it on
    return pytorch_optimizer("MARS", optimize_1d=True, mars_type="lion" if lion else "adamw")(tparams, hyper)


def simplified_ademamix_package(tparams: list, hyper: dict[str, Any]):
    """pyopt's beta1_warmup = 0 (no warmup) is the reference's None."""
    hyper = dict(hyper)
    hyper["beta1_warmup"] = int(hyper["beta1_warmup"]) or None
    return pytorch_optimizer("SimplifiedAdEMAMix")(tparams, hyper)


def spam_package(tparams: list, hyper: dict[str, Any]):
    """SPAM takes its step counts as ints; pyopt's seed (of its own masks) is not the reference's."""
    hyper = dict(hyper)
    hyper.pop("seed", None)
    for key in ("warmup_epoch", "grad_accu_steps", "update_proj_gap"):
        hyper[key] = int(hyper[key])
    return pytorch_optimizer("SPAM")(tparams, hyper)


def spam_reference(slots: dict[str, str]) -> Reference:
    """SPAM keeps the moments of 2-D params flat (its update mask selects every entry at density
    1, row-major): given back in the params' shapes."""
    run_package = torch_package(spam_package, slots)

    def run(hyper: dict, params: list[np.ndarray], grads: list[list[np.ndarray]], checkpoints: tuple) -> Trajectory:
        out = run_package(hyper, params, grads, checkpoints)
        for entry in out.values():
            entry["state"] = [{k: v.reshape(p.shape) for k, v in st.items()} for st, p in zip(entry["state"], params)]
        return out

    return run


def adabelief_package(tparams: list, hyper: dict[str, Any]):
    """adabelief-pytorch 0.2.0, its change log and flag announcements silenced."""
    package = _versioned("adabelief_pytorch", "adabelief-pytorch", "0.2.0")
    with contextlib.redirect_stdout(io.StringIO()):
        return package.AdaBelief(tparams, print_change_log=False, **hyper)


def schedulefree_package(cls_name: str) -> Callable[[list, dict], Any]:
    """facebookresearch schedulefree 1.4.1 (per-param path, foreach=False), put in train mode."""

    def make(tparams: list, hyper: dict[str, Any]):
        package = _versioned("schedulefree", "schedulefree", "1.4.1")
        opt = getattr(package, cls_name)(tparams, foreach=False, **hyper)
        opt.train()
        return opt

    return make


# ----- optax ------------------------------------------------------------------------------------
@contextlib.contextmanager
def jax_x64(enabled: bool):
    """jax with 64-bit types on (float64 params) or off (float32: Python scalars in optax's
    formulas, e.g. the bias corrections' β^t, are then float32 too), restored afterwards."""
    jax = pytest.importorskip("jax")
    saved = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", enabled)
    try:
        yield jax
    finally:
        jax.config.update("jax_enable_x64", saved)


def optax_module() -> Any:
    return _versioned("optax", "optax", "0.2.8")


def optax_package(make: Callable[[dict], Any], slots: dict[str, tuple[int, str]]) -> Reference:
    """The optax transformation ``make(hyper)`` (a chain), run op by op (unjitted) on jax's CPU
    backend in the params' dtype and applied with optax.apply_updates: each operation of optax's
    formulas rounded once, as written (jit lets XLA contract a·b + c into an FMA, which moves the
    last bit; pyopt's optax rules round as written on every ISA path). ``slots`` maps pyopt's state names to
    (index in the chain's state tuple, field name). maximize is applied by negating the gradient."""

    def run(hyper: dict, params: list[np.ndarray], grads: list[list[np.ndarray]], checkpoints: tuple) -> Trajectory:
        optax = optax_module()
        out: Trajectory = {}
        with jax_x64(params[0].dtype == np.float64) as jax:
            tx = make({k: v for k, v in hyper.items() if k != "maximize"})

            def step(ps: list, state: Any, gs: list) -> tuple[list, Any]:
                with jax.disable_jit():  # op by op: XLA would fuse multiply-adds into FMAs under jit
                    updates, state = tx.update(gs, state, ps)
                    return optax.apply_updates(ps, updates), state

            jparams = [jax.numpy.asarray(p) for p in params]
            state = tx.init(jparams)
            sign = -1.0 if hyper.get("maximize") else 1.0
            for t, gs in enumerate(grads, start=1):
                jparams, state = step(jparams, state, [jax.numpy.asarray(g * g.dtype.type(sign)) for g in gs])
                if t in checkpoints:
                    fields = {mine: getattr(state[index], field) for mine, (index, field) in slots.items()}
                    out[t] = {"params": [np.array(p) for p in jparams],
                              "state": [{mine: np.array(v[i]) for mine, v in fields.items()} for i in range(len(params))]}
        return out

    return run


def optax_adamaxw(h: dict) -> Any:
    (b1, b2) = h["betas"]
    return optax_module().adamaxw(h["lr"], b1, b2, h["eps"], weight_decay=h["weight_decay"])


def optax_nadamw(h: dict) -> Any:
    (b1, b2) = h["betas"]
    return optax_module().nadamw(h["lr"], b1, b2, h["eps"], h["eps_root"], weight_decay=h["weight_decay"])


def optax_optimistic_gradient_descent(h: dict) -> Any:
    return optax_module().optimistic_gradient_descent(h["lr"], alpha=h["alpha"], beta=h["beta"])


def optax_optimistic_adam(h: dict) -> Any:
    (b1, b2) = h["betas"]
    return optax_module().optimistic_adam_v2(h["lr"], alpha=h["alpha"], beta=h["beta"], b1=b1, b2=b2, eps=h["eps"],
                                             eps_root=h["eps_root"], nesterov=h["nesterov"])


def optax_cocob(h: dict) -> Any:
    import optax.contrib

    optax_module()
    return optax.contrib.cocob(h["lr"], alpha=h["alpha"], eps=h["eps"], weight_decay=h["weight_decay"])


# ----- float64 numpy models ----------------------------------------------------------------------
def numpy_model(init: Callable[[np.ndarray, dict], dict], step: Callable[..., None]) -> Reference:
    """A float64 numpy model: ``init(p, h)`` makes a param's state, ``step(h, t, p, g, state)``
    updates in place (g already negated for maximize)."""

    def run(hyper: dict, params: list[np.ndarray], grads: list[list[np.ndarray]], checkpoints: tuple) -> Trajectory:
        out: Trajectory = {}
        ps = [p.astype(np.float64) for p in params]
        states = [init(p, hyper) for p in ps]
        for t, gs in enumerate(grads, start=1):
            for p, g, st in zip(ps, gs, states):
                g = g.astype(np.float64)
                step(hyper, t, p, -g if hyper.get("maximize") else g, st)
            if t in checkpoints:
                out[t] = {"params": [p.copy() for p in ps], "state": [{k: v.copy() for k, v in st.items()} for st in states]}
        return out

    return run


def zeros(*slots: str) -> Callable[[np.ndarray, dict], dict]:
    return lambda p, h: {k: np.zeros_like(p) for k in slots}


def grams_step(h: dict, t: int, p: np.ndarray, g: np.ndarray, st: dict) -> None:
    """Gunale0926/Grams grams.py, correct_bias=True."""
    lr, (b1, b2), eps, wd = h["lr"], h["betas"], h["eps"], h["weight_decay"]
    if wd > 0:
        p -= lr * wd * p
    m, v = st["exp_avg"], st["exp_avg_sq"]
    m[...] = b1 * m + (1 - b1) * g
    v[...] = b2 * v + (1 - b2) * g * g
    denom = np.sqrt(v) + eps
    step_size = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    p -= step_size * np.sign(g) * np.abs(m) / denom


def adan_step(h: dict, t: int, p: np.ndarray, g: np.ndarray, st: dict) -> None:
    """sail-sg/Adan adan.py, _single_tensor_adan (clip factor 1)."""
    lr, (b1, b2, b3), eps, wd = h["lr"], h["betas"], h["eps"], h["weight_decay"]
    if t == 1:
        st["pre_grad"][...] = g
    diff = g - st["pre_grad"]
    m, n, d = st["exp_avg"], st["exp_avg_sq"], st["exp_avg_diff"]
    m[...] = b1 * m + (1 - b1) * g
    d[...] = b2 * d + (1 - b2) * diff
    u = g + b2 * diff
    n[...] = b3 * n + (1 - b3) * u * u
    denom = np.sqrt(n) / np.sqrt(1 - b3 ** t) + eps
    if h["no_prox"]:
        p *= 1 - lr * wd
    p -= (lr / (1 - b1 ** t)) * m / denom
    p -= (lr * b2 / (1 - b2 ** t)) * d / denom
    if not h["no_prox"]:
        p /= 1 + lr * wd
    st["pre_grad"][...] = g


def lamb_step(h: dict, t: int, p: np.ndarray, g: np.ndarray, st: dict) -> None:
    """optax.lamb: scale_by_adam, add_decayed_weights, scale_by_trust_ratio, scale_by_learning_rate."""
    lr, (b1, b2), eps, wd = h["lr"], h["betas"], h["eps"], h["weight_decay"]
    m, v = st["exp_avg"], st["exp_avg_sq"]
    m[...] = (1 - b1) * g + b1 * m
    v[...] = (1 - b2) * g * g + b2 * v
    u = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps) + wd * p
    param_norm, update_norm = np.linalg.norm(p), np.linalg.norm(u)
    trust = 1.0 if param_norm == 0 or update_norm == 0 else param_norm / update_norm
    p -= lr * trust * u


def adam_cautious_step(h: dict, t: int, p: np.ndarray, g: np.ndarray, st: dict) -> None:
    """torch.optim.Adam's single-tensor step with the cautious mask of C-Optim's c_adamw.py
    (kyleliang919/C-Optim, AdamW.step): m masked where m·g <= 0 and divided by max(mean(mask), 1e-3)."""
    lr, (b1, b2), eps, wd = h["lr"], h["betas"], h["eps"], h["weight_decay"]
    if wd != 0:
        if h["decoupled_weight_decay"]:
            p *= 1 - lr * wd
        else:
            g = g + wd * p
    m, v = st["exp_avg"], st["exp_avg_sq"]
    m += (g - m) * (1 - b1)
    v[...] = v * b2 + (1 - b2) * g * g
    second = v
    if h["amsgrad"]:
        np.maximum(st["max_exp_avg_sq"], v, out=st["max_exp_avg_sq"])
        second = st["max_exp_avg_sq"]
    denom = np.sqrt(second) / np.sqrt(1 - b2 ** t) + eps
    u = m
    if h["cautious"]:
        mask = (m * g > 0).astype(np.float64)
        u = m * (mask / max(mask.mean(), 1e-3)) if mask.size else m
    p -= (lr / (1 - b1 ** t)) * u / denom


def lars_init(p: np.ndarray, h: dict) -> dict:
    return {"momentum_buffer": np.zeros_like(p)} if h["momentum"] else {}


def lars_step(h: dict, t: int, p: np.ndarray, g: np.ndarray, st: dict) -> None:
    """optax.lars: add_decayed_weights, scale_by_trust_ratio(η, ε), scale_by_learning_rate, trace(μ)."""
    u = g + h["weight_decay"] * p
    param_norm, update_norm = np.linalg.norm(p), np.linalg.norm(u)
    trust = 1.0 if param_norm == 0 or update_norm == 0 else h["trust_coefficient"] * param_norm / (update_norm + h["eps"])
    u = -h["lr"] * trust * u
    if not h["momentum"]:
        p += u
        return
    b = st["momentum_buffer"]
    b[...] = u + h["momentum"] * b
    p += u + h["momentum"] * b if h["nesterov"] else b
