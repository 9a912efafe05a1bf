r"""Shampoo (Gupta, Koren & Singer, 2018, "Shampoo: Preconditioned Stochastic Tensor Optimization",
https://arxiv.org/abs/1802.09568), as pytorch-optimizer 4.1.0's ``Shampoo`` computes it, in numpy.

A param of order :math:`k` (shape :math:`n_1 \times \dots \times n_k`) keeps one statistic per
dimension, :math:`H_d \leftarrow H_d + G_{(d)} G_{(d)}^\top` (``pre_cond_d``, started at
``matrix_eps * I``; :math:`G_{(d)}` the mode-d unfolding of the gradient), and its inverse root
:math:`H_d^{-1/(2k)}` (``inv_pre_cond_d``), recomputed every ``preconditioning_compute_steps``
steps from an SVD (float32 for float32 params, float64 for float64, as the reference's
``compute_power_svd``). The exponent :math:`-1/(2k)` is the paper's and the reference's; it is
not an option. The gradient is multiplied by each inverse root along its dimension and the param
steps by ``-lr`` times the result:

.. math:: \tilde G = G \times_1 H_1^{-1/2k} \cdots \times_k H_k^{-1/2k};\quad p \leftarrow p - \eta \tilde G

Before that, as the reference: the gradient is negated with ``maximize``; with ``momentum`` > 0 it
becomes :math:`\mathrm{lerp}(G, B, \mu)` where :math:`B` (``momentum_buffer``) is the previous
step's preconditioned gradient (at the first step: the raw gradient); weight decay is coupled
(:math:`G \mathrel{+}= \lambda p`), or decoupled with ``weight_decouple``
(:math:`p \mathrel{*}= 1 - \lambda\eta`, or :math:`1 - \lambda` with ``fixed_decay``). The
inverse roots start at zero, so with ``preconditioning_compute_steps`` = :math:`c > 1` the first
:math:`c - 1` steps do not move the param (as in the reference). The reference's step layout is
followed literally: the last dimension multiplies the transposed unfolding, :math:`G^\top H^{-1/2k}`,
viewed back in the param's shape.

Cost per step of an :math:`m \times n` param: the statistics :math:`mn(m+n)` flops and the
preconditioning :math:`mn(m+n)` (GEMMs); every ``preconditioning_compute_steps`` steps one SVD
per dimension, :math:`O(m^3 + n^3)`, which dominates (a 1024 x 1024 param: two 1024² SVDs).
Memory: two :math:`n_d^2` matrices per dimension plus a param-sized momentum buffer.

Scalars have no statistics (plain SGD with the momentum lerp). The reference cannot step 0-size
params (RuntimeError: it reshapes them to ``(n, -1)``), so pyopt refuses them when they are added,
with a ValueError. A non-finite gradient is a ValueError before anything changes: the
reference's SVD raises on it (at once, or at the next root computation, the statistics keeping it
for ever). The step count is per param (the reference's is the group's ``step()`` calls; equal
when every param has a gradient at every step); ``maximize`` is a group hyperparameter.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ._precond import Layout, PreconditionedOptimizer, flag, integer, lerp, nonnegative, unit_interval
from .optimizer import ParamsLike

__all__ = ["Shampoo"]


class Shampoo(PreconditionedOptimizer):
    r"""Shampoo: Kronecker-factored full-matrix preconditioning (pytorch-optimizer 4.1.0's ``Shampoo``).

    ``preconditioning_compute_steps``: steps between inverse-root (SVD) refreshes.
    ``matrix_eps``: the statistics' initial ``eps * I``. ``weight_decouple`` / ``fixed_decay``:
    decoupled weight decay (scaled by lr unless fixed). See the module docstring for the rule and
    its cost per step.
    """

    name = "shampoo"
    lr_range = (1e-4, 1.0)  # searched by pyopt.tuner

    def __init__(self, params: ParamsLike, lr: float = 1e-3, momentum: float = 0.0, weight_decay: float = 0.0,
                 weight_decouple: bool = False, fixed_decay: bool = False, preconditioning_compute_steps: int = 1,
                 matrix_eps: float = 1e-6, maximize: bool = False) -> None:
        super().__init__(params, dict(
            lr=lr, momentum=momentum, weight_decay=weight_decay, weight_decouple=weight_decouple,
            fixed_decay=fixed_decay, preconditioning_compute_steps=preconditioning_compute_steps,
            matrix_eps=matrix_eps, maximize=maximize))

    def _check_param_extra(self, p: np.ndarray, label: str) -> None:
        if p.size == 0 and p.ndim > 0:
            raise ValueError(f"{label}: Shampoo cannot precondition a 0-size param (shape {p.shape}; "
                             "pytorch-optimizer's Shampoo raises RuntimeError on it): leave it out")

    def _check_hypers(self, group: dict[str, Any], where: str) -> dict[str, Any]:
        out = dict(group)
        out["lr"] = nonnegative(where, group, "lr")
        out["momentum"] = unit_interval(where, group, "momentum")
        out["weight_decay"] = nonnegative(where, group, "weight_decay")
        out["matrix_eps"] = nonnegative(where, group, "matrix_eps")
        out["preconditioning_compute_steps"] = integer(where, group, "preconditioning_compute_steps", 1)
        for key in ("weight_decouple", "fixed_decay", "maximize"):
            out[key] = flag(where, group, key)
        return out

    def _layout(self, p: np.ndarray, group: Mapping[str, Any]) -> Layout:
        out: Layout = {"momentum_buffer": (p.shape, p.dtype)}
        for d, n in enumerate(p.shape):
            out[f"pre_cond_{d}"] = out[f"inv_pre_cond_{d}"] = ((n, n), p.dtype)
        return out

    def _check_step(self, p: np.ndarray, g: np.ndarray, state: dict[str, Any], group: Mapping[str, Any],
                    label: str) -> None:
        super()._check_step(p, g, state, group, label)
        if p.ndim and not np.isfinite(g).all():
            raise ValueError(f"{label}: a non-finite gradient: Shampoo's statistics would keep it and their SVD "
                             "cannot take it (pytorch-optimizer raises too)")

    def _update(self, p: np.ndarray, g: np.ndarray, state: dict[str, Any], group: Mapping[str, Any]) -> None:
        dtype = p.dtype.type
        momentum = group["momentum"]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = g.copy() if momentum > 0.0 else np.zeros_like(p)
            for d, n in enumerate(p.shape):
                state[f"pre_cond_{d}"] = np.eye(n, dtype=p.dtype) * dtype(group["matrix_eps"])
                state[f"inv_pre_cond_{d}"] = np.zeros((n, n), p.dtype)
        with np.errstate(all="ignore"):  # inf and NaN propagate silently, as in torch
            grad = -g if group["maximize"] else g
            if momentum > 0.0:
                grad = lerp(grad, state["momentum_buffer"], momentum)
            weight_decay = group["weight_decay"]
            if weight_decay != 0.0:
                if group["weight_decouple"]:
                    p *= dtype(1.0 - weight_decay * (1.0 if group["fixed_decay"] else group["lr"]))
                else:
                    grad = grad + dtype(weight_decay) * p
            statistics = grad
            order = p.ndim
            refresh = state["step"] % group["preconditioning_compute_steps"] == 0
            for d, n in enumerate(p.shape):
                pre_cond, inv_pre_cond = state[f"pre_cond_{d}"], state[f"inv_pre_cond_{d}"]
                unfolded = np.moveaxis(statistics, d, 0).reshape(n, -1)
                pre_cond += unfolded @ unfolded.T
                grad = np.ascontiguousarray(np.swapaxes(grad, 0, d))
                transposed_shape = grad.shape
                grad = grad.reshape(n, -1)
                if refresh:
                    inv_pre_cond[...] = _inverse_root(pre_cond, 2 * order)
                if d == order - 1:
                    grad = (grad.T @ inv_pre_cond).reshape(p.shape)
                else:
                    grad = (inv_pre_cond @ grad).reshape(transposed_shape)
            state["momentum_buffer"][...] = grad
            p += dtype(-group["lr"]) * grad


def _inverse_root(matrix: np.ndarray, root: int) -> np.ndarray:
    """matrix^(-1/root) from its SVD, in float32 for a float32 matrix and float64 for a float64
    one (the reference's compute_power_svd); zero singular values give inf (and NaN) entries."""
    work = matrix.astype(np.float64 if matrix.dtype == np.float64 else np.float32, copy=False)
    u, s, vh = np.linalg.svd(work, full_matrices=False)
    s = np.power(s, s.dtype.type(-1.0 / root))
    return ((u * s[np.newaxis, :]) @ vh).astype(matrix.dtype, copy=False)
