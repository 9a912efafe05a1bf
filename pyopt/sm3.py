r"""SM3 (Anil et al., 2019, https://arxiv.org/abs/1901.11150), as optax 0.2.8 computes it
(``optax.sm3``: SM3-II with momentum), in numpy.

An Adagrad whose sum of squared gradients is covered by one accumulator per slice of each axis
(a matrix keeps one value per row and one per column, like Adafactor's factored state): an
element's sum is the smallest of its slices' accumulators plus its g², and each accumulator
becomes the largest sum over its slice. So it is not element-wise. A vector (or a scalar) keeps
a full accumulator, as in optax. The momentum is optax's: an average of the preconditioned
gradients, ``m = momentum·m + (1 − momentum)·u``.

As optax: a 0-d param is stepped like a 1-element vector (optax fails on one), and an
accumulator of an axis that a zero-size param leaves without elements is 0.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ._pybase import PyOptimizer, real
from .optimizer import ParamsLike

__all__ = ["SM3"]

EPS = 1e-8  # optax.scale_by_sm3's eps (optax.sm3 does not expose it)
MAX_AXES = 64  # numpy's largest ndim: one accumulator slot per axis


class SM3(PyOptimizer):
    r"""SM3-II (Anil et al., 2019; optax.sm3 0.2.8) with momentum. For a param with axes
    :math:`1..k` and accumulators :math:`\mu_r` (one per slice of axis r, ``accumulator_r``):

    .. math:: \nu = g^2 + \min_r \mu_r;\quad u = g/\sqrt{\nu + 10^{-8}}\ (0 \text{ where } \nu = 0);\quad
              \mu_r \leftarrow \max_{\text{slice of } r} \nu;\quad m \leftarrow \beta m + (1-\beta)u;
              \quad x \leftarrow x - \eta\, m

    (:math:`\beta` = ``momentum``; a vector's single accumulator is :math:`\nu` itself.)
    """

    name = "sm3"
    lr_range = (1e-3, 1.0)  # searched by pyopt.tuner
    slots = ("momentum_buffer",) + tuple(f"accumulator_{axis}" for axis in range(MAX_AXES))

    def __init__(self, params: ParamsLike, lr: float = 1e-2, momentum: float = 0.9) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum))

    def _state_shape(self, name: str, p: np.ndarray) -> tuple[int, ...] | None:
        if name == "momentum_buffer":
            return p.shape
        axis = int(name.rsplit("_", 1)[1])
        if p.ndim < 2:
            return (p.size,) if axis == 0 else None
        return (p.shape[axis],) if axis < p.ndim else None

    def _check_hypers(self, group: dict[str, Any], where: str) -> dict[str, Any]:
        out = dict(group)
        for key in ("lr", "momentum"):
            out[key] = real(where, key, group[key])
        if not out["lr"] >= 0.0:
            raise ValueError(f"{where}: invalid lr: {out['lr']} (must be >= 0)")
        if not 0.0 <= out["momentum"] < 1.0:
            raise ValueError(f"{where}: invalid momentum: {out['momentum']} (must be in [0, 1))")
        return out

    def _update(self, p: np.ndarray, g: np.ndarray, state: dict[str, Any], group: Mapping[str, Any]) -> None:
        names = [n for n in self.slots if self._state_shape(n, p) is not None]
        for name in names:
            if name not in state:
                state[name] = np.zeros(self._state_shape(name, p), p.dtype)
        accumulators = [state[n] for n in names[1:]]
        with np.errstate(all="ignore"):  # inf and NaN propagate silently, as in optax
            if p.ndim < 2:
                grad = g.reshape(-1)
                nu = grad * grad + accumulators[0]  # optax: g**2 + 1.0 * mu (its b2 is 1)
            else:
                grad = g
                covered = accumulators[0].reshape(_along(p.ndim, 0, p.shape))
                for axis in range(1, p.ndim):
                    covered = np.minimum(covered, accumulators[axis].reshape(_along(p.ndim, axis, p.shape)))
                nu = grad * grad + covered
            # optax: g * where(nu > 0, rsqrt(nu + eps), 0), so a NaN or Inf gradient gives NaN
            inverse_root = np.where(nu > 0, 1 / np.sqrt(np.where(nu > 0, nu, 1) + p.dtype.type(EPS)), 0)
            preconditioned = grad * inverse_root
            momentum = group["momentum"]
            buffer = state["momentum_buffer"].reshape(preconditioned.shape)
            buffer[...] = (1 - momentum) * preconditioned + momentum * buffer
            if p.ndim < 2:
                accumulators[0][...] = nu
            else:
                for axis, accumulator in enumerate(accumulators):
                    others = tuple(a for a in range(p.ndim) if a != axis)
                    if nu.size:
                        accumulator[...] = np.max(nu, axis=others)
                    else:
                        accumulator[...] = 0
            p += (-group["lr"] * buffer).reshape(p.shape)


def _along(ndim: int, axis: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of an axis's accumulator broadcast along the param: (1, .., n_axis, .., 1)."""
    return tuple(shape[a] if a == axis else 1 for a in range(ndim))
