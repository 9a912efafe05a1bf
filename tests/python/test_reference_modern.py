"""pyopt's modern (non-torch.optim) optimizers against their references.

For each (optimizer, dtype, seed) case: random hyperparameters (seeded; seed 0 turns optional
features off, 1 turns them on, 2 and 3 draw at random), five tensors of shapes (1,), (7,), (1, 17),
(31, 33), (100003,) stepped together in one ``opt.step`` call, ``STEPS`` steps of fresh random
gradients (about 5% of their entries exactly 0, and one whole tensor 0 at the first step, so
sign(0) = 0 and m = 0 are exercised), every ISA path this machine has.

References (RULES.md, "Modern"):
  - lion: lion-pytorch 0.2.5 (the package, run in the same dtype). Without a sqrt it matches bit
    for bit on the FMA paths, float32 and float64. The baseline path (no FMA) rounds β1·m + (1−β1)·g
    twice, which can flip sign(c) where c is within an ulp of 0: params then differ by lr or 2·lr in
    a handful of elements, so there a few elements may be off by up to 2·lr per flip, the rest
    (and the momentum, which never sees the sign) are held to float rounding.
  - grams: a float64 numpy model of the official Gunale0926/Grams grams.py, and that code itself
    (grams-pytorch 0.0.2, same dtype): bit for bit on the FMA paths once torch's sqrt is
    correctly rounded, to its sqrt's ulp otherwise.
  - adan: a float64 numpy model of the official sail-sg/Adan adan.py (_single_tensor_adan).
  - adabelief: adabelief-pytorch 0.2.0 (the package, same dtype): to torch's sqrt rounding on the
    FMA paths, bit for bit once torch's sqrt is correctly rounded.
  - signsgd / signum, yogi, adopt, laprop: pytorch-optimizer 4.1.0 (SignSGD, Yogi, ADOPT, LaProp; per-param path,
    foreach=False), in the same dtype. signSGD/Signum have no sqrt: bit for bit on the FMA paths.
    Yogi, ADOPT and LaProp match to torch's sqrt rounding there, and bit for bit once torch's sqrt is
    correctly rounded (test_fma_paths_bit_for_bit_with_ieee_sqrt).
On paths without FMA, a sign taken of a value within an ulp of 0 may flip (see sign_flips).
Against a float64 numpy model, pyopt's float64 run is held to ~1e-12 relative and its float32 run
(whose rounding compounds over 100 steps) to 1e-4 relative, with an atol relative to the array's
largest magnitude.

Set PYOPT_REFERENCE_REPORT=<path> to dump the largest observed errors as JSON.
"""
from __future__ import annotations

import collections
import contextlib
import importlib.metadata
import io
from typing import Any, Callable

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

CHECKPOINTS = (1, 2, 10, STEPS)
FMA_ISAS = fma_isas()

OBSERVED: dict[tuple[str, str, str], dict[str, float]] = collections.defaultdict(dict)


# ----- hyperparameters --------------------------------------------------------------------------
# Each optimizer's draws and data are seeded by its index here. Newer optimizers go at the end, so
# adding one does not change the cases the others were tuned and checked on.
CASE_ORDER = ("adabelief", "adan", "adopt", "grams", "lamb", "laprop", "lars", "lion", "schedulefree_adamw",
              "schedulefree_sgd", "signsgd", "signum", "yogi",
              "qhadam", "tiger", "ademamix", "stableadamw", "madgrad", "novograd")


def case_index(name: str) -> int:
    return CASE_ORDER.index(name)


def draw_hyper(name: str, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng([seed, case_index(name), 15485863])
    mode = {0: "off", 1: "on"}.get(seed, "random")

    def flag() -> bool:
        return {"off": False, "on": True}.get(mode, bool(rng.integers(2)))

    def optional(lo: float, hi: float) -> float:
        value = loguniform(rng, lo, hi)
        return value if flag() else 0.0

    if name == "lion":
        h = {"lr": loguniform(rng, 1e-4, 1e-2),
             "betas": (float(rng.uniform(0.5, 0.99)), float(rng.uniform(0.9, 0.999))),
             "weight_decay": optional(1e-2, 1.0)}
    elif name == "grams":
        h = {"lr": loguniform(rng, 1e-3, 3e-2),
             "betas": (float(rng.uniform(0.3, 0.95)), float(rng.uniform(0.95, 0.9995))),
             "eps": loguniform(rng, 1e-8, 1e-4), "weight_decay": optional(1e-3, 1e-1)}
    elif name == "adan":
        h = {"lr": loguniform(rng, 1e-3, 3e-2),
             "betas": (float(rng.uniform(0.5, 0.99)), float(rng.uniform(0.5, 0.99)), float(rng.uniform(0.9, 0.999))),
             "eps": loguniform(rng, 1e-8, 1e-4), "weight_decay": optional(1e-3, 1e-1), "no_prox": flag()}
    elif name in ("signsgd", "signum"):
        h = {"lr": loguniform(rng, 1e-4, 1e-2),
             "momentum": float(rng.uniform(0.5, 0.99)) if name == "signum" or flag() else 0.0,
             "weight_decay": optional(1e-2, 1.0), "weight_decouple": flag()}
    elif name == "yogi":
        h = {"lr": loguniform(rng, 1e-3, 3e-2),
             "betas": (float(rng.uniform(0.3, 0.95)), float(rng.uniform(0.95, 0.9995))),
             "initial_accumulator": loguniform(rng, 1e-7, 1e-2), "eps": loguniform(rng, 1e-5, 1e-2),
             "weight_decay": optional(1e-3, 1e-1), "weight_decouple": flag(), "fixed_decay": flag()}
    elif name == "adopt":
        h = {"lr": loguniform(rng, 1e-3, 3e-2),
             "betas": (float(rng.uniform(0.3, 0.95)), float(rng.uniform(0.95, 0.99995))),
             "eps": loguniform(rng, 1e-8, 1e-4),
             "weight_decay": optional(1e-3, 1e-1), "weight_decouple": flag(), "fixed_decay": flag()}
    elif name == "laprop":
        h = {"lr": loguniform(rng, 1e-3, 3e-2),
             "betas": (float(rng.uniform(0.3, 0.95)), float(rng.uniform(0.95, 0.9995))),
             "centered": flag(), "steps_before_using_centered": float(rng.integers(0, 20)),
             "eps": loguniform(rng, 1e-15, 1e-6), "ams_bound": flag(),
             "weight_decay": optional(1e-3, 1e-1), "weight_decouple": flag(), "fixed_decay": flag()}
    elif name == "adabelief":
        h = {"lr": loguniform(rng, 1e-3, 3e-2),
             "betas": (float(rng.uniform(0.3, 0.95)), float(rng.uniform(0.95, 0.9995))),
             "eps": loguniform(rng, 1e-16, 1e-8), "weight_decay": optional(1e-3, 1e-1), "amsgrad": flag(),
             "weight_decouple": flag(), "fixed_decay": flag(), "rectify": flag(), "degenerated_to_sgd": flag()}
    elif name == "lamb":
        h = {"lr": loguniform(rng, 1e-3, 3e-2),
             "betas": (float(rng.uniform(0.3, 0.95)), float(rng.uniform(0.95, 0.9995))),
             "eps": loguniform(rng, 1e-8, 1e-4), "weight_decay": optional(1e-3, 1e-1)}
    elif name == "lars":
        h = {"lr": loguniform(rng, 0.1, 3.0), "momentum": float(rng.uniform(0.5, 0.99)) if flag() else 0.0,
             "weight_decay": optional(1e-4, 1e-2), "trust_coefficient": loguniform(rng, 1e-4, 1e-2),
             "eps": optional(1e-9, 1e-3), "nesterov": flag()}
    elif name in ("schedulefree_adamw", "schedulefree_sgd"):
        h = {"lr": loguniform(rng, 1e-3, 3e-2) * (1 if name == "schedulefree_adamw" else 10),
             "weight_decay": optional(1e-3, 1e-1), "warmup_steps": int(rng.integers(0, 30)) if flag() else 0,
             "r": float(rng.uniform(0.0, 1.0)) if flag() else 0.0, "weight_lr_power": float(rng.uniform(0.0, 3.0))}
        if name == "schedulefree_adamw":
            h["betas"] = (float(rng.uniform(0.5, 0.95)), float(rng.uniform(0.95, 0.9995)))
            h["eps"] = loguniform(rng, 1e-8, 1e-4)
        else:
            h["momentum"] = float(rng.uniform(0.5, 0.95))
    elif name == "qhadam":
        h = {"lr": loguniform(rng, 1e-3, 3e-2),
             "betas": (float(rng.uniform(0.3, 0.95)), float(rng.uniform(0.95, 0.9995))),
             "nus": (float(rng.uniform(0.5, 1.0)) if flag() else 1.0, float(rng.uniform(0.5, 1.0)) if flag() else 1.0),
             "eps": loguniform(rng, 1e-8, 1e-4),
             "weight_decay": optional(1e-3, 1e-1), "weight_decouple": flag(), "fixed_decay": flag()}
    elif name == "tiger":
        h = {"lr": loguniform(rng, 1e-4, 1e-2), "beta": float(rng.uniform(0.3, 0.99)),
             "weight_decay": optional(1e-2, 1.0), "weight_decouple": flag(), "fixed_decay": flag()}
    elif name == "ademamix":
        h = {"lr": loguniform(rng, 1e-3, 3e-2),
             "betas": (float(rng.uniform(0.3, 0.95)), float(rng.uniform(0.95, 0.9995)), float(rng.uniform(0.9, 0.9999))),
             "alpha": float(rng.uniform(0.0, 8.0)), "t_alpha_beta3": float(rng.integers(1, 150)) if flag() else 0.0,
             "eps": loguniform(rng, 1e-8, 1e-4),
             "weight_decay": optional(1e-3, 1e-1), "weight_decouple": flag(), "fixed_decay": flag()}
    elif name == "stableadamw":
        h = {"lr": loguniform(rng, 1e-3, 3e-2),
             "betas": (float(rng.uniform(0.3, 0.95)), float(rng.uniform(0.9, 0.9995))),
             "eps": loguniform(rng, 1e-8, 1e-4), "weight_decay": optional(1e-3, 1e-1), "weight_decouple": flag()}
    elif name == "madgrad":
        h = {"lr": loguniform(rng, 1e-3, 3e-2), "momentum": float(rng.uniform(0.3, 0.95)) if flag() else 0.0,
             "eps": loguniform(rng, 1e-8, 1e-4) if mode != "off" else 1e-6,
             "weight_decay": optional(1e-3, 1e-1), "weight_decouple": flag()}
    elif name == "novograd":
        h = {"lr": loguniform(rng, 1e-3, 3e-2),
             "betas": (float(rng.uniform(0.3, 0.95)), float(rng.uniform(0.5, 0.99))),
             "eps": loguniform(rng, 1e-8, 1e-4), "weight_decay": optional(1e-3, 1e-1),
             "weight_decouple": flag(), "fixed_decay": flag(), "grad_averaging": flag()}
    else:  # pragma: no cover
        raise AssertionError(f"no hyperparameter sampler for {name!r}")
    if "maximize" in spec(name).defaults:
        h["maximize"] = flag()
    assert set(h) == set(spec(name).defaults), (name, sorted(set(spec(name).defaults) ^ set(h)))
    return h


# ----- data -------------------------------------------------------------------------------------
def make_data(seed: int, dtype: type, steps: int = STEPS) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    rng = np.random.default_rng([seed, 104729, 3])
    params = [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]
    scales = [float(10.0 ** rng.uniform(-1.0, 0.5)) for _ in SHAPES]
    grads = []
    for t in range(steps):
        gs = []
        for i, (shape, s) in enumerate(zip(SHAPES, scales)):
            g = (rng.standard_normal(shape) * s).astype(dtype)
            g[rng.random(shape) < 0.05] = 0
            if t == 0 and i == 1:
                g[...] = 0  # m = 0 and g = 0 together: c = 0, sign(c) = 0
            gs.append(g)
        grads.append(gs)
    return params, grads


# ----- references -------------------------------------------------------------------------------
def _torch_package(make: Callable[[list, dict], Any], slots: dict[str, str]):
    """A reference run through a torch optimizer built by ``make(tparams, hyper)``, in the
    params' dtype; maximize is applied by negating the gradient fed to it."""

    def run(name: str, hyper: dict[str, Any], params: list[np.ndarray], grads: list[list[np.ndarray]]):
        out = {}
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
                    if t in CHECKPOINTS:
                        out[t] = {"params": [tp.numpy().copy() for tp in tparams],
                                  "state": [{mine: opt.state[tp][theirs].numpy().copy() for mine, theirs in slots.items()
                                             if theirs in opt.state[tp]} for tp in tparams]}
        finally:
            torch.set_num_threads(saved)
        return out

    return run


def _lion_package(tparams: list, hyper: dict[str, Any]):
    lion_pytorch = pytest.importorskip("lion_pytorch")
    return lion_pytorch.Lion(tparams, **hyper)


def _pytorch_optimizer(cls_name: str, **fixed: Any) -> Callable[[list, dict], Any]:
    """pytorch-optimizer 4.1.0's ``cls_name`` on its per-param path (foreach=False)."""

    def make(tparams: list, hyper: dict[str, Any]):
        pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
        version = importlib.metadata.version("pytorch-optimizer")
        assert version == "4.1.0", f"the reference is pytorch-optimizer 4.1.0, found {version}"
        return getattr(pytorch_optimizer, cls_name)(tparams, foreach=False, **fixed, **hyper)

    return make


def _laprop_package(tparams: list, hyper: dict[str, Any]):
    """LaProp takes steps_before_using_centered as an int constructor argument."""
    hyper = dict(hyper)
    steps = int(hyper.pop("steps_before_using_centered"))
    return _pytorch_optimizer("LaProp", steps_before_using_centered=steps)(tparams, hyper)


def _ademamix_package(tparams: list, hyper: dict[str, Any]):
    """AdEMAMix: pyopt's t_alpha_beta3 = 0 (no warmup) is the reference's None."""
    hyper = dict(hyper)
    hyper["t_alpha_beta3"] = hyper["t_alpha_beta3"] or None
    return _pytorch_optimizer("AdEMAMix")(tparams, hyper)


def _adabelief_package(tparams: list, hyper: dict[str, Any]):
    """adabelief-pytorch 0.2.0, its change log and flag announcements silenced."""
    adabelief_pytorch = pytest.importorskip("adabelief_pytorch")
    version = importlib.metadata.version("adabelief-pytorch")
    assert version == "0.2.0", f"the reference is adabelief-pytorch 0.2.0, found {version}"
    with contextlib.redirect_stdout(io.StringIO()):
        return adabelief_pytorch.AdaBelief(tparams, print_change_log=False, **hyper)


def _schedulefree_package(cls_name: str) -> Callable[[list, dict], Any]:
    """facebookresearch schedulefree 1.4.1 (per-param path, foreach=False), put in train mode."""

    def make(tparams: list, hyper: dict[str, Any]):
        schedulefree = pytest.importorskip("schedulefree")
        version = importlib.metadata.version("schedulefree")
        assert version == "1.4.1", f"the reference is schedulefree 1.4.1, found {version}"
        opt = getattr(schedulefree, cls_name)(tparams, foreach=False, **hyper)
        opt.train()
        return opt

    return make


def _numpy_model(init: Callable[[np.ndarray, dict], dict], step: Callable[..., None]):
    """A reference run through a float64 numpy model: ``step(h, t, p, g, state)`` in place."""

    def run(name: str, hyper: dict[str, Any], params: list[np.ndarray], grads: list[list[np.ndarray]]):
        out = {}
        ps = [p.astype(np.float64) for p in params]
        states = [init(p, hyper) for p in ps]
        for t, gs in enumerate(grads, start=1):
            for p, g, st in zip(ps, gs, states):
                g = g.astype(np.float64)
                step(hyper, t, p, -g if hyper.get("maximize") else g, st)
            if t in CHECKPOINTS:
                out[t] = {"params": [p.copy() for p in ps], "state": [{k: v.copy() for k, v in st.items()} for st in states]}
        return out

    return run


def _grams_init(p: np.ndarray, h: dict) -> dict:
    return {"exp_avg": np.zeros_like(p), "exp_avg_sq": np.zeros_like(p)}


def _grams_step(h: dict, t: int, p: np.ndarray, g: np.ndarray, st: dict) -> None:
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


def _adan_init(p: np.ndarray, h: dict) -> dict:
    return {k: np.zeros_like(p) for k in ("exp_avg", "exp_avg_sq", "exp_avg_diff", "pre_grad")}


def _adan_step(h: dict, t: int, p: np.ndarray, g: np.ndarray, st: dict) -> None:
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


def _lamb_init(p: np.ndarray, h: dict) -> dict:
    return {"exp_avg": np.zeros_like(p), "exp_avg_sq": np.zeros_like(p)}


def _lamb_step(h: dict, t: int, p: np.ndarray, g: np.ndarray, st: dict) -> None:
    """optax.lamb: scale_by_adam, add_decayed_weights, scale_by_trust_ratio, scale_by_learning_rate."""
    lr, (b1, b2), eps, wd = h["lr"], h["betas"], h["eps"], h["weight_decay"]
    m, v = st["exp_avg"], st["exp_avg_sq"]
    m[...] = (1 - b1) * g + b1 * m
    v[...] = (1 - b2) * g * g + b2 * v
    u = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps) + wd * p
    param_norm, update_norm = np.linalg.norm(p), np.linalg.norm(u)
    trust = 1.0 if param_norm == 0 or update_norm == 0 else param_norm / update_norm
    p -= lr * trust * u


def _lars_init(p: np.ndarray, h: dict) -> dict:
    return {"momentum_buffer": np.zeros_like(p)} if h["momentum"] else {}


def _lars_step(h: dict, t: int, p: np.ndarray, g: np.ndarray, st: dict) -> None:
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


# name -> (reference runner, kind): "package" runs in the params' dtype, "model" in float64.
MODERN: dict[str, tuple[Callable, str]] = {
    "lion": (_torch_package(_lion_package, {"exp_avg": "exp_avg"}), "package"),
    "grams": (_numpy_model(_grams_init, _grams_step), "model"),
    "adan": (_numpy_model(_adan_init, _adan_step), "model"),
    "signsgd": (_torch_package(_pytorch_optimizer("SignSGD"), {"momentum_buffer": "momentum_buffer"}), "package"),
    "signum": (_torch_package(_pytorch_optimizer("SignSGD"), {"momentum_buffer": "momentum_buffer"}), "package"),
    "yogi": (_torch_package(_pytorch_optimizer("Yogi"), {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}), "package"),
    "adopt": (_torch_package(_pytorch_optimizer("ADOPT"), {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}), "package"),
    "laprop": (_torch_package(_laprop_package, {k: k for k in ("exp_avg", "exp_avg_sq", "exp_mean_avg_beta2",
                                                               "max_exp_avg_sq")}), "package"),
    "adabelief": (_torch_package(_adabelief_package, {k: k for k in ("exp_avg", "exp_avg_var", "max_exp_avg_var")}),
                  "package"),
    "schedulefree_adamw": (_torch_package(_schedulefree_package("AdamWScheduleFree"),
                                          {"exp_avg_sq": "exp_avg_sq", "z": "z"}), "package"),
    "schedulefree_sgd": (_torch_package(_schedulefree_package("SGDScheduleFree"), {"z": "z"}), "package"),
    "lamb": (_numpy_model(_lamb_init, _lamb_step), "model"),
    "lars": (_numpy_model(_lars_init, _lars_step), "model"),
    "qhadam": (_torch_package(_pytorch_optimizer("QHAdam"), {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}),
               "package"),
    "tiger": (_torch_package(_pytorch_optimizer("Tiger"), {"exp_avg": "exp_avg"}), "package"),
    "ademamix": (_torch_package(_ademamix_package, {k: k for k in ("exp_avg", "exp_avg_sq", "exp_avg_slow")}),
                 "package"),
    "stableadamw": (_torch_package(_pytorch_optimizer("StableAdamW"), {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}),
                    "package"),
    "madgrad": (_torch_package(_pytorch_optimizer("MADGRAD"), {k: k for k in ("grad_sum_sq", "s", "x0")}), "package"),
    "novograd": (_torch_package(_pytorch_optimizer("NovoGrad"), {"moments": "moments"}), "package"),
}
NAMES = [n for n in pyopt.available() if n in MODERN]
# Matches the reference bit for bit on the FMA paths (no sqrt, same operation order).
EXACT_ON_FMA = ("lion", "signsgd", "signum", "schedulefree_sgd", "tiger")
SIGN_OF_INTERPOLATION = ("lion", "signsgd", "signum", "yogi", "tiger")  # see sign_flips()


def sign_flips(name: str, hyper: dict[str, Any]) -> tuple[float, float]:
    """Where a path rounds differently from the reference (no FMA), a sign taken of a value within
    an ulp of 0 can flip: Lion's sign(c), signSGD's sign(b), Yogi's sign(v − g²). A few elements
    (≤ 1e-4 of an array) may then differ by up to (params, state) these bounds; everything else is
    held to the usual tolerance. Lion's state never sees the sign (no allowance), signSGD's only
    through coupled weight decay (wd times the param's deviation); Yogi's v jumps by 2(1 − β2)g² at
    a flip, and its param follows by a fraction of a step."""
    flips = 6 * hyper["lr"]
    if name == "yogi":
        return flips, float("inf")
    if name in ("signsgd", "signum", "tiger") and not hyper["weight_decouple"]:
        return flips, hyper["weight_decay"] * flips
    return flips, 0.0  # params may differ by 2·lr where a sign flips (no-FMA paths)

TOL = {  # against a float64 model, or a package on a path that rounds differently
    "float64": dict(rtol=1e-12, atol_scale=1e-13, update=1e-11),
    "float32": dict(rtol=1e-4, atol_scale=1e-6, update=1e-3),
}

TOL_SQRT_ULP = {  # same operations as the package; only torch's (MKL) sqrt rounds differently
    "float64": dict(rtol=3e-15, atol_scale=1e-15, update=1e-14),
    "float32": dict(rtol=1e-6, atol_scale=5e-7, update=5e-6),
}


# The reference sums a per-tensor norm in the param dtype (torch's pairwise order); pyopt sums in
# double, so the norm, and every step scaled by it, differs by that sum's rounding.
SUMMED_IN_DTYPE = ("novograd",)


def tolerance(name: str, dtype_name: str, isa: str) -> dict[str, float] | None:
    if MODERN[name][1] == "package" and isa in FMA_ISAS and name not in SUMMED_IN_DTYPE:
        return None if name in EXACT_ON_FMA else TOL_SQRT_ULP[dtype_name]
    return TOL[dtype_name]


_CACHE = RecentCache(keep=2)


def reference(name: str, dtype_name: str, seed: int):
    def compute():
        hyper = draw_hyper(name, seed)
        params, grads = make_data(seed * 37 + case_index(name), DTYPES[dtype_name])
        return hyper, params, grads, MODERN[name][0](name, hyper, params, grads)

    return _CACHE.get((name, dtype_name, seed), compute)


# ----- comparison -------------------------------------------------------------------------------
def assert_close(actual: np.ndarray, desired: np.ndarray, tol: dict[str, float] | None, what: str,
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


def run_pyopt(name: str, hyper: dict[str, Any], params0: list[np.ndarray], grads: list[list[np.ndarray]],
              trajectory: dict[int, dict[str, Any]], dtype_name: str, where: str,
              tol: Any = "auto") -> dict[str, float]:
    isa = pyopt.info()["isa"]
    if tol == "auto":
        tol = tolerance(name, dtype_name, isa)
    flips = state_flips = 0.0
    if name in SIGN_OF_INTERPOLATION and tol is not None:
        flips, state_flips = sign_flips(name, hyper)
    params = [p.copy() for p in params0]
    opt = CLASSES[name](params, **hyper)
    seen: dict[str, float] = {}
    for t, gs in enumerate(grads, start=1):
        opt.step(gs)
        if t not in trajectory:
            continue
        ref = trajectory[t]
        for i, (p, p0, rp) in enumerate(zip(params, params0, ref["params"])):
            merge_errors(seen, assert_close(p, rp, tol, f"{where}: params[{i}] after step {t}", flips, p0))
        update, den = update_error(params, params0, ref["params"])
        # A handful (≤ 9) of sign-flipped elements, each off by ≤ flips, add ≤ 3·flips to the norm.
        bound = 0.0 if tol is None else tol["update"] + (3 * flips / den ** 0.5 if flips and den > 0 else 0.0)
        assert update <= bound, f"{where}: after step {t}, ||Δp − Δp_ref|| / ||Δp_ref|| = {update:.3g} > {bound:.0e}"
        merge_errors(seen, {"update": update})
        for i, rstate in enumerate(ref["state"]):
            assert opt.state[i]["step"] == t
            for key, value in rstate.items():
                assert key in opt.state[i], f"{where}: params[{i}] lacks state {key!r} the reference keeps"
                merge_errors(seen, assert_close(opt.state[i][key], value, tol,
                                                f"{where}: state[{i}][{key!r}] after step {t}", state_flips))
    return seen


# ----- fixtures ---------------------------------------------------------------------------------
@pytest.fixture
def isa(request: pytest.FixtureRequest):
    with isa_path(request.param) as name:
        yield name


@pytest.fixture
def threads():
    with num_threads(1):
        yield


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    write_report(OBSERVED)


# ----- the matrix -------------------------------------------------------------------------------
CASES = [(n, d, s) for n in NAMES for d in DTYPES for s in SEEDS]


@pytest.mark.parametrize(
    "case, isa",
    [pytest.param(c, i, id=f"{c[0]}-{c[1]}-seed{c[2]}-{i}") for c in CASES for i in ISAS],
    indirect=["isa"],
)
def test_matches_reference(case: tuple[str, str, int], isa: str, threads: None) -> None:
    name, dtype_name, seed = case
    hyper, params0, grads, trajectory = reference(name, dtype_name, seed)
    errs = run_pyopt(name, hyper, params0, grads, trajectory, dtype_name, f"{name} {dtype_name} {isa} {hyper}")
    merge_errors(OBSERVED[(name, dtype_name, isa)], errs)


def test_every_modern_optimizer_is_covered() -> None:
    from test_reference import TORCH_NAMES  # the torch.optim ones, checked there

    elsewhere = {"sophia"}  # test_sophia.py: its reference also needs update_hessian calls
    assert set(pyopt.available()) - set(TORCH_NAMES) - elsewhere <= set(NAMES)
    for name in NAMES:
        assert name in CLASSES
        flags = {k for k, v in spec(name).defaults.items() if isinstance(v, bool)}
        drawn = [draw_hyper(name, s) for s in SEEDS]
        for f in flags:
            assert {h[f] for h in drawn} == {False, True}, (name, f)


@pytest.mark.parametrize("dtype_name, seed", [("float32", 2), ("float64", 1)])
@pytest.mark.parametrize("name", NAMES)
def test_wrong_hyperparameter_fails(name: str, dtype_name: str, seed: int, threads: None) -> None:
    """The comparison has teeth: a 10% larger lr, a changed beta, or any boolean flag flipped."""
    hyper, params0, grads, trajectory = reference(name, dtype_name, seed)
    wrongs = [("lr * 1.1", {**hyper, "lr": hyper["lr"] * 1.1})]
    if "betas" in hyper:
        betas = list(hyper["betas"])
        betas[0] = betas[0] * 0.9
        wrongs.append(("betas[0] * 0.9", {**hyper, "betas": tuple(betas)}))
    if hyper.get("momentum"):
        wrongs.append(("momentum * 0.9", {**hyper, "momentum": hyper["momentum"] * 0.9}))
    for key, value in hyper.items():
        if isinstance(value, bool) and (seed == 1 or key == "maximize"):
            wrongs.append((f"{key}={not value}", {**hyper, key: not value}))
    # LaProp's coupled decay comes after the gradient was used: inert in the reference, and in pyopt.
    if hyper.get("weight_decay") and not (name == "laprop" and not hyper["weight_decouple"]):
        wrongs.append(("weight_decay * 2", {**hyper, "weight_decay": 2 * hyper["weight_decay"]}))
    for label, wrong in wrongs:
        with pytest.raises(AssertionError):
            run_pyopt(name, wrong, params0, grads, trajectory, dtype_name, f"{name} deliberately wrong: {label}")
    run_pyopt(name, hyper, params0, grads, trajectory, dtype_name, f"{name} control")


# ----- the functional layer and threads -------------------------------------------------------
@pytest.mark.parametrize("seed", (0, 1, 2))
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("isa", ISAS, indirect=True)
def test_functional_matches_class(name: str, dtype_name: str, seed: int, isa: str) -> None:
    """pyopt.functional.<name>_ reproduces the class bit for bit, per-tensor scalars (LaProp's lr
    averages) threaded through."""
    steps = 20
    hyper = draw_hyper(name, seed)
    rng = np.random.default_rng([seed, case_index(name), 11])
    dtype = DTYPES[dtype_name]
    shapes = [(1,), (7,), (1, 17), (31, 33), (10007,)]
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    fparams = [p.copy() for p in params]
    slots = functional.state_slots(name, **hyper)
    fstate = [[np.full_like(p, init) for _, init in slots] for p in fparams]
    scalars = [{n: init for n, init in spec(name).scalars} for _ in fparams]
    fn = getattr(functional, f"{name}_")
    opt = CLASSES[name](params, **hyper)
    for t in range(1, steps + 1):
        grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
        opt.step(grads)
        for i, (p, g) in enumerate(zip(fparams, grads)):
            scalars[i] = fn(p, g, *fstate[i], step=t, **hyper, **scalars[i]) or {}
    for i, (p, fp) in enumerate(zip(params, fparams)):
        np.testing.assert_array_equal(fp, p, err_msg=f"{name} params[{i}]")
        for (slot, _), arr in zip(slots, fstate[i]):
            np.testing.assert_array_equal(arr, opt.state[i][slot], err_msg=f"{name} state[{i}][{slot!r}]")
        for key, value in scalars[i].items():
            assert value == opt.state[i][key], (name, key, value, opt.state[i][key])


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("name", NAMES)
def test_thread_count_does_not_change_results(name: str, dtype_name: str) -> None:
    hyper = draw_hyper(name, 1)
    params0, grads = make_data(case_index(name), DTYPES[dtype_name], 5)
    results = []
    saved = pyopt.info()["num_threads"]
    try:
        for n in (1, 3):
            pyopt.set_num_threads(n)
            params = [p.copy() for p in params0]
            opt = CLASSES[name](params, **hyper)
            for gs in grads:
                opt.step(gs)
            results.append((params, opt.state))
    finally:
        pyopt.set_num_threads(saved)
    for i, (p, q) in enumerate(zip(results[0][0], results[1][0])):
        np.testing.assert_array_equal(p, q, err_msg=f"{name}: params[{i}], 3 threads vs 1")
        for key, value in results[0][1][i].items():
            np.testing.assert_array_equal(results[1][1][i][key], value, err_msg=f"{name}: state[{i}][{key!r}]")


# ----- grams against the official package ------------------------------------------------------


def _grams_package(tparams: list, hyper: dict[str, Any]):
    grams = pytest.importorskip("grams")
    return grams.Grams(tparams, **hyper)


@pytest.mark.parametrize("dtype_name, seed", [("float32", 1), ("float32", 2), ("float64", 1), ("float64", 3)])
@pytest.mark.parametrize("isa", ISAS, indirect=True)
def test_grams_matches_grams_pytorch(dtype_name: str, seed: int, isa: str, threads: None) -> None:
    """Grams against the official grams-pytorch 0.0.2 in the same dtype: to torch's sqrt rounding
    on the FMA paths (bit for bit with a correctly rounded sqrt, below), float rounding elsewhere."""
    pytest.importorskip("grams")
    hyper = draw_hyper("grams", seed)
    params0, grads = make_data(seed * 37 + 1000, DTYPES[dtype_name])
    trajectory = GRAMS_PACKAGE("grams", hyper, params0, grads)
    tol = TOL_SQRT_ULP[dtype_name] if isa in FMA_ISAS else TOL[dtype_name]
    errs = run_pyopt("grams", hyper, params0, grads, trajectory, dtype_name, f"grams vs grams-pytorch {isa}", tol=tol)
    merge_errors(OBSERVED[("grams-pytorch", dtype_name, isa)], errs)


GRAMS_PACKAGE = _torch_package(_grams_package, {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"})
IEEE_SQRT_REFERENCES = {"grams": GRAMS_PACKAGE, "yogi": MODERN["yogi"][0], "adopt": MODERN["adopt"][0],
                        "laprop": MODERN["laprop"][0], "adabelief": MODERN["adabelief"][0],
                        "schedulefree_adamw": MODERN["schedulefree_adamw"][0], "qhadam": MODERN["qhadam"][0],
                        "ademamix": MODERN["ademamix"][0]}


@pytest.mark.skipif(not FMA_ISAS, reason="no FMA path on this machine, or torch does not fuse")
@pytest.mark.parametrize("seed", (1, 2))
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("name", [n for n in IEEE_SQRT_REFERENCES if n in NAMES])
def test_fma_paths_bit_for_bit_with_ieee_sqrt(name: str, dtype_name: str, seed: int, threads: None) -> None:
    """With a correctly rounded sqrt swapped into torch, the FMA paths match the reference package
    (grams-pytorch, pytorch-optimizer's Yogi and ADOPT) bit for bit, params and state."""
    if name == "grams":
        pytest.importorskip("grams")
    hyper = draw_hyper(name, seed)
    params0, grads = make_data(seed * 37 + 2000, DTYPES[dtype_name])
    with ieee_sqrt():
        trajectory = IEEE_SQRT_REFERENCES[name](name, hyper, params0, grads)
    saved = pyopt.info()["isa"]
    try:
        for isa in FMA_ISAS:
            pyopt.set_isa(isa)
            run_pyopt(name, hyper, params0, grads, trajectory, dtype_name, f"{name} {isa} {hyper} IEEE sqrt", tol=None)
    finally:
        pyopt.set_isa(saved)


# ----- sign-specific checks ---------------------------------------------------------------------
SPECIAL = np.array([0.0, -0.0, 1.0, -1.0, 1e-30, -1e-30, np.nan, 3.0, -2.5, 0.0, 5e-8, -5e-8], np.float64)


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("isa", ISAS, indirect=True)
def test_lion_sign_elementwise(dtype_name: str, isa: str, threads: None) -> None:
    """sign(0) = 0 (g = 0 with m = 0 leaves p alone), tiny values keep their sign, and a NaN
    gradient behaves as in lion-pytorch (torch's sgn gives 0 for NaN; the momentum turns NaN).
    Checked elementwise against lion-pytorch, every array position in the SIMD body and the tail."""
    lion_pytorch = pytest.importorskip("lion_pytorch")
    dtype = DTYPES[dtype_name]
    n = 37
    grads = [np.resize(SPECIAL, n).astype(dtype), np.resize(SPECIAL[::-1], n).astype(dtype),
             np.resize(np.roll(SPECIAL, 5), n).astype(dtype)]
    p0 = np.linspace(-1, 1, n).astype(dtype)
    hyper = dict(lr=0.01, betas=(0.9, 0.99), weight_decay=0.0)
    p = p0.copy()
    opt = pyopt.Lion([p], **hyper)
    tp = torch.from_numpy(p0.copy())
    topt = lion_pytorch.Lion([tp], **hyper)
    for step, g in enumerate(grads, start=1):
        opt.step([g])
        tp.grad = torch.from_numpy(g.copy())
        with torch.no_grad():
            topt.step()
        np.testing.assert_array_equal(p, tp.numpy(), err_msg=f"params after step {step}")
        np.testing.assert_array_equal(opt.state[0]["exp_avg"], topt.state[tp]["exp_avg"].numpy())
        if step == 1:  # m = 0: p moves by exactly lr·sign(g), 0 where g is ±0 or NaN
            expected = p0 - dtype(0.01) * np.nan_to_num(np.sign(g)).astype(dtype)
            np.testing.assert_array_equal(p, expected)


# ----- adabelief flag combinations the seeded draws miss ----------------------------------------
ADABELIEF_COMBOS = [
    dict(amsgrad=True, rectify=False, weight_decouple=False, fixed_decay=False, degenerated_to_sgd=True),
    dict(amsgrad=True, rectify=False, weight_decouple=True, fixed_decay=False, degenerated_to_sgd=False),
    dict(amsgrad=False, rectify=True, weight_decouple=False, fixed_decay=False, degenerated_to_sgd=False),
    dict(amsgrad=True, rectify=True, weight_decouple=True, fixed_decay=False, degenerated_to_sgd=False),
]


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("combo", range(len(ADABELIEF_COMBOS)))
@pytest.mark.parametrize("isa", ISAS, indirect=True)
def test_adabelief_flag_combinations(combo: int, dtype_name: str, isa: str, threads: None) -> None:
    """amsgrad without rectification, coupled L2 decay, and rectification without the SGD warm-up
    steps, against adabelief-pytorch 0.2.0 (tolerances as in the matrix)."""
    hyper = {**draw_hyper("adabelief", 2), **ADABELIEF_COMBOS[combo], "weight_decay": 0.02, "maximize": combo % 2 == 1}
    params0, grads = make_data(combo * 37 + 3000, DTYPES[dtype_name])
    key = ("adabelief-combo", dtype_name, combo)
    trajectory = _CACHE.get(key, lambda: MODERN["adabelief"][0]("adabelief", hyper, params0, grads))
    errs = run_pyopt("adabelief", hyper, params0, grads, trajectory, dtype_name, f"adabelief {isa} {hyper}")
    merge_errors(OBSERVED[("adabelief-combos", dtype_name, isa)], errs)


# ----- per-tensor reductions (LAMB, LARS) -----------------------------------------------------
@pytest.mark.parametrize("name", ["lamb", "lars"])
def test_reductions_same_bits_on_every_fma_path(name: str) -> None:
    """Norms are summed in fixed lanes and blocks, so the vector width cannot change the result:
    the FMA paths (avx2, avx512) agree bit for bit, with 1 or 3 threads."""
    if len(FMA_ISAS) < 2:
        pytest.skip("needs two FMA paths")
    hyper = draw_hyper(name, 1)
    params0, grads = make_data(7, np.float32, 5)
    results = []
    saved = pyopt.info()["num_threads"]
    try:
        for isa_name in FMA_ISAS:
            for n in (1, 3):
                pyopt.set_num_threads(n)
                with isa_path(isa_name):
                    params = [p.copy() for p in params0]
                    opt = CLASSES[name](params, **hyper)
                    for gs in grads:
                        opt.step(gs)
                results.append((f"{isa_name}/{n} threads", params))
    finally:
        pyopt.set_num_threads(saved)
    first_label, first = results[0]
    for label, params in results[1:]:
        for i, (p, q) in enumerate(zip(first, params)):
            np.testing.assert_array_equal(p, q, err_msg=f"{name}: params[{i}], {label} vs {first_label}")
