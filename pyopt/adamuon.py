r"""AdaMuon (Si et al., 2025, "AdaMuon: Adaptive Muon Optimizer", https://arxiv.org/abs/2507.11005;
official code: https://github.com/Chongjie-Si/AdaMuon), as pytorch-optimizer 4.1.0's ``AdaMuon``
computes it for its ``use_muon=True`` groups (its per-param loop, ``foreach=False``), in numpy.

AdaMuon is Muon without Nesterov whose orthogonalized momentum is then divided elementwise by the
square root of a bias-corrected running mean of its own squares (Adam's second moment, of the
Newton–Schulz output rather than of the gradient), and rescaled to an RMS of ``1/sqrt(max(rows,
cols))`` (norm ``sqrt(min(rows, cols))``) before the shape-adjusted lr. The Newton–Schulz
iteration is pyopt.muon's, in bfloat16 through numpy's float32 GEMMs, and as in pytorch-optimizer
its bfloat16 result stays bfloat16 through the division, the norm and the rescaling (each a
float32 computation rounded to bfloat16 here); the momentum and second moment are in the param's
dtype.

For matrices (and conv kernels: ``p.reshape(len(p), -1)``) only, as pyopt.NorMuon:
pytorch-optimizer's ``use_muon=False`` groups are AdamW (optimize biases, norms and embeddings with
``pyopt.AdamW``), so ``adamw_lr``, ``adamw_betas`` and ``adamw_wd`` are not taken. Where pyopt
differs: the Newton–Schulz coefficients are one ``(a, b, c)`` triple (``ns_coefficients``;
pytorch-optimizer's ``ns_coeffs`` also takes a schedule or a preset name; its default
``"original"`` is the triple here); an empty matrix is left alone (pytorch-optimizer cannot
reshape it). As pytorch-optimizer, no sign transform of the momentum before the iteration (the
"sign-stabilized" update of the paper's later versions).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from ._pybase import PyOptimizer
from ._pyhelpers import add_scaled, betas, flag, number, positive_int
from .muon import _bf16, _bf16_norm, _lerp, _zeropower_via_newtonschulz
from .normuon import NS_EPS, _adjusted_lr, check_matrix_param, checked_ns_coefficients
from .optimizer import ParamsLike

__all__ = ["AdaMuon"]


class AdaMuon(PyOptimizer):
    r"""AdaMuon (Si et al., 2025; pytorch-optimizer 4.1.0 ``AdaMuon``, ``use_muon=True`` groups):
    Muon with an elementwise, bias-corrected second moment of the orthogonalized update. Params of
    two or more dimensions only.

    .. math:: m \leftarrow \mathrm{lerp}(m, g, 1-\beta_1);\quad O = \mathrm{NS}(m);\quad
              v \leftarrow \beta_2 v + (1-\beta_2) O^2;\quad
              U = O / (\sqrt{v / (1-\beta_2^t)} + \epsilon);\quad
              p \leftarrow p(1-\eta\lambda) - \eta'\,\sqrt{\min(r, c)}\,U / (\lVert U\rVert + \epsilon)

    with ``η' = 0.2·sqrt(max(r, c))·η`` (``use_adjusted_lr``, the default) or
    ``sqrt(max(1, r/c))·η`` for an ``r × c`` matrix.
    """

    name = "adamuon"
    lr_range = (1e-3, 0.3)  # searched by pyopt.tuner
    slots = ("m", "v")
    tuples = frozenset({"betas", "ns_coefficients"})

    def __init__(self, params: ParamsLike, lr: float = 2e-2, betas: tuple[float, float] = (0.9, 0.95),
                 weight_decay: float = 0.0, weight_decouple: bool = True, ns_steps: int = 5,
                 ns_coefficients: Sequence[float] = (3.4445, -4.775, 2.0315), use_adjusted_lr: bool = True,
                 eps: float = 1e-10, *, maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay, weight_decouple=weight_decouple,
                                      ns_steps=ns_steps, ns_coefficients=ns_coefficients,
                                      use_adjusted_lr=use_adjusted_lr, eps=eps, maximize=maximize))

    def _check_param_extra(self, p: np.ndarray, label: str) -> None:
        check_matrix_param(p, label, type(self).__name__)

    def _state_shape(self, name: str, p: np.ndarray) -> tuple[int, ...] | None:
        return p.shape if name == "m" else (p.size,)  # v is flat, as pytorch-optimizer's

    def _check_hypers(self, group: dict[str, Any], where: str) -> dict[str, Any]:
        out = dict(group)
        out["lr"] = number(where, "lr", group["lr"], 0.0)
        out["betas"] = betas(where, group["betas"], 2, ("[)", "[)"))
        out["weight_decay"] = number(where, "weight_decay", group["weight_decay"], 0.0)
        out["eps"] = number(where, "eps", group["eps"], 0.0)
        for key in ("weight_decouple", "use_adjusted_lr", "maximize"):
            out[key] = flag(where, key, group[key])
        out["ns_coefficients"] = checked_ns_coefficients(
            where, group["ns_coefficients"], " (pytorch-optimizer's presets and schedules are not taken)")
        out["ns_steps"] = positive_int(where, "ns_steps", group["ns_steps"])
        return out

    def _update(self, p: np.ndarray, g: np.ndarray, state: dict[str, Any], group: Mapping[str, Any]) -> None:
        self._new_state(p, state)
        if not p.size:
            return
        dtype = p.dtype.type
        lr, eps = group["lr"], group["eps"]
        beta1, beta2 = group["betas"]
        bias_correction2 = 1.0 - math.pow(beta2, state["step"])
        if group["maximize"]:
            g = -g
        m, v = state["m"], state["v"]
        rows = p.shape[0]
        cols = p.size // rows
        with np.errstate(all="ignore"):  # inf and NaN propagate silently, as in torch
            if group["weight_decay"]:
                if group["weight_decouple"]:
                    p *= dtype(1.0 - group["weight_decay"] * lr)
                else:
                    g = g.copy()  # (the caller's array)
                    add_scaled(g, p, group["weight_decay"])
            m[...] = _lerp(m, g, 1.0 - beta1)
            # bfloat16 values in float32, flat like v
            ortho = _zeropower_via_newtonschulz(m.reshape(rows, cols), group["ns_coefficients"], group["ns_steps"],
                                                NS_EPS).reshape(-1)
            wide = ortho.astype(p.dtype)
            v *= dtype(beta2)
            v += dtype(1.0 - beta2) * wide * wide
            # bfloat16 / float32 (float64) is computed in the wider type and rounded to bfloat16
            update = _bf16((wide / (np.sqrt(v / dtype(bias_correction2)) + dtype(eps))).astype(np.float32))
            norm = _bf16(_bf16_norm(update) + np.float32(eps))
            # scale / norm is torch's norm.reciprocal() * scale, each rounded to bfloat16
            factor = _bf16(_bf16(np.float32(1.0) / norm) * np.float32(math.sqrt(min(rows, cols))))
            update = _bf16(update * factor)
            add_scaled(p, update.reshape(p.shape).astype(p.dtype),
                       -_adjusted_lr(lr, rows, cols, group["use_adjusted_lr"]))
