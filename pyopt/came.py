r"""CAME (Luo et al., 2023, "CAME: Confidence-guided Adaptive Memory Efficient Optimization", ACL;
official code: https://github.com/huawei-noah/Pretrained-Language-Model/tree/master/CAME), as
pytorch-optimizer 4.1.0's ``CAME`` computes it (its per-param loop, ``foreach=False``), in numpy.

Like Adafactor, a param of two or more dimensions (a matrix, or a batch of matrices: the last two
axes) keeps its second moment factored, one running mean of g² per row and one per column; CAME
adds a momentum of the clipped update and a second factored running mean, of the squared residual
between the update and that momentum (the "instability"), whose inverse square root weighs the
momentum (the confidence). Those row and column means make it no element-wise C++ rule; it is
vectorized numpy. Vectors keep full second moments and step with the plain momentum.

Where pyopt differs from pytorch-optimizer 4.1.0: ``clip_threshold``, ``eps1`` and ``eps2`` are
per-group hyperparameters here (pytorch-optimizer keeps the constructor's for every group), and its
``RMS`` state entry (the param's RMS, which no update reads) is not kept.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from ._pyhelpers import add_scaled, betas, flag, number
from ._pybase import PyOptimizer
from .muon import _lerp
from .optimizer import ParamsLike

__all__ = ["CAME"]

FACTORED = ("exp_avg_sq_row", "exp_avg_sq_col", "exp_avg_res_row", "exp_avg_res_col")


class CAME(PyOptimizer):
    r"""CAME (Luo et al., 2023; pytorch-optimizer 4.1.0 ``CAME``): Adafactor's factored second moment,
    momentum of the RMS-clipped update, and a factored confidence from the update's residual.

    .. math:: V = \mathrm{factored}_{\beta_2}(g^2 + \epsilon_1);\quad
              u = \frac{g/\sqrt V}{\max(1, \mathrm{RMS}(g/\sqrt V)/d)};\quad m \leftarrow \mathrm{lerp}(m, u, 1-\beta_1);\quad
              S = \mathrm{factored}_{\beta_3}((u - m)^2 + \epsilon_2);\quad p \leftarrow p - \eta\, m/\sqrt S

    where ``factored_β(x)`` keeps running means of ``x`` over each row (``exp_avg_*_row``, shape
    ``p.shape[:-1]``) and each column (``exp_avg_*_col``, ``p.shape[:-2] + p.shape[-1:]``) and
    approximates ``x`` by ``row·col / mean(row)``; ``d`` is ``clip_threshold``. A param of fewer than
    two dimensions keeps ``exp_avg_sq`` in full and steps by ``m``. ``ams_bound`` keeps the running
    maximum ``exp_avg_sq_hat`` of ``V`` and uses ``exp_avg_sq_hat / β_2`` instead.
    """

    name = "came"
    lr_range = (1e-5, 1e-1)  # searched by pyopt.tuner
    slots = ("exp_avg", *FACTORED, "exp_avg_sq", "exp_avg_sq_hat")
    tuples = frozenset({"betas"})

    def __init__(self, params: ParamsLike, lr: float = 2e-4, betas: tuple[float, float, float] = (0.9, 0.999, 0.9999),
                 weight_decay: float = 0.0, weight_decouple: bool = True, fixed_decay: bool = False,
                 clip_threshold: float = 1.0, ams_bound: bool = False, eps1: float = 1e-30, eps2: float = 1e-16, *,
                 maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay, weight_decouple=weight_decouple,
                                      fixed_decay=fixed_decay, clip_threshold=clip_threshold, ams_bound=ams_bound,
                                      eps1=eps1, eps2=eps2, maximize=maximize))

    def _state_shape(self, name: str, p: np.ndarray) -> tuple[int, ...] | None:
        factored = p.ndim >= 2
        if name in ("exp_avg", "exp_avg_sq_hat"):
            return p.shape
        if name == "exp_avg_sq":
            return None if factored else p.shape
        if not factored:
            return None
        return p.shape[:-1] if name.endswith("_row") else p.shape[:-2] + p.shape[-1:]

    def _check_hypers(self, group: dict[str, Any], where: str) -> dict[str, Any]:
        out = dict(group)
        out["lr"] = number(where, "lr", group["lr"], 0.0)
        out["betas"] = betas(where, group["betas"], 3, ("[)", "[)", "[]"))
        out["weight_decay"] = number(where, "weight_decay", group["weight_decay"], 0.0)
        # pytorch-optimizer does not check it; a negative or zero threshold would flip or blow up the update
        out["clip_threshold"] = number(where, "clip_threshold", group["clip_threshold"], 0.0, math.inf, "(]")
        out["eps1"] = number(where, "eps1", group["eps1"], 0.0)
        out["eps2"] = number(where, "eps2", group["eps2"], 0.0)
        for key in ("weight_decouple", "fixed_decay", "ams_bound", "maximize"):
            out[key] = flag(where, key, group[key])
        return out

    def _update(self, p: np.ndarray, g: np.ndarray, state: dict[str, Any], group: Mapping[str, Any]) -> None:
        self._new_state(p, state, skip=() if group["ams_bound"] else ("exp_avg_sq_hat",))
        dtype = p.dtype.type
        beta1, beta2, beta3 = group["betas"]
        lr, weight_decay = group["lr"], group["weight_decay"]
        factored = p.ndim >= 2
        if not p.size:  # (pytorch-optimizer's row or column means of an empty param are NaN)
            return
        if group["maximize"]:
            g = -g
        with np.errstate(all="ignore"):  # inf and NaN propagate silently, as in torch
            if weight_decay:
                if group["weight_decouple"]:
                    p *= dtype(1.0 - weight_decay * (1.0 if group["fixed_decay"] else lr))
                else:
                    g = g.copy()  # (the caller's array)
                    add_scaled(g, p, weight_decay)
            squares = g * g + dtype(group["eps1"])
            if factored:
                _running_mean(state["exp_avg_sq_row"], squares.mean(axis=-1), beta2)
                _running_mean(state["exp_avg_sq_col"], squares.mean(axis=-2), beta2)
                update = _inverse_sqrt_factored(state["exp_avg_sq_row"], state["exp_avg_sq_col"])
            else:
                _running_mean(state["exp_avg_sq"], squares, beta2)
                update = 1 / np.sqrt(state["exp_avg_sq"])
            if group["ams_bound"]:
                hat = state["exp_avg_sq_hat"]
                np.maximum(hat, 1 / update, out=hat)
                update = 1 / np.sqrt(hat / dtype(beta2))
            update *= g
            update /= max(_rms(update) / dtype(group["clip_threshold"]), dtype(1.0))
            exp_avg = state["exp_avg"]
            exp_avg[...] = _lerp(exp_avg, update, 1.0 - beta1)
            if factored:
                residual = (update - exp_avg) ** 2 + dtype(group["eps2"])
                _running_mean(state["exp_avg_res_row"], residual.mean(axis=-1), beta3)
                _running_mean(state["exp_avg_res_col"], residual.mean(axis=-2), beta3)
                update = _inverse_sqrt_factored(state["exp_avg_res_row"], state["exp_avg_res_col"]) * exp_avg
            else:
                update = exp_avg
            add_scaled(p, update, -lr)


def _running_mean(average: np.ndarray, value: np.ndarray, beta: float) -> None:
    """``average.mul_(beta).add_(value, alpha=1 - beta)`` (torch fuses the add: an FMA)."""
    average *= average.dtype.type(beta)
    add_scaled(average, value, 1.0 - beta)


def _inverse_sqrt_factored(row: np.ndarray, col: np.ndarray) -> np.ndarray:
    """``rsqrt(row / mean(row))[..., None] * rsqrt(col)[..., None, :]``: the inverse square root of
    the factored approximation of a matrix (a batch of them) from its row and column means."""
    r_factor = 1 / np.sqrt(row / row.mean(axis=-1, keepdims=True))
    c_factor = 1 / np.sqrt(col)
    return r_factor[..., :, None] * c_factor[..., None, :]


def _rms(x: np.ndarray) -> Any:
    """``x.norm(2) / sqrt(x.numel())``, a scalar of x's dtype. torch sums float32 squares in a
    cascade, close to the exact sum: summed here in float64 (a float32 BLAS dot drifts further)."""
    return x.dtype.type(np.sqrt(np.sum(np.square(x, dtype=np.float64)))) / x.dtype.type(math.sqrt(x.size))
