r"""Kron: PSGD with Kronecker-factored preconditioners (Xi-Lin Li, "Preconditioned Stochastic
Gradient Descent", IEEE TNNLS 2018, https://arxiv.org/abs/1512.04202, and "Black Box Lie Group
Preconditioners for SGD", 2022, https://arxiv.org/abs/2211.04422), as pytorch-optimizer 4.1.0's
``Kron`` computes it (which follows Evan Walters' kron_torch/PSGD-Kron), in numpy.

Each param of shape :math:`n_1 \times \dots \times n_k` keeps a momentum buffer :math:`m` and one
factor :math:`Q_d` per dimension: an upper-triangular :math:`n_d \times n_d` matrix, or a vector
(a diagonal factor) when :math:`n_d = 1`, :math:`n_d >` ``max_size_triangular``, the param has
fewer than ``min_ndim_triangular`` dimensions, or ``memory_save_mode`` says so (``'one_diag'``:
the largest dimension; ``'smart_one_diag'``: the largest if strictly larger than the others;
``'all_diag'``: all). The factors start at ``precondition_init_scale ** (1/k)`` times identity.
A step:

1. :math:`g \leftarrow -g` with ``maximize``; coupled weight decay :math:`g \mathrel{+}= \lambda p`
   for params of 2+ dimensions when not ``weight_decouple``;
2. :math:`m \leftarrow \mu m + (1 - \mu) g`, :math:`\hat m = m / (1 - \mu^t)`;
3. with probability about ``pre_conditioner_update_probability`` (see below), each factor moves
   one step (``precondition_lr``) along the PSGD criterion's gradient: with a Gaussian vector
   :math:`v`, :math:`A = \hat m \times_d Q_d` and :math:`B = v \times_d Q_d^{-\top}` (triangular
   solves, in float32 as the reference's), :math:`Q_d \mathrel{-}= \eta_p\, \mathrm{triu}(A_{(d)}A_{(d)}^\top
   - B_{(d)}B_{(d)}^\top) Q_d / \lVert A_{(d)}A_{(d)}^\top + B_{(d)}B_{(d)}^\top\rVert` (a spectral-norm lower
   bound; the diagonal factors use the elementwise form and the max norm);
4. the update :math:`u = \hat m \times_d Q_d^\top Q_d`, scaled down to RMS 1.1 if larger, plus
   decoupled weight decay :math:`\lambda p` (2+ dimensions); :math:`p \mathrel{-}= \eta u`.

With ``balance_prob`` probability (at steps that update the preconditioner) the factors of each
param of 2+ dimensions are rescaled to equal max norms (their product unchanged).

Randomness, explicit and reproducible: the optimizer owns a ``numpy.random.Generator`` (PCG64,
from ``seed``, 0 by default; None seeds it from the OS). Each step draws, in this order, one uniform (the
balance draw, drawn whether or not it is used, as the reference's ``np.random.random()``), then,
if the preconditioner is updated, one standard normal array per param with a gradient, in
param order (the reference's ``torch.randn_like``), in the preconditioner's dtype. The
generator's state, the number of steps and the update counter are saved in the state_dict (its
``global_state`` entry), so a resumed run draws what the uninterrupted run would have.

Update probability: a float in [0, 1], or None for the reference's schedule
``clamp(exp(-0.001 (t - 500)), 0.03, 1)`` (computed in float32, as the reference's; t = steps
taken). The preconditioner is updated when the steps counted since the last update reach
``1 / probability`` (the reference's deterministic counter, not a coin flip). The reference also
takes a callable schedule; a checkpoint cannot hold one, so pyopt refuses it (TypeError): set the
first group's ``pre_conditioner_update_probability`` between steps instead. As the reference, the
probability and ``balance_prob`` are read from the first param group.

Dtypes: ``precondition_dtype`` ('float32' by default, as the reference; None: the param's) holds
the factors and :math:`\hat m`; ``mu_dtype`` (None: the param's) the momentum. torch dtypes, numpy
dtypes and their names are accepted, float32 and float64 only (bfloat16/float16 are refused).

Cost per step of an :math:`m \times n` param (both factors triangular): the update applies
:math:`Q^\top Q` along each dimension, four GEMMs, :math:`2mn(m+n)` flops; a preconditioner
update adds :math:`A`, two triangular solves (TRSM) and four Gram GEMMs, :math:`O(mn(m+n) + m^3
+ n^3)`. No decomposition is ever computed. Memory: the momentum plus :math:`n_d^2` per
triangular factor.

How pyopt differs: params of 14+ dimensions are refused when added (the reference raises at the
first step); 0-size params too (the reference cannot step them: RuntimeError); bias correction
uses the param's own step count (the reference: the group's ``step()`` calls; equal when every
param has a gradient at every step); with ``momentum_into_precondition_update=False`` the raw
gradient is cast to the preconditioner's dtype (the reference's einsum then fails on mixed
dtypes).
"""
from __future__ import annotations

import math
import numbers
from string import ascii_lowercase
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ._precond import Layout, PreconditionedOptimizer, flag, integer, nonnegative, unit_interval
from ._pybase import real
from .optimizer import ParamsLike, _locked

__all__ = ["Kron"]

MEMORY_SAVE_MODES = (None, "one_diag", "smart_one_diag", "all_diag")
# The reference's eps: torch.finfo(torch.bfloat16).tiny (= float32's smallest normal, 2**-126).
EPS = 2.0**-126
MAX_NDIM = 13  # the reference's einsum letters run out beyond


class Kron(PreconditionedOptimizer):
    r"""PSGD Kron: Kronecker-factored (triangular or diagonal) preconditioners fitted by PSGD,
    applied to momentum (pytorch-optimizer 4.1.0's ``Kron``).

    ``seed``: seeds the optimizer's random generator when it is built (default 0, so runs are
    reproducible; None: from the OS). It is a hyperparameter (the first group's is used) so that
    param groups and pyopt.torch can carry it; the generator's state is in the state_dict. See
    the module docstring for the rule, the randomness, the update probability and the cost per
    step.
    """

    name = "kron"
    lr_range = (1e-4, 3e-2)  # searched by pyopt.tuner
    optimizer_wide_state = True  # "global_state" in the state_dict; pyopt.torch keeps it per group

    def __init__(self, params: ParamsLike, lr: float = 1e-3, momentum: float = 0.9, weight_decay: float = 0.0,
                 weight_decouple: bool = True, pre_conditioner_update_probability: float | None = None,
                 max_size_triangular: int = 8192, min_ndim_triangular: int = 2, memory_save_mode: str | None = None,
                 momentum_into_precondition_update: bool = True, mu_dtype: Any = None,
                 precondition_dtype: Any = "float32", balance_prob: float = 0.01, maximize: bool = False, *,
                 precondition_lr: float = 0.1, precondition_init_scale: float = 1.0, seed: int | None = 0) -> None:
        super().__init__(params, dict(
            lr=lr, momentum=momentum, weight_decay=weight_decay, weight_decouple=weight_decouple,
            pre_conditioner_update_probability=pre_conditioner_update_probability,
            max_size_triangular=max_size_triangular, min_ndim_triangular=min_ndim_triangular,
            memory_save_mode=memory_save_mode, momentum_into_precondition_update=momentum_into_precondition_update,
            mu_dtype=mu_dtype, precondition_dtype=precondition_dtype, balance_prob=balance_prob, maximize=maximize,
            precondition_lr=precondition_lr, precondition_init_scale=precondition_init_scale, seed=seed))
        self._rng = np.random.default_rng(self.param_groups[0]["seed"])
        self._steps = 0  # step() calls (the reference's first group 'step')
        self._update_counter = 0  # steps since the last preconditioner update (the reference's 'update_counter')
        self._this_step: tuple[bool, bool] | None = None  # (update the preconditioner, balance) of this step

    def _check_param_extra(self, p: np.ndarray, label: str) -> None:
        if p.ndim > MAX_NDIM:
            raise ValueError(f"{label}: Kron takes params of at most {MAX_NDIM} dimensions (the reference's einsum "
                             f"letters), got {p.ndim}")
        if p.size == 0 and p.ndim > 0:
            raise ValueError(f"{label}: Kron cannot precondition a 0-size param (shape {p.shape}; "
                             "pytorch-optimizer's Kron raises RuntimeError on it): leave it out")

    def _check_hypers(self, group: dict[str, Any], where: str) -> dict[str, Any]:
        out = dict(group)
        out["lr"] = nonnegative(where, group, "lr")
        out["momentum"] = unit_interval(where, group, "momentum")
        out["weight_decay"] = nonnegative(where, group, "weight_decay")
        out["balance_prob"] = unit_interval(where, group, "balance_prob", closed_right=True)
        out["precondition_lr"] = nonnegative(where, group, "precondition_lr")
        out["precondition_init_scale"] = real(where, "precondition_init_scale", group["precondition_init_scale"])
        if not (out["precondition_init_scale"] > 0.0 and math.isfinite(out["precondition_init_scale"])):
            raise ValueError(f"{where}: invalid precondition_init_scale: {out['precondition_init_scale']} "
                             "(must be finite and > 0)")
        probability = group["pre_conditioner_update_probability"]
        if callable(probability):
            raise TypeError(f"{where}: pre_conditioner_update_probability must be a float in [0, 1] or None (the "
                            "default schedule); a callable schedule cannot be saved in a checkpoint: set the first "
                            "group's value between steps instead")
        if probability is not None:
            out["pre_conditioner_update_probability"] = unit_interval(
                where, group, "pre_conditioner_update_probability", closed_right=True)
        out["max_size_triangular"] = integer(where, group, "max_size_triangular", 0)
        out["min_ndim_triangular"] = integer(where, group, "min_ndim_triangular", 0)
        if group["memory_save_mode"] not in MEMORY_SAVE_MODES:
            raise ValueError(f"{where}: invalid memory_save_mode: {group['memory_save_mode']!r} "
                             "(must be None, 'one_diag', 'smart_one_diag' or 'all_diag')")
        for key in ("weight_decouple", "momentum_into_precondition_update", "maximize"):
            out[key] = flag(where, group, key)
        seed = group["seed"]
        if seed is not None and (isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral)
                                 or seed < 0):
            raise TypeError(f"{where}: seed must be None or an int >= 0, got {seed!r}")
        for key in ("mu_dtype", "precondition_dtype"):
            out[key] = _dtype_name(where, key, group[key])
        return out

    def _layout(self, p: np.ndarray, group: Mapping[str, Any]) -> Layout:
        mu_dtype = np.dtype(group["mu_dtype"] or p.dtype)
        q_dtype = np.dtype(group["precondition_dtype"] or p.dtype)
        out: Layout = {"momentum_buffer": (p.shape, mu_dtype)}
        if p.ndim == 0:
            out["Q_0"] = ((), q_dtype)
        for d, (n, diagonal) in enumerate(zip(p.shape, _diagonal_dims(p.shape, group))):
            out[f"Q_{d}"] = ((n,) if diagonal else (n, n), q_dtype)
        return out

    # ----- the step -----------------------------------------------------------------------------
    @_locked
    def step(self, grads: Any) -> None:
        """As ``PyOptimizer.step``; the step's random draws and counters are advanced once the
        step is checked (a refused step draws nothing), also when no param has a gradient."""
        self._this_step = None
        try:
            super().step(grads)
            if self._this_step is None:
                self._decide()
        finally:
            self._this_step = None

    def _decide(self) -> tuple[bool, bool]:
        """This step's (update the preconditioner, balance), the reference's rules on the first
        group's values; advances the counters and draws the balance uniform."""
        first = self.param_groups[0]
        probability = first["pre_conditioner_update_probability"]
        counter = self._update_counter + 1
        if probability is None:
            probability = _default_schedule(self._steps)
            update = bool(probability > 0 and counter >= np.float32(1.0) / probability)
        else:
            update = bool(probability > 0 and counter >= 1.0 / probability)
        self._update_counter = 0 if update else counter
        balance = bool(self._draw_uniform() < first["balance_prob"] and update)
        self._steps += 1
        self._this_step = (update, balance)
        return self._this_step

    def _draw_uniform(self) -> float:
        return float(self._rng.random())

    def _draw_normal(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return self._rng.standard_normal(shape, dtype=dtype)

    def _update(self, p: np.ndarray, g: np.ndarray, state: dict[str, Any], group: Mapping[str, Any]) -> None:
        update, balance = self._this_step if self._this_step is not None else self._decide()
        layout = self._layout(p, group)
        if "momentum_buffer" not in state:
            scale = group["precondition_init_scale"]
            scale = scale if p.ndim == 0 else math.pow(scale, 1.0 / p.ndim)
            for name, (shape, dtype) in layout.items():
                if name == "momentum_buffer":
                    state[name] = np.zeros(shape, dtype)
                else:
                    state[name] = (np.eye(shape[0], dtype=dtype) * dtype.type(scale) if len(shape) == 2
                                   else np.full(shape, scale, dtype))
        factors = [state[f"Q_{d}"] for d in range(max(p.ndim, 1))]
        q_dtype = factors[0].dtype
        momentum = group["momentum"]
        with np.errstate(all="ignore"):  # inf and NaN propagate silently, as in torch
            grad = -g if group["maximize"] else g
            if p.ndim >= 2 and not group["weight_decouple"] and group["weight_decay"] != 0.0:
                grad = grad + p.dtype.type(group["weight_decay"]) * p
            buf = state["momentum_buffer"]
            buf *= buf.dtype.type(momentum)
            buf += (buf.dtype.type(1.0 - momentum) * grad).astype(buf.dtype, copy=False)
            debiased = (buf / buf.dtype.type(1.0 - math.pow(momentum, state["step"]))).astype(q_dtype, copy=False)
            if p.ndim > 1 and balance:
                _balance(factors)
            if update:
                noise = self._draw_normal(p.shape, q_dtype)
                target = debiased if group["momentum_into_precondition_update"] else grad.astype(q_dtype)
                _update_factors(factors, noise, target, group["precondition_lr"])
            direction = _precondition(factors, debiased).astype(p.dtype, copy=False)
            rms = np.sqrt(np.mean(direction * direction))
            direction = direction * min(p.dtype.type(1.1) / (rms + p.dtype.type(1e-6)), p.dtype.type(1.0))
            if group["weight_decay"] != 0.0 and p.ndim >= 2 and group["weight_decouple"]:
                direction = direction + p.dtype.type(group["weight_decay"]) * p
            p += p.dtype.type(-group["lr"]) * direction

    # ----- the optimizer-wide state -------------------------------------------------------------
    def _state_dict_extras(self) -> dict[str, Any]:
        return {"global_state": {"steps": self._steps, "update_counter": self._update_counter,
                                 "rng": self._rng.bit_generator.state}}

    def _restore_state(self, entries: dict[int, Mapping[str, Any]],
                       state_dict: Mapping[str, Any]) -> Callable[[], None]:
        who = self._owner_label
        put_state = super()._restore_state(entries, state_dict)
        saved = state_dict.get("global_state")
        if saved is None:  # (a checkpoint without one: counters restart, the generator goes on)
            steps, counter, rng = 0, 0, self._rng
        else:
            if not isinstance(saved, Mapping) or set(saved) != {"steps", "update_counter", "rng"}:
                raise ValueError(f"{who}: state_dict 'global_state' must be a dict of 'steps', 'update_counter' and "
                                 f"'rng', got {saved!r:.120}")
            steps, counter = (_count(saved[k], f"{who}: state_dict global_state {k!r}")
                              for k in ("steps", "update_counter"))
            rng = np.random.Generator(np.random.PCG64())
            try:
                rng.bit_generator.state = dict(saved["rng"])
            except (TypeError, ValueError, KeyError) as exc:
                raise ValueError(f"{who}: state_dict global_state 'rng' is not a PCG64 state ({exc})") from None

        def put_in_place() -> None:
            put_state()
            self._rng, self._steps, self._update_counter = rng, steps, counter
        return put_in_place

    @_locked
    def zero_state(self) -> None:
        """Forget all state (steps restart at 1, the update counter at 0); hyperparameters and
        the random generator are kept."""
        super().zero_state()
        self._steps = self._update_counter = 0


# ----- the reference's numerics ---------------------------------------------------------------------
def _default_schedule(step: int) -> np.float32:
    """precondition_update_prob_schedule()(step): clamp(1 * exp(-0.001 (step - 500)), 0.03, 1) in float32."""
    one = np.float32(1.0)
    probability = one * np.exp(np.float32(-0.001) * (np.float32(step) - np.float32(500)))
    return np.clip(probability, np.float32(0.03), one)


def _diagonal_dims(shape: tuple[int, ...], group: Mapping[str, Any]) -> list[bool]:
    """Which factors are diagonal (vectors), as the reference's initialize_q_expressions."""
    mode = group["memory_save_mode"]
    marked = [mode == "all_diag"] * len(shape)
    if shape and mode == "one_diag":
        marked[np.argsort(shape)[::-1][0]] = True
    elif mode == "smart_one_diag":
        ordered = sorted(shape)
        if len(shape) >= 2 and ordered[-1] > ordered[-2]:
            marked[np.argsort(shape)[::-1][0]] = True
    return [n == 1 or n > group["max_size_triangular"] or len(shape) < group["min_ndim_triangular"] or m
            for n, m in zip(shape, marked)]


def _along(x: np.ndarray, d: int, factor: np.ndarray, transpose: bool = False) -> np.ndarray:
    """x with ``factor`` (or its transpose) applied along dimension d: a GEMM for a matrix, a
    broadcast product for a vector (a diagonal factor)."""
    if factor.ndim < 2:
        if x.ndim == 0:
            return x * factor
        return x * factor.reshape((-1,) + (1,) * (x.ndim - 1 - d))
    return np.moveaxis(np.tensordot(factor.T if transpose else factor, x, axes=([1], [d])), 0, d)


def _solve_along(x: np.ndarray, d: int, factor: np.ndarray) -> np.ndarray:
    """x ×_d Q⁻ᵀ: along dimension d each vector x becomes x Q⁻¹ (the reference's
    solve_triangular_right: a TRSM in float32 whatever the dtypes, no singularity check), or
    x / q for a diagonal factor."""
    if factor.ndim < 2:
        if x.ndim == 0:
            return x / factor
        return x / factor.reshape((-1,) + (1,) * (x.ndim - 1 - d))
    from scipy.linalg import blas  # (here, not at import: scipy is needed by Kron only, not by pyopt)

    moved = np.moveaxis(x, d, -1)
    rows = np.array(moved.reshape(-1, moved.shape[-1]), dtype=np.float32, order="F")
    solved = blas.strsm(1.0, np.asarray(factor, np.float32, order="F"), rows, side=1, lower=0, trans_a=0,
                        overwrite_b=1)
    return np.moveaxis(solved.reshape(moved.shape).astype(x.dtype, copy=False), -1, d)


def _gram(x: np.ndarray, d: int, diagonal: bool) -> np.ndarray:
    """The mode-d Gram matrix of x (its diagonal for a diagonal factor: sums of squares)."""
    if x.ndim == 0:
        return x * x
    if diagonal:
        return np.sum(x * x, axis=tuple(k for k in range(x.ndim) if k != d))
    unfolded = np.moveaxis(x, d, 0).reshape(x.shape[d], -1)
    return unfolded @ unfolded.T


def _update_factors(factors: list[np.ndarray], noise: np.ndarray, target: np.ndarray, lr: float) -> None:
    """One PSGD step of every factor (the reference's update_precondition)."""
    a = target
    for d, factor in enumerate(factors):
        a = _along(a, d, factor)
    b = noise
    for d, factor in enumerate(factors):
        b = _solve_along(b, d, factor)
    dtype = factors[0].dtype.type
    for d, factor in enumerate(factors):
        diagonal = factor.ndim < 2
        term1, term2 = _gram(a, d, diagonal), _gram(b, d, diagonal)
        change = (term1 - term2) * dtype(lr)
        if diagonal:
            change = change * factor
            change = change / (np.max(np.abs(term1 + term2)) + dtype(EPS))
        else:
            change = np.triu(change) / (_norm_lower_bound(term1 + term2) + dtype(EPS))
            change = change @ factor
        factor -= change


def _norm_lower_bound(a: np.ndarray) -> Any:
    """The reference's norm_lower_bound of a matrix: a lower bound of its spectral norm from one
    power-iteration step started at its largest row (or column)."""
    max_abs = np.max(np.abs(a))
    tiny = np.finfo(a.dtype).tiny
    a = a / (max_abs if max_abs > 0 else a.dtype.type(1.0))
    squares = a * a
    columns, rows = np.sum(squares, axis=0), np.sum(squares, axis=1)
    i, j = int(np.argmax(columns)), int(np.argmax(rows))
    if columns[i] > rows[j]:
        x = a[:, i] @ a
        return max_abs * np.linalg.norm((x / max(np.linalg.norm(x), tiny)) @ a.T)
    x = a @ a[j, :]
    return max_abs * np.linalg.norm(a.T @ (x / max(np.linalg.norm(x), tiny)))


def _precondition(factors: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    """x ×_d Q_dᵀ Q_d for every d (the reference's get_precondition_grad)."""
    if x.ndim == 0:
        return factors[0] * factors[0] * x
    for d, factor in enumerate(factors):
        x = _along(_along(x, d, factor), d, factor, transpose=True)
    return x if x.flags.c_contiguous else np.array(x, order="C")


def _balance(factors: list[np.ndarray]) -> None:
    """The reference's balance_q: each factor rescaled to the geometric mean of their max norms."""
    norms = np.array([np.max(np.abs(f)) for f in factors], dtype=factors[0].dtype)
    geometric_mean = np.prod(norms) ** factors[0].dtype.type(1.0 / len(factors))
    for factor, norm in zip(factors, geometric_mean / norms):
        factor *= norm


def _dtype_name(where: str, key: str, value: Any) -> str | None:
    """None, or 'float32' / 'float64' from a torch dtype, a numpy dtype or a name."""
    if value is None:
        return None
    if isinstance(value, str) or str(value).startswith("torch."):
        name = str(value).removeprefix("torch.")
    else:
        try:
            name = np.dtype(value).name
        except TypeError:
            name = repr(value)
    if name not in ("float32", "float64"):
        raise ValueError(f"{where}: invalid {key}: {value!r} (must be None, float32 or float64)")
    return name


def _count(value: Any, what: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 0:
        raise TypeError(f"{what} must be an int >= 0, got {value!r:.80}")
    return int(value)
