"""Every optimizer's reference test case: one row each (adding an optimizer = one row here and,
if it has no reference yet, one reference function in reference_impls.py).

A row names the optimizer, its reference, how its hyperparameters are drawn (refdraws.py: ranges
and choices per hyperparameter, in draw order; the boolean hyperparameters a row does not list,
``maximize`` among them, are drawn after those as flags, in the record's order) and its tolerance. ``index`` seeds the row's draws and data: never renumber,
append. The generic tests of test_reference.py run every row on every ISA path, dtype and seed.

cautious=True (rules/base.hpp): drawn as a flag where the row's reference has it (ademamix, laprop,
mars, mars_lion: pytorch-optimizer 4.1.0); pinned off where it has not (adam, adamw, amsgrad against
torch.optim, lion against lion-pytorch), whose cautious steps test_cautious.py checks.

Two suites share the rows:
  - TORCH_OPTIM: torch.optim 2.13's single-tensor path (foreach=False), dense random gradients,
    every state entry torch keeps (and its scalar state, to the bit);
  - PACKAGES: other reference packages in the params' dtype, or float64 numpy models, gradients
    with ~5% exact zeros and one all-zero tensor at step 1 (sign(0) = 0, m = 0), the state slots
    the reference keeps.

Tolerances (RULES.md "How to match a reference"). On the FMA paths (avx2, avx512) pyopt fuses
exactly the multiply-adds torch's CPU kernels fuse and rounds every other operation as torch does
(rules/common.hpp), so what is left is torch's sqrt, which is not correctly rounded (MKL: ~17% of
float32 and ~1% of float64 results are 1 ulp off IEEE sqrt):
  - rules without a sqrt, run against torch code, match bit for bit (EXACT);
  - the others are held to TORCH_SQRT_ULP / PACKAGE_SQRT_ULP (observed: rtol 1.5e-7 in float32,
    ≤ 3.3e-16 in float64; adadelta's two sqrts per step compound through its state: rtol 1e-4 in
    float32, observed 1.7e-5), and match bit for bit once torch's sqrt is correctly rounded
    (test_fma_paths_bit_for_bit_with_ieee_sqrt, for the rows with an ``ieee_sqrt`` reference).
The baseline path (x86-64-v2, no FMA) rounds each multiply-add twice, so it drifts by ulps per
step (TORCH_NO_FMA; observed max |a − d| / max |d| ≤ 4e-14 in float64). Against a float64 numpy
model pyopt's float64 run is held to ~1e-12 relative and its float32 run (whose rounding compounds
over 100 steps) to 1e-4 (MODEL). On paths without FMA, a sign taken of a value within an ulp of 0
may flip: ``sign_flips`` rows allow a handful of elements that far off.

References (RULES.md, "Modern"): lion-pytorch 0.2.5; grams: a float64 numpy model of the official
Gunale0926/Grams grams.py, and grams-pytorch 0.0.2 bit for bit with an IEEE sqrt; adan: a float64
model of sail-sg/Adan's _single_tensor_adan; adabelief-pytorch 0.2.0; pytorch-optimizer 4.1.0
(SignSGD, Yogi, ADOPT, LaProp, QHAdam, Tiger, AdEMAMix, StableAdamW, MADGRAD, NovoGrad, MARS,
SimplifiedAdEMAMix, SPAM; per-param path); schedulefree 1.4.1; lamb and lars: float64 models of
optax.lamb and optax.lars. sophia is
tested in test_sophia.py (its reference also needs update_hessian calls).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from pyopt._spec import spec
from refcheck import DTYPES, SHAPES, STEPS, RecentCache, fma_isas
from refdraws import Derived, Draw, Fixed, Flag, Integer, Log, Optional, Tuple, Uniform, UnlessOff, When, draw_all
import reference_impls as ref

# ----- tolerances -------------------------------------------------------------------------------
PerDtype = dict[str, dict[str, float]]
TORCH_NO_FMA: PerDtype = {"float64": dict(rtol=1e-13, atol_scale=1e-14, update=1e-12),
                          "float32": dict(rtol=1e-4, atol_scale=1e-6, update=1e-3)}
TORCH_SQRT_ULP: PerDtype = {"float64": dict(rtol=3e-15, atol_scale=1e-15, update=1e-14),
                            "float32": dict(rtol=1e-6, atol_scale=1e-7, update=5e-6)}
PACKAGE_SQRT_ULP: PerDtype = {"float64": dict(rtol=3e-15, atol_scale=1e-15, update=1e-14),
                              "float32": dict(rtol=1e-6, atol_scale=5e-7, update=5e-6)}
MODEL: PerDtype = {"float64": dict(rtol=1e-12, atol_scale=1e-13, update=1e-11),
                   "float32": dict(rtol=1e-4, atol_scale=1e-6, update=1e-3)}
EXACT = None


@dataclass(frozen=True)
class Tolerance:
    """Per dtype on the FMA paths where torch fuses too (None: bit for bit), and elsewhere."""

    fma: PerDtype | None
    other: PerDtype

    def __call__(self, dtype_name: str, isa: str) -> dict[str, float] | None:
        if self.fma is not self.other and isa in fma_isas():
            return None if self.fma is None else self.fma[dtype_name]
        return self.other[dtype_name]


TORCH_EXACT = Tolerance(EXACT, TORCH_NO_FMA)
TORCH_SQRT = Tolerance(TORCH_SQRT_ULP, TORCH_NO_FMA)
PACKAGE_EXACT = Tolerance(EXACT, MODEL)
PACKAGE_SQRT = Tolerance(PACKAGE_SQRT_ULP, MODEL)
# A float64 model, or a package that sums a per-tensor norm in the param dtype (torch's pairwise
# order) where pyopt sums in double: float rounding on every path.
ROUNDING = Tolerance(MODEL, MODEL)
# optax run op by op on jax's CPU backend (reference_impls.optax_package): the optax rules round
# each operation as jax does (rules/optax.hpp: β^t by binary exponentiation in the params' dtype,
# division by a scalar as a multiply by its reciprocal, no fused multiply-adds), so they match bit
# for bit on every ISA path, float32 (jax without x64) and float64 (with x64), for tensors of two
# elements or more (test_optax_rules.py). XLA divides a 1-element array by a scalar exactly (it
# keeps no reciprocal there), so size-1 tensors are off by an ulp now and then: a few ulps here.
OPTAX_ULPS: PerDtype = {"float64": dict(rtol=1e-14, atol_scale=1e-15, update=1e-13),
                        "float32": dict(rtol=1e-5, atol_scale=1e-6, update=1e-5)}
OPTAX = Tolerance(OPTAX_ULPS, OPTAX_ULPS)


# ----- the two suites -----------------------------------------------------------------------------
def dense_data(seed: int, dtype: type, steps: int = STEPS) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """Initial params and ``steps`` lists of gradients (fresh each step, per-tensor scales)."""
    rng = np.random.default_rng([seed, 104729])
    params = [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]
    scales = [float(10.0 ** rng.uniform(-1.0, 0.5)) for _ in SHAPES]
    grads = [
        [(rng.standard_normal(shape, dtype=dtype) * dtype(s)).astype(dtype) for shape, s in zip(SHAPES, scales)]
        for _ in range(steps)
    ]
    return params, grads


def sparse_data(seed: int, dtype: type, steps: int = STEPS) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """As dense_data, with ~5% of the gradient entries exactly 0 and tensor 1 all 0 at step 1."""
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


@dataclass(frozen=True)
class Suite:
    name: str
    draw_salt: int
    make_data: Callable[..., tuple[list[np.ndarray], list[list[np.ndarray]]]]
    data_stride: int  # the matrix's data seed is seed · data_stride + row index
    checkpoints: tuple[int, ...]
    check: str  # "torch" or "package": the checkpoint comparison (refcompare.py)
    functional_salt: tuple[int, ...]
    # The extra "wrong hyperparameter" mutations: betas[0] · 0.9, momentum · 0.9, weight_decay · 2.
    value_teeth: bool
    ieee_sqrt_data_seed: Callable[[int, int], int]  # (seed, row index) -> data seed

    def matrix_data_seed(self, seed: int, index: int) -> int:
        return seed * self.data_stride + index


# 6: RAdam's rho_t crosses 5 around here for beta2 ~ 0.999.
TORCH_OPTIM = Suite("torch.optim", 7919, dense_data, 31, (1, 6, STEPS), "torch", (), False,
                    lambda seed, index: seed * 31 + index)
PACKAGES = Suite("packages", 15485863, sparse_data, 37, (1, 2, 10, STEPS), "package", (11,), True,
                 lambda seed, index: seed * 37 + 2000)


# ----- sign flips (no-FMA paths) ------------------------------------------------------------------
def flips_in_params(h: dict) -> tuple[float, float]:
    """Lion's sign(c): a flip moves a param by 2·lr; its state never sees the sign."""
    return 6 * h["lr"], 0.0


def flips_through_coupled_decay(h: dict) -> tuple[float, float]:
    """signSGD's / Tiger's sign(b): the state sees a flip only through coupled weight decay."""
    flips = 6 * h["lr"]
    return flips, 0.0 if h["weight_decouple"] else h["weight_decay"] * flips


def flips_in_yogi_state(h: dict) -> tuple[float, float]:
    """Yogi's sign(v − g²): v jumps by 2(1 − β2)g² at a flip, the param follows by a fraction of a step."""
    return 6 * h["lr"], float("inf")


# ----- rows ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    name: str
    suite: Suite
    index: int
    reference: ref.Reference
    draws: dict[str, Draw]
    tolerance: Tolerance
    # The reference the FMA paths must match bit for bit once torch's sqrt is correctly rounded.
    ieee_sqrt: ref.Reference | None = None
    # The hyperparameter whose lerp weight (1 − β1, 1 − α) ≥ 0.5 takes torch's other lerp form.
    large_lerp_weight: str | None = None
    sign_flips: Callable[[dict], tuple[float, float]] | None = None
    # LaProp's coupled decay comes after the gradient was used: inert in the reference, and in pyopt.
    coupled_decay_inert: bool = False
    needs: tuple[str, ...] = field(default=("torch",))
    # The hyperparameter test_wrong_hyperparameter_fails multiplies by 1.1 (lr, unless the rule is
    # invariant to it).
    teeth: str = "lr"

    def draw(self, seed: int) -> dict[str, Any]:
        """The hyperparameters of case ``seed`` (0: optional features off, 1: all on, else random)."""
        defaults = spec(self.name).defaults
        flags = [k for k, v in defaults.items() if isinstance(v, bool) and k not in self.draws]
        h = draw_all(self.draws, seed, (self.index, self.suite.draw_salt), flags)
        assert set(h) == set(defaults), (self.name, sorted(set(defaults) ^ set(h)))
        return h

    def flags(self) -> set[str]:
        """The boolean hyperparameters the draws turn both ways (not those pinned by Fixed)."""
        bools = {k for k, v in spec(self.name).defaults.items() if isinstance(v, bool)}
        return {k for k in bools if not isinstance(self.draws.get(k), Fixed)}


def torch_row(name: str, index: int, reference: ref.Reference, draws: dict[str, Draw], tolerance: Tolerance,
              large_lerp_weight: str | None = None) -> Row:
    return Row(name, TORCH_OPTIM, index, reference, draws, tolerance,
               ieee_sqrt=None if tolerance is TORCH_EXACT else reference, large_lerp_weight=large_lerp_weight)


def package(make: Callable, *slots: str) -> ref.Reference:
    return ref.torch_package(make, {s: s for s in slots})


def model_row(name: str, index: int, reference: ref.Reference, draws: dict[str, Draw], **kw: Any) -> Row:
    return Row(name, PACKAGES, index, reference, draws, ROUNDING, needs=(), **kw)


def optax_row(name: str, index: int, make: Callable[[dict], Any], slots: dict[str, tuple[int, str]],
              draws: dict[str, Draw], **kw: Any) -> Row:
    return Row(name, PACKAGES, index, ref.optax_package(make, slots), draws, OPTAX, needs=("jax", "optax"), **kw)


def _nesterov(d: Any) -> bool:
    """nesterov needs momentum > 0 (torch raises otherwise); the flag is drawn only then."""
    return d.h["momentum"] > 0 and d.flag()


def _dampening(d: Any) -> float:
    """nesterov needs dampening == 0."""
    return 0.0 if d.h["nesterov"] else Optional(Uniform(0.05, 0.5))(d)


BETAS = Tuple(Uniform(0.3, 0.95), Uniform(0.95, 0.9995))
ADAM_LR, ADAM_EPS = Log(1e-3, 3e-2), Log(1e-8, 1e-4)
TORCH_DECAY = Optional(Log(1e-4, 1e-1))
DECAY = Optional(Log(1e-3, 1e-1))
SGD_DRAWS = {"lr": Log(3e-3, 1e-1), "weight_decay": TORCH_DECAY}
ADAM_DRAWS = {"lr": ADAM_LR, "betas": BETAS, "eps": ADAM_EPS}
SCHEDULEFREE = {"weight_decay": DECAY, "warmup_steps": When(Integer(0, 30, int), 0),
                "r": When(Uniform(0.0, 1.0)), "weight_lr_power": Uniform(0.0, 3.0)}

ROWS: list[Row] = [
    # ---- torch.optim ----
    torch_row("sgd", 0, ref.torch_optim("SGD"), {
        **SGD_DRAWS, "momentum": Optional(Uniform(0.5, 0.95)), "nesterov": Derived(_nesterov),
        "dampening": Derived(_dampening)}, TORCH_EXACT),
    torch_row("momentum", 1, ref.torch_optim("SGD"), {
        **SGD_DRAWS, "momentum": Uniform(0.5, 0.95), "nesterov": Derived(_nesterov),
        "dampening": Derived(_dampening)}, TORCH_EXACT),
    torch_row("nag", 2, ref.torch_optim("SGD"), {
        **SGD_DRAWS, "momentum": Uniform(0.5, 0.95), "nesterov": Fixed(True),
        "dampening": Derived(_dampening)}, TORCH_EXACT),
    torch_row("adagrad", 3, ref.torch_optim("Adagrad"), {
        "lr": Log(3e-3, 1e-1), "lr_decay": Optional(Log(1e-3, 1e-1)), "weight_decay": TORCH_DECAY,
        "initial_accumulator_value": Optional(Log(1e-2, 1.0)), "eps": Log(1e-10, 1e-6)}, TORCH_SQRT),
    torch_row("rmsprop", 4, ref.torch_optim("RMSprop"), {
        "lr": Log(1e-3, 1e-2), "alpha": Uniform(0.8, 0.999), "eps": Log(1e-8, 1e-4), "weight_decay": TORCH_DECAY,
        "momentum": Optional(Uniform(0.5, 0.95))}, TORCH_SQRT, large_lerp_weight="alpha"),
    torch_row("adadelta", 5, ref.torch_optim("Adadelta"), {
        "lr": Uniform(0.3, 2.0), "rho": Uniform(0.8, 0.99), "eps": Log(1e-6, 1e-3), "weight_decay": TORCH_DECAY},
        Tolerance({**TORCH_SQRT_ULP, "float32": dict(rtol=1e-4, atol_scale=1e-7, update=5e-6)}, TORCH_NO_FMA)),
    torch_row("adamax", 6, ref.torch_optim("Adamax"), {
        **ADAM_DRAWS, "weight_decay": TORCH_DECAY}, TORCH_EXACT, large_lerp_weight="betas"),
    torch_row("adam", 7, ref.torch_optim("Adam"), {
        **ADAM_DRAWS, "weight_decay": TORCH_DECAY, "decoupled_weight_decay": Flag(), "amsgrad": Flag(),
        "cautious": Fixed(False)},
        TORCH_SQRT, large_lerp_weight="betas"),
    torch_row("adamw", 8, ref.torch_optim("AdamW"), {
        **ADAM_DRAWS, "weight_decay": UnlessOff(Log(1e-4, 1e-1)), "cautious": Fixed(False)}, TORCH_SQRT),
    torch_row("amsgrad", 9, ref.torch_optim("Adam", amsgrad=True), {
        **ADAM_DRAWS, "weight_decay": TORCH_DECAY, "cautious": Fixed(False)}, TORCH_SQRT),
    torch_row("nadam", 10, ref.torch_optim("NAdam"), {
        **ADAM_DRAWS, "weight_decay": TORCH_DECAY, "momentum_decay": Log(1e-3, 3e-2)}, TORCH_SQRT,
        large_lerp_weight="betas"),
    torch_row("radam", 11, ref.torch_optim("RAdam"), {
        "lr": ADAM_LR, "betas": Tuple(Uniform(0.3, 0.95), Uniform(0.9, 0.9995)), "eps": ADAM_EPS,
        "weight_decay": TORCH_DECAY}, TORCH_SQRT, large_lerp_weight="betas"),
    # t0 within the 100 steps when on, so the averaging (mu < 1) runs; a non-integer t0 gives
    # mu = 1 / (t - t0) values that round.
    torch_row("asgd", 12, ref.torch_optim("ASGD"), {
        "lr": Log(1e-3, 1e-1), "lambd": Log(1e-4, 1e-1), "alpha": Uniform(0.5, 1.0),
        "t0": When(Uniform(0.0, 60.0), 1e6), "weight_decay": TORCH_DECAY}, TORCH_EXACT),
    # Narrow step-size bounds when on, so the clamp binds on both sides.
    torch_row("rprop", 13, ref.torch_optim("Rprop"), {
        "lr": Log(1e-4, 1e-2), "etas": Tuple(Uniform(0.3, 0.7), Uniform(1.05, 1.5)),
        "step_sizes": Tuple(When(Log(1e-4, 3e-3), 1e-6), When(Log(1e-2, 3e-2), 50.0))}, TORCH_EXACT),
    # ---- packages and float64 models ----
    Row("adabelief", PACKAGES, 0, package(ref.adabelief_package, "exp_avg", "exp_avg_var", "max_exp_avg_var"), {
        **ADAM_DRAWS, "eps": Log(1e-16, 1e-8), "weight_decay": DECAY}, PACKAGE_SQRT,
        ieee_sqrt=package(ref.adabelief_package, "exp_avg", "exp_avg_var", "max_exp_avg_var")),
    model_row("adan", 1, ref.numpy_model(ref.zeros("exp_avg", "exp_avg_sq", "exp_avg_diff", "pre_grad"), ref.adan_step), {
        "lr": ADAM_LR, "betas": Tuple(Uniform(0.5, 0.99), Uniform(0.5, 0.99), Uniform(0.9, 0.999)), "eps": ADAM_EPS,
        "weight_decay": DECAY}),
    Row("adopt", PACKAGES, 2, package(ref.pytorch_optimizer("ADOPT"), "exp_avg", "exp_avg_sq"), {
        **ADAM_DRAWS, "betas": Tuple(Uniform(0.3, 0.95), Uniform(0.95, 0.99995)), "weight_decay": DECAY},
        PACKAGE_SQRT, ieee_sqrt=package(ref.pytorch_optimizer("ADOPT"), "exp_avg", "exp_avg_sq")),
    model_row("grams", 3, ref.numpy_model(ref.zeros("exp_avg", "exp_avg_sq"), ref.grams_step), {
        **ADAM_DRAWS, "weight_decay": DECAY}, ieee_sqrt=package(ref.grams_package, "exp_avg", "exp_avg_sq")),
    model_row("lamb", 4, ref.numpy_model(ref.zeros("exp_avg", "exp_avg_sq"), ref.lamb_step), {
        **ADAM_DRAWS, "weight_decay": DECAY}),
    Row("laprop", PACKAGES, 5, package(ref.laprop_package, "exp_avg", "exp_avg_sq", "exp_mean_avg_beta2",
                                       "max_exp_avg_sq"), {
        "lr": ADAM_LR, "betas": BETAS, "centered": Flag(), "steps_before_using_centered": Integer(0, 20),
        "eps": Log(1e-15, 1e-6), "ams_bound": Flag(), "weight_decay": DECAY}, PACKAGE_SQRT,
        ieee_sqrt=package(ref.laprop_package, "exp_avg", "exp_avg_sq", "exp_mean_avg_beta2", "max_exp_avg_sq"),
        coupled_decay_inert=True),
    model_row("lars", 6, ref.numpy_model(ref.lars_init, ref.lars_step), {
        "lr": Log(0.1, 3.0), "momentum": When(Uniform(0.5, 0.99)), "weight_decay": Optional(Log(1e-4, 1e-2)),
        "trust_coefficient": Log(1e-4, 1e-2), "eps": Optional(Log(1e-9, 1e-3))}),
    Row("lion", PACKAGES, 7, package(ref.lion_package, "exp_avg"), {
        "lr": Log(1e-4, 1e-2), "betas": Tuple(Uniform(0.5, 0.99), Uniform(0.9, 0.999)),
        "weight_decay": Optional(Log(1e-2, 1.0)), "cautious": Fixed(False)}, PACKAGE_EXACT, sign_flips=flips_in_params),
    Row("schedulefree_adamw", PACKAGES, 8, package(ref.schedulefree_package("AdamWScheduleFree"), "exp_avg_sq", "z"), {
        "lr": Log(1e-3, 3e-2, 1), **SCHEDULEFREE, "betas": Tuple(Uniform(0.5, 0.95), Uniform(0.95, 0.9995)),
        "eps": ADAM_EPS}, PACKAGE_SQRT,
        ieee_sqrt=package(ref.schedulefree_package("AdamWScheduleFree"), "exp_avg_sq", "z")),
    Row("schedulefree_sgd", PACKAGES, 9, package(ref.schedulefree_package("SGDScheduleFree"), "z"), {
        "lr": Log(1e-3, 3e-2, 10), **SCHEDULEFREE, "momentum": Uniform(0.5, 0.95)}, PACKAGE_EXACT),
    Row("signsgd", PACKAGES, 10, package(ref.pytorch_optimizer("SignSGD"), "momentum_buffer"), {
        "lr": Log(1e-4, 1e-2), "momentum": When(Uniform(0.5, 0.99)), "weight_decay": Optional(Log(1e-2, 1.0))},
        PACKAGE_EXACT, sign_flips=flips_through_coupled_decay),
    Row("signum", PACKAGES, 11, package(ref.pytorch_optimizer("SignSGD"), "momentum_buffer"), {
        "lr": Log(1e-4, 1e-2), "momentum": Uniform(0.5, 0.99), "weight_decay": Optional(Log(1e-2, 1.0))},
        PACKAGE_EXACT, sign_flips=flips_through_coupled_decay),
    Row("yogi", PACKAGES, 12, package(ref.pytorch_optimizer("Yogi"), "exp_avg", "exp_avg_sq"), {
        "lr": ADAM_LR, "betas": BETAS, "initial_accumulator": Log(1e-7, 1e-2), "eps": Log(1e-5, 1e-2),
        "weight_decay": DECAY}, PACKAGE_SQRT, sign_flips=flips_in_yogi_state,
        ieee_sqrt=package(ref.pytorch_optimizer("Yogi"), "exp_avg", "exp_avg_sq")),
    Row("qhadam", PACKAGES, 13, package(ref.pytorch_optimizer("QHAdam"), "exp_avg", "exp_avg_sq"), {
        "lr": ADAM_LR, "betas": BETAS, "nus": Tuple(When(Uniform(0.5, 1.0), 1.0), When(Uniform(0.5, 1.0), 1.0)),
        "eps": ADAM_EPS, "weight_decay": DECAY}, PACKAGE_SQRT,
        ieee_sqrt=package(ref.pytorch_optimizer("QHAdam"), "exp_avg", "exp_avg_sq")),
    Row("tiger", PACKAGES, 14, package(ref.pytorch_optimizer("Tiger"), "exp_avg"), {
        "lr": Log(1e-4, 1e-2), "beta": Uniform(0.3, 0.99), "weight_decay": Optional(Log(1e-2, 1.0))},
        PACKAGE_EXACT, sign_flips=flips_through_coupled_decay),
    Row("ademamix", PACKAGES, 15, package(ref.ademamix_package, "exp_avg", "exp_avg_sq", "exp_avg_slow"), {
        "lr": ADAM_LR, "betas": Tuple(Uniform(0.3, 0.95), Uniform(0.95, 0.9995), Uniform(0.9, 0.9999)),
        "alpha": Uniform(0.0, 8.0), "t_alpha_beta3": When(Integer(1, 150)), "eps": ADAM_EPS,
        "weight_decay": DECAY}, PACKAGE_SQRT,
        ieee_sqrt=package(ref.ademamix_package, "exp_avg", "exp_avg_sq", "exp_avg_slow")),
    Row("stableadamw", PACKAGES, 16, package(ref.pytorch_optimizer("StableAdamW"), "exp_avg", "exp_avg_sq"), {
        "lr": ADAM_LR, "betas": Tuple(Uniform(0.3, 0.95), Uniform(0.9, 0.9995)), "eps": ADAM_EPS,
        "weight_decay": DECAY}, PACKAGE_SQRT),
    Row("madgrad", PACKAGES, 17, package(ref.pytorch_optimizer("MADGRAD"), "grad_sum_sq", "s", "x0"), {
        "lr": ADAM_LR, "momentum": When(Uniform(0.3, 0.95)), "eps": UnlessOff(Log(1e-8, 1e-4), 1e-6),
        "weight_decay": DECAY}, PACKAGE_SQRT),
    Row("novograd", PACKAGES, 18, package(ref.pytorch_optimizer("NovoGrad"), "moments"), {
        "lr": ADAM_LR, "betas": Tuple(Uniform(0.3, 0.95), Uniform(0.5, 0.99)), "eps": ADAM_EPS,
        "weight_decay": DECAY}, ROUNDING),
    # Dense gradients (every row present: pyopt's meaning of a dense gradient for sparse_adam),
    # given to torch.optim.SparseAdam as sparse tensors; its RowSparse path: test_row_sparse.py.
    torch_row("sparse_adam", 14, ref.torch_sparse_adam, {
        "lr": ADAM_LR, "betas": BETAS, "eps": ADAM_EPS}, TORCH_SQRT),
    # ---- optax 0.2.8 (jax CPU, jit; x64 for float64): the optimizers of optax's namespace torch lacks ----
    optax_row("adamaxw", 19, ref.optax_adamaxw, {"mu": (0, "mu"), "nu": (0, "nu")}, {
        "lr": ADAM_LR, "betas": BETAS, "eps": ADAM_EPS, "weight_decay": DECAY}),
    optax_row("optax_nadamw", 20, ref.optax_nadamw, {"mu": (0, "mu"), "nu": (0, "nu")}, {
        "lr": ADAM_LR, "betas": BETAS, "eps": ADAM_EPS, "eps_root": Optional(Log(1e-16, 1e-8)),
        "weight_decay": DECAY}),
    optax_row("optimistic_gradient_descent", 21, ref.optax_optimistic_gradient_descent,
              {"previous_gradient": (0, "previous_gradient")}, {
                  "lr": Log(1e-3, 1e-1), "alpha": Uniform(0.2, 2.0), "beta": Uniform(0.0, 1.5)}),
    optax_row("optimistic_adam", 22, ref.optax_optimistic_adam,
              {"mu": (0, "mu"), "nu": (0, "nu"), "previous_gradient": (1, "previous_gradient")}, {
                  "lr": ADAM_LR, "alpha": Uniform(0.2, 2.0), "beta": Uniform(0.0, 1.5), "betas": BETAS,
                  "eps": ADAM_EPS, "eps_root": Optional(Log(1e-16, 1e-8))}),
    # COCOB is invariant to a rescaled gradient, so lr (which only rescales it) is no teeth: alpha is.
    optax_row("cocob", 23, ref.optax_cocob, {k: (2, k) for k in (
        "init_particles", "cumulative_gradients", "scale", "subgradients", "reward")}, {
        "lr": When(Log(0.1, 10.0), 1.0), "alpha": Uniform(10.0, 200.0), "eps": Log(1e-8, 1e-4),
        "weight_decay": DECAY}, teeth="alpha"),
    # The norm of c is summed in the param dtype by the reference, in double by pyopt: ROUNDING.
    Row("mars", PACKAGES, 24, package(ref.mars_package, "exp_avg", "exp_avg_sq", "last_grad", "max_exp_avg_sq"), {
        "lr": ADAM_LR, "betas": Tuple(Uniform(0.3, 0.99), Uniform(0.9, 0.9995)), "gamma": Uniform(0.0, 0.1),
        "eps": ADAM_EPS, "weight_decay": DECAY, "lion": Fixed(False)}, ROUNDING),
    Row("mars_lion", PACKAGES, 25, package(ref.mars_package, "exp_avg", "last_grad"), {
        "lr": Log(1e-4, 1e-2), "betas": Tuple(Uniform(0.3, 0.99), Uniform(0.9, 0.9995)), "gamma": Uniform(0.0, 0.1),
        "eps": ADAM_EPS, "weight_decay": Optional(Log(1e-2, 1.0))}, ROUNDING, sign_flips=flips_through_coupled_decay),
    Row("simplified_ademamix", PACKAGES, 26, package(ref.simplified_ademamix_package, "exp_avg", "exp_avg_sq"), {
        "lr": Log(1e-4, 3e-3), "betas": Tuple(Uniform(0.3, 0.99), Uniform(0.5, 0.999)),
        "alpha": Optional(Uniform(0.0, 20.0)),
        "beta1_warmup": When(Integer(1, 150)), "min_beta1": Uniform(0.0, 0.95), "eps": ADAM_EPS,
        "weight_decay": DECAY}, PACKAGE_SQRT,
        ieee_sqrt=package(ref.simplified_ademamix_package, "exp_avg", "exp_avg_sq")),
    # Resets every 5-40 steps and clipping at a low threshold, so both happen within the 100 steps.
    # The reference rounds 2-D params' steps as p.add_(m/d, alpha) (its mask path): ROUNDING.
    # grad_accu_steps >= 2: clipping while v = 0 (from step 1 when it is 0 or 1) sets every g to 0
    # and keeps v = 0 until the next reset, in the reference and in pyopt alike: nothing to compare.
    Row("spam", PACKAGES, 27, ref.spam_reference({"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}), {
        "lr": ADAM_LR, "betas": BETAS, "density": Fixed(1.0), "seed": Fixed(0), "warmup_epoch": Integer(0, 30),
        "threshold": When(Log(1.0, 100.0)),
        "grad_accu_steps": Integer(2, 20), "update_proj_gap": Integer(5, 40), "eps": ADAM_EPS,
        "weight_decay": DECAY}, ROUNDING),
]
BY_NAME = {row.name: row for row in ROWS}
# C++ rules tested in their own files: sophia (test_sophia.py; its reference also needs
# update_hessian calls). The optimizers written in Python have their own test files too
# (test_muon.py, test_lbfgs.py, test_lr_free.py, test_optax_family.py, ...).
ELSEWHERE = {"sophia"}

_CACHE = RecentCache(keep=2)


def reference_case(row: Row, dtype_name: str, seed: int) -> tuple[dict, list[np.ndarray], list, dict]:
    """(hyper, initial params, grads, reference trajectory) of one matrix case, computed once and
    reused across ISA paths."""

    def compute() -> tuple[dict, list[np.ndarray], list, dict]:
        hyper = row.draw(seed)
        params, grads = row.suite.make_data(row.suite.matrix_data_seed(seed, row.index), DTYPES[dtype_name])
        return hyper, params, grads, row.reference(hyper, params, grads, row.suite.checkpoints)

    return _CACHE.get((row.name, dtype_name, seed), compute)


def cached(key: Any, compute: Callable[[], Any]) -> Any:
    return _CACHE.get(key, compute)
