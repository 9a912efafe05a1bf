r"""Fromage, Frobenius matched gradient descent (Bernstein et al., 2020,
https://arxiv.org/abs/2002.03432), as optax 0.2.8 computes it (``optax.fromage``), in numpy.

Each param (a layer's weight tensor) steps by ``lr`` times its gradient rescaled to the param's
norm, then shrinks by ``1/sqrt(1 + lr²)``: two whole-tensor norms per param and no state but the
step count. It is written in Python rather than as a C++ rule with a per-tensor reduction
(rules/lamb.hpp): without state there is no SIMD state update to share with the engine, and the
step is two numpy norms and one scaled addition per tensor, which numpy does at memory speed.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from ._pybase import PyOptimizer, real
from .optimizer import ParamsLike

__all__ = ["Fromage"]


class Fromage(PyOptimizer):
    r"""Fromage (Bernstein et al., 2020; optax.fromage 0.2.8): per param,

    .. math:: x \leftarrow \frac{1}{\sqrt{1 + \eta^2}}\left(x - \eta\,\frac{\|x\|}{\|g\|}\,g\right)

    with both norms at least ``min_norm`` (so a zero param still moves), and the ratio 1 when
    either norm is 0 (``min_norm=0``).
    """

    name = "fromage"
    lr_range = (1e-3, 0.1)  # searched by pyopt.tuner

    def __init__(self, params: ParamsLike, lr: float = 1e-2, min_norm: float = 1e-6) -> None:
        super().__init__(params, dict(lr=lr, min_norm=min_norm))

    def _check_hypers(self, group: dict[str, Any], where: str) -> dict[str, Any]:
        out = dict(group)
        for key in ("lr", "min_norm"):
            out[key] = real(where, key, group[key])
            if not (out[key] >= 0.0 and math.isfinite(out[key])):
                raise ValueError(f"{where}: invalid {key}: {out[key]} (must be finite and >= 0)")
        return out

    def _update(self, p: np.ndarray, g: np.ndarray, state: dict[str, Any], group: Mapping[str, Any]) -> None:
        lr, min_norm = group["lr"], group["min_norm"]
        with np.errstate(all="ignore"):  # inf and NaN propagate silently, as in optax
            param_norm = _safe_norm(p, min_norm)
            update_norm = _safe_norm(g, min_norm)
            trust_ratio = param_norm / update_norm
            if param_norm == 0.0 or update_norm == 0.0:
                trust_ratio = p.dtype.type(1.0)
            # optax: scale_by_trust_ratio, then scale by -lr·mult, then add (mult - 1)·p
            mult = 1 / (1 + lr**2) ** 0.5
            update = -(lr * mult) * (g * trust_ratio)
            if mult - 1 != 0.0:  # (optax skips a zero decay: 0 * inf would be NaN)
                update += (mult - 1) * p
            p += update


def _safe_norm(x: np.ndarray, min_norm: float) -> Any:
    """optax.safe_norm: the Frobenius norm, or min_norm where it is at most min_norm."""
    norm = np.sqrt(np.sum(np.square(x)))
    return x.dtype.type(min_norm) if norm <= min_norm else norm
