"""Adafactor (Shazeer & Stern, 2018) as torch.optim.Adafactor 2.13 computes it.

Its state is factored: a matrix (or a batch of matrices, the last two axes) keeps one running
mean of g² per row (``row_var``, shape ``(..., rows, 1)``) and one per column (``col_var``, shape
``(..., 1, cols)``), a vector keeps a full ``variance``. So it is not one of the element-wise C++
rules; its C++ kernel (csrc/src/adafactor.cpp) runs one param at a time, reductions and update
in one call.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from . import _core
from ._pybase import PyOptimizer, real
from .optimizer import ParamsLike


class Adafactor(PyOptimizer):
    r"""Adafactor (Shazeer & Stern, 2018; torch.optim.Adafactor 2.13): a factored second moment,
    relative step sizes, update clipping. ``lr`` is the largest relative step; ``eps`` is
    ``(eps1, eps2)`` with ``eps1=None`` meaning the dtype's machine epsilon.

    .. math:: \hat\beta_t = t^{\text{beta2\_decay}};\quad \alpha = \max(\epsilon_2, \mathrm{RMS}(p))\min(\eta, t^{-1/2});
              \quad V = \frac{R\,C}{\max(\bar R, \epsilon_1)};\quad u = \frac{g}{\sqrt{\max(V, \epsilon_1^2)}};
              \quad p \leftarrow p - \frac{\alpha}{\max(1, \mathrm{RMS}(u)/d)}\,u
    """

    name = "adafactor"
    lr_range = (1e-4, 1.0)  # searched by pyopt.tuner
    slots = ("row_var", "col_var", "variance")
    tuples = frozenset({"eps"})

    def __init__(self, params: ParamsLike, lr: float = 1e-2, beta2_decay: float = -0.8,
                 eps: tuple[float | None, float] = (None, 1e-3), d: float = 1.0, weight_decay: float = 0.0, *,
                 maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, beta2_decay=beta2_decay, eps=eps, d=d, weight_decay=weight_decay,
                                      maximize=maximize))

    def _state_shape(self, name: str, p: np.ndarray) -> tuple[int, ...] | None:
        if p.ndim > 1:
            if name == "row_var":
                return p.shape[:-1] + (1,)
            if name == "col_var":
                return p.shape[:-2] + (1, p.shape[-1])
            return None
        return p.shape if name == "variance" else None

    def _check_hypers(self, group: dict[str, Any], where: str) -> dict[str, Any]:
        out = dict(group)
        for key in ("lr", "beta2_decay", "d", "weight_decay"):
            out[key] = real(where, key, group[key])
        eps = group["eps"]
        if not isinstance(eps, (tuple, list)) or len(eps) != 2:
            raise TypeError(f"{where}: eps must be a pair (eps1 or None, eps2), got {eps!r}")
        eps1 = None if eps[0] is None else real(where, "eps[0]", eps[0])
        out["eps"] = (eps1, real(where, "eps[1]", eps[1]))
        if not isinstance(group["maximize"], (bool, np.bool_)):
            raise TypeError(f"{where}: maximize must be a bool, got {group['maximize']!r}")
        out["maximize"] = bool(group["maximize"])
        checks = [("lr", out["lr"] >= 0, "must be >= 0"), ("beta2_decay", out["beta2_decay"] <= 0, "must be <= 0"),
                  ("eps[1]", out["eps"][1] >= 0, "must be >= 0"), ("d", out["d"] >= 1, "must be >= 1"),
                  ("weight_decay", out["weight_decay"] >= 0, "must be >= 0")]
        if eps1 is not None:
            checks.append(("eps[0]", eps1 >= 0, "must be >= 0 or None"))
        for key, ok, rule in checks:
            if not ok:
                value = out["eps"][0] if key == "eps[0]" else out["eps"][1] if key == "eps[1]" else out[key]
                raise ValueError(f"{where}: invalid {key}: {value} ({rule})")
        return out

    def _update(self, p: np.ndarray, g: np.ndarray, state: dict[str, Any], group: Mapping[str, Any]) -> None:
        self._new_state(p, state)
        eps1, eps2 = group["eps"]
        _core.adafactor_step(p, g, state.get("row_var"), state.get("col_var"), state.get("variance"), state["step"],
                             group["lr"], group["beta2_decay"], eps1, eps2, group["d"], group["weight_decay"],
                             group["maximize"], f"{self._owner_label}: param")
