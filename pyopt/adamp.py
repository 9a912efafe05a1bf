r"""AdamP (Heo et al., 2021, "AdamP: Slowing Down the Slowdown for Momentum Optimizers on
Scale-invariant Weights", ICLR; official code: https://github.com/clovaai/AdamP), as
pytorch-optimizer 4.1.0's ``AdamP`` computes it (its per-param loop, ``foreach=False``), in numpy.

AdamP is Adam whose update loses its radial component (the part along the weight) on weights that
look scale-invariant: those whose gradient is nearly orthogonal to the weight. That test and the
projection need reductions per output channel (each row of the param seen as ``(shape[0], -1)``)
and over the whole tensor, chosen per tensor at every step. The C++ driver's reduction passes
give one scalar per tensor, not one per channel, so AdamP is written here in vectorized numpy
(one pass per reduction), not as a C++ rule.

Where pyopt differs from pytorch-optimizer 4.1.0: its step count is per param (pytorch-optimizer
counts per group, so a param skipped with a ``None`` gradient gets another bias correction there);
an empty param of two or more dimensions is left alone (pytorch-optimizer raises, it cannot take
the maximum of no cosines). As in pytorch-optimizer, ``weight_decouple=False`` adds the L2 term to
the gradient only after the update is formed, so it does not change the step (the paper and the
official code decay decoupled only: keep the default).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from ._pyhelpers import add_scaled, betas, flag, number
from ._pybase import PyOptimizer
from .muon import _lerp
from .optimizer import ParamsLike

__all__ = ["AdamP"]


class AdamP(PyOptimizer):
    r"""AdamP (Heo et al., 2021; pytorch-optimizer 4.1.0 ``AdamP``): Adam whose update is projected
    off the weight's direction on scale-invariant weights (those of two or more dimensions).

    .. math:: m \leftarrow \mathrm{lerp}(m, g, 1-\beta_1);\quad v \leftarrow \beta_2 v + (1-\beta_2) g^2;\quad
              u = \frac{\sqrt{1-\beta_2^t}}{\sqrt v + \epsilon}\,(\text{nesterov} ? \mathrm{lerp}(m, g, 1-\beta_1) : m)

    Then, for a param of two or more dimensions, first per output channel (rows of
    ``p.reshape(len(p), -1)``), else over the whole tensor: if every |cos(g, p)| is below
    ``delta / sqrt(n)`` (``n`` the elements per row), ``u`` loses its projection on ``p`` (per row)
    and weight decay is scaled by ``wd_ratio``. Finally ``p ← p(1 − λ·η·r) − η/(1−β_1^t)·u``
    (``λ`` without ``η`` if ``fixed_decay``).
    """

    name = "adamp"
    lr_range = (1e-5, 1e-1)  # searched by pyopt.tuner
    slots = ("exp_avg", "exp_avg_sq")
    tuples = frozenset({"betas"})

    def __init__(self, params: ParamsLike, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 weight_decay: float = 0.0, weight_decouple: bool = True, fixed_decay: bool = False,
                 delta: float = 0.1, wd_ratio: float = 0.1, nesterov: bool = False, eps: float = 1e-8, *,
                 maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay, weight_decouple=weight_decouple,
                                      fixed_decay=fixed_decay, delta=delta, wd_ratio=wd_ratio, nesterov=nesterov,
                                      eps=eps, maximize=maximize))

    def _check_hypers(self, group: dict[str, Any], where: str) -> dict[str, Any]:
        out = dict(group)
        out["lr"] = number(where, "lr", group["lr"], 0.0)
        out["betas"] = betas(where, group["betas"], 2, ("[)", "[)"))
        out["weight_decay"] = number(where, "weight_decay", group["weight_decay"], 0.0)
        out["delta"] = number(where, "delta", group["delta"], -math.inf, math.inf, "()")
        out["wd_ratio"] = number(where, "wd_ratio", group["wd_ratio"], 0.0, 1.0, "[)")
        out["eps"] = number(where, "eps", group["eps"], 0.0)
        for key in ("weight_decouple", "fixed_decay", "nesterov", "maximize"):
            out[key] = flag(where, key, group[key])
        return out

    def _update(self, p: np.ndarray, g: np.ndarray, state: dict[str, Any], group: Mapping[str, Any]) -> None:
        self._new_state(p, state)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        dtype = p.dtype.type
        beta1, beta2 = group["betas"]
        eps, lr, step = group["eps"], group["lr"], state["step"]
        if group["maximize"]:
            g = -g
        with np.errstate(all="ignore"):  # inf and NaN propagate silently, as in torch
            exp_avg[...] = _lerp(exp_avg, g, 1.0 - beta1)
            exp_avg_sq *= dtype(beta2)
            exp_avg_sq += dtype(1.0 - beta2) * g * g
            inv_denom = 1 / (np.sqrt(exp_avg_sq) + dtype(eps)) * dtype(math.sqrt(1.0 - beta2 ** step))
            update = (_lerp(exp_avg, g, 1.0 - beta1) if group["nesterov"] else exp_avg) * inv_denom
            ratio = 1.0
            if p.ndim > 1 and p.size:
                ratio = _project(p, g, update, group["delta"], group["wd_ratio"], eps)
            if group["weight_decay"] and group["weight_decouple"]:
                p *= dtype(1.0 - group["weight_decay"] * (1.0 if group["fixed_decay"] else lr) * ratio)
            add_scaled(p, update, -lr / (1.0 - beta1 ** step))


def _project(p: np.ndarray, g: np.ndarray, update: np.ndarray, delta: float, wd_ratio: float, eps: float) -> float:
    """Removes from ``update`` (in place) its component along ``p`` if ``p`` looks scale-invariant,
    per output channel first, else per tensor; returns the weight decay ratio (``wd_ratio`` if it
    projected, else 1)."""
    for rows in (p.shape[0], 1):
        p_rows, g_rows = p.reshape(rows, -1), g.reshape(rows, -1)
        cosine = np.abs(_cosine_similarity(g_rows, p_rows, eps))
        if cosine.max() < delta / math.sqrt(p_rows.shape[1]):
            p_unit = p_rows / (np.linalg.norm(p_rows, axis=1, keepdims=True) + p.dtype.type(eps))
            u_rows = update.reshape(rows, -1)
            radial = np.sum(p_unit * u_rows, axis=1, keepdims=True)
            u_rows -= p_unit * radial
            return wd_ratio
    return 1.0


def _cosine_similarity(x: np.ndarray, y: np.ndarray, eps: float) -> np.ndarray:
    """torch.nn.functional.cosine_similarity(x, y, dim=1, eps): each row divided by its norm
    (clamped below at eps) first, then the dot products."""
    eps = x.dtype.type(eps)
    x_norm = np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)
    y_norm = np.maximum(np.linalg.norm(y, axis=1, keepdims=True), eps)
    return np.sum((x / x_norm) * (y / y_norm), axis=1)
