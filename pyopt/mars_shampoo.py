r"""MARS-Shampoo (Yuan et al., 2024, "MARS: Unleashing the Power of Variance Reduction for Training
Large Models", https://arxiv.org/abs/2411.10438; official code: https://github.com/AGI-Arena/MARS), as
pytorch-optimizer 4.1.0's ``MARS(mars_type="shampoo")`` computes it (its per-param loop: it has no
foreach path for this type), in numpy. ``pyopt.MARS(..., mars_type="shampoo")`` and
``pyopt.create("mars", mars_type="shampoo")`` build this class.

For a param of two or more dimensions, MARS's variance-reduced gradient
``c = g + γ·β1/(1−β1)·(g − g_prev)`` (divided by ``‖c‖`` when that exceeds 1) feeds the momentum
``m``, and the update is ``m / (1−β1)`` made orthogonal: the paper's Shampoo step without
accumulation, ``U Vᵀ`` of the SVD of ``m``, which the official code and pytorch-optimizer
approximate with five quintic Newton–Schulz steps (pytorch-optimizer's
``zero_power_via_newton_schulz_5``: coefficients (3.4445, −4.775, 2.0315), its norm floor the group's
``eps``), scaled by ``sqrt(max(1, rows/cols))``. The iteration is pyopt.muon's, in bfloat16 through
numpy's float32 GEMMs, as pytorch-optimizer's runs in bfloat16 with the same addmm steps (its
bfloat16 result is what the param adds). A param of more than two dimensions is a
``(len(p), -1)`` matrix. Cost per step of an ``r × c`` matrix: the iteration's 15 GEMMs,
``O(r·c·min(r, c))`` flops (an SVD's order), against the ``O(r·c)`` of pyopt.MARS's AdamW step.

Other params (fewer than two dimensions) take, with ``optimize_1d=True``, the MARS-AdamW step of
pyopt.MARS (the reference's ``mars_type='shampoo'`` falls back to it for them), else (the default, as
the reference's) plain AdamW with ``betas_1d``, ``weight_decay_1d`` and the lr times ``lr_1d / lr``.
That ratio is the reference's ``lr_1d_factor``, taken when a param group is made (from its lr and
lr_1d; a state_dict keeps it), so schedules that change lr change the 1-D params' lr in proportion.

Where pyopt differs: a group's ``lr_1d_factor`` (a group entry, as the reference's; pyopt.torch
keeps it in its param groups too) comes from its own lr and lr_1d (the reference's added param
groups inherit the constructor's ratio); an empty param is left alone (the reference cannot
reshape an empty matrix); ``mars_type`` and ``foreach`` are not arguments of this class (it is the
shampoo type; pyopt.MARS takes ``mars_type``).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from ._pybase import PyOptimizer
from ._pyhelpers import add_scaled, betas, flag, number
from .muon import _bf16, _lerp, _zeropower_via_newtonschulz
from .optimizer import ParamsLike

__all__ = ["MARSShampoo"]

NS_COEFFICIENTS = (3.4445, -4.775, 2.0315)  # pytorch-optimizer's default ("original") weights
NS_STEPS = 5
AMS_EPS = 1e-15  # pytorch-optimizer's exp_avg_sq_eps, under the square root


class MARSShampoo(PyOptimizer):
    r"""MARS-Shampoo (Yuan et al., 2024; pytorch-optimizer 4.1.0 ``MARS(mars_type="shampoo")``):
    MARS's variance-reduced momentum, orthogonalized by Newton–Schulz for matrices; AdamW (or
    MARS-AdamW with ``optimize_1d``) for the other params.

    .. math:: c = g + \gamma\tfrac{\beta_1}{1-\beta_1}(g - g_{t-1});\quad
              c \leftarrow c / \lVert c\rVert \text{ if } \lVert c\rVert > 1;\quad
              m \leftarrow \mathrm{lerp}(m, c, 1-\beta_1);\quad
              p \leftarrow p(1-\eta\lambda) - \eta\,\sqrt{\max(1, r/c)}\;\mathrm{NS}\big(m / (1-\beta_1)\big)

    for an ``r × c`` matrix (``weight_decouple=False``: ``λp`` is added to the stored gradient only,
    as in the reference; ``fixed_decay``: ``1 − λ``).
    """

    name = "mars_shampoo"
    lr_range = (1e-4, 3e-2)  # searched by pyopt.tuner
    slots = ("exp_avg", "exp_avg_sq", "last_grad", "max_exp_avg_sq")
    tuples = frozenset({"betas", "betas_1d"})
    derived_group_keys = ("lr_1d_factor",)  # (pyopt.torch keeps it in its param groups)

    def __init__(self, params: ParamsLike, lr: float = 3e-3, betas: tuple[float, float] = (0.95, 0.99),
                 gamma: float = 0.025, weight_decay: float = 0.0, weight_decouple: bool = True,
                 fixed_decay: bool = False, ams_bound: bool = False, eps: float = 1e-8, *,
                 optimize_1d: bool = False, lr_1d: float = 3e-3, betas_1d: tuple[float, float] = (0.9, 0.95),
                 weight_decay_1d: float = 0.1, maximize: bool = False, cautious: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, gamma=gamma, weight_decay=weight_decay,
                                      weight_decouple=weight_decouple, fixed_decay=fixed_decay, ams_bound=ams_bound,
                                      eps=eps, optimize_1d=optimize_1d, lr_1d=lr_1d, betas_1d=betas_1d,
                                      weight_decay_1d=weight_decay_1d, maximize=maximize, cautious=cautious,
                                      lr_1d_factor=None))

    def _new_group(self, param_group: Mapping[str, Any], where: str) -> Any:
        # A group's lr_1d_factor is its own lr_1d / lr, unless it carries one (a state_dict's).
        return super()._new_group({"lr_1d_factor": None, **param_group}, where)

    def _state_shape(self, name: str, p: np.ndarray) -> tuple[int, ...] | None:
        # A matrix's step never reads exp_avg_sq (nor its max): it has none.
        return None if name in ("exp_avg_sq", "max_exp_avg_sq") and p.ndim >= 2 else p.shape

    def _check_hypers(self, group: dict[str, Any], where: str) -> dict[str, Any]:
        out = dict(group)
        out["lr"] = number(where, "lr", group["lr"], 0.0)
        out["lr_1d"] = number(where, "lr_1d", group["lr_1d"], 0.0)
        out["betas"] = betas(where, group["betas"], 2, ("[)", "[)"))
        out["betas_1d"] = betas(where, group["betas_1d"], 2, ("[)", "[)"), "betas_1d")
        out["gamma"] = number(where, "gamma", group["gamma"], 0.0, math.inf, "[)")
        out["weight_decay"] = number(where, "weight_decay", group["weight_decay"], 0.0)
        out["weight_decay_1d"] = number(where, "weight_decay_1d", group["weight_decay_1d"], 0.0)
        out["eps"] = number(where, "eps", group["eps"], 0.0)
        for key in ("weight_decouple", "fixed_decay", "ams_bound", "optimize_1d", "maximize", "cautious"):
            out[key] = flag(where, key, group[key])
        factor = group.get("lr_1d_factor")
        if factor is None:  # a new group: the reference's lr_1d / lr
            if not out["lr"] > 0.0:
                raise ValueError(f"{where}: invalid lr: {group['lr']!r} (must be > 0 when a param group is made: "
                                 "the 1-D params' lr is lr · (lr_1d / lr), the reference's lr_1d_factor)")
            factor = out["lr_1d"] / out["lr"]
        out["lr_1d_factor"] = number(where, "lr_1d_factor", factor, 0.0, math.inf, "[)")
        return out

    def _update(self, p: np.ndarray, g: np.ndarray, state: dict[str, Any], group: Mapping[str, Any]) -> None:
        self._new_state(p, state, skip=() if group["ams_bound"] else ("max_exp_avg_sq",))
        if not p.size:
            return
        dtype = p.dtype.type
        matrix = p.ndim >= 2
        mixed = group["optimize_1d"] or matrix  # the reference's MARS step (else its AdamW for 1-D params)
        lr = group["lr"] if mixed else group["lr"] * group["lr_1d_factor"]
        weight_decay = group["weight_decay"] if mixed else group["weight_decay_1d"]
        if group["maximize"]:
            g = -g
        with np.errstate(all="ignore"):  # inf and NaN propagate silently, as in torch
            update = (self._mars_step(p, g, state, group, matrix) if mixed
                      else self._adamw_step(g, state, group))
            if weight_decay and group["weight_decouple"]:
                p *= dtype(1.0 - weight_decay * (1.0 if group["fixed_decay"] else lr))
            elif weight_decay:  # coupled: reaches only the stored gradient, as in the reference
                g = g.copy()  # (the caller's array)
                add_scaled(g, p, weight_decay)
            add_scaled(p, update, -lr)
            state["last_grad"][...] = g

    def _mars_step(self, p: np.ndarray, g: np.ndarray, state: dict[str, Any], group: Mapping[str, Any],
                   matrix: bool) -> np.ndarray:
        """The reference's optimize_mixed: the clipped correction into the momentum, then the
        orthogonalized momentum (matrices) or MARS-AdamW's step."""
        dtype = p.dtype.type
        beta1, _ = group["betas"]
        exp_avg = state["exp_avg"]
        c = (g - state["last_grad"]) * dtype(group["gamma"] * (beta1 / (1.0 - beta1))) + g
        norm = np.sqrt(np.sum(np.square(c), dtype=p.dtype))
        if norm > 1.0:  # (NaN: no clipping, as the reference's `if c_t_norm > 1.0`)
            c = c / norm
        exp_avg[...] = _lerp(exp_avg, c, 1.0 - beta1)
        update = _cautious(exp_avg, g) if group["cautious"] else exp_avg.copy()
        if not matrix:
            return _adam_direction(update, c, state, group["betas"], state["step"], group)
        rows, cols = p.shape[0], p.shape[1]
        update *= dtype(1.0 / (1.0 - beta1))
        ortho = _zeropower_via_newtonschulz(update.reshape(rows, -1), NS_COEFFICIENTS, NS_STEPS, group["eps"])
        factor = math.sqrt(max(1.0, rows / cols))
        if factor != 1.0:  # a bfloat16 times the factor: float32, rounded to bfloat16
            ortho = _bf16(ortho * np.float32(factor))
        return ortho.reshape(p.shape).astype(p.dtype)

    def _adamw_step(self, g: np.ndarray, state: dict[str, Any], group: Mapping[str, Any]) -> np.ndarray:
        """The reference's optimize_1d: AdamW's direction with betas_1d (no correction, no clip)."""
        exp_avg = state["exp_avg"]
        exp_avg[...] = _lerp(exp_avg, g, 1.0 - group["betas_1d"][0])
        update = _cautious(exp_avg, g) if group["cautious"] else exp_avg.copy()
        return _adam_direction(update, g, state, group["betas_1d"], state["step"], group)


def _adam_direction(update: np.ndarray, c: np.ndarray, state: dict[str, Any], betas_: tuple[float, float], step: int,
                    group: Mapping[str, Any]) -> np.ndarray:
    """``update`` (the momentum, maybe masked) over Adam's bias-corrected denominator, after the
    second moment takes ``c``: the reference's exp_avg_sq update, apply_ams_bound and debias."""
    dtype = update.dtype.type
    beta1, beta2 = betas_
    exp_avg_sq = state["exp_avg_sq"]
    exp_avg_sq *= dtype(beta2)
    exp_avg_sq += dtype(1.0 - beta2) * c * c
    second = exp_avg_sq
    if group["ams_bound"]:
        np.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
        second = state["max_exp_avg_sq"]
    denom = np.sqrt(second + dtype(AMS_EPS)) + dtype(group["eps"])
    denom /= dtype(math.sqrt(1.0 - math.pow(beta2, step)))
    denom *= dtype(1.0 - math.pow(beta1, step))
    return update / denom


def _cautious(update: np.ndarray, g: np.ndarray) -> np.ndarray:
    """pytorch-optimizer's apply_cautious on a copy: zero where the update and the gradient
    disagree in sign, the rest scaled by numel / (count kept + 1)."""
    dtype = update.dtype.type
    mask = (update * g > 0).astype(update.dtype)
    mask *= dtype(mask.size) / (np.sum(mask, dtype=update.dtype) + dtype(1))
    return update * mask
