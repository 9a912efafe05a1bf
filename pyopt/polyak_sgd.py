r"""SGD with the stochastic Polyak step size (Loizou et al., 2021, https://arxiv.org/abs/2002.10542;
SPS+: Garrigos et al., 2023, https://arxiv.org/abs/2307.14528), as optax 0.2.8 computes it
(``optax.polyak_sgd``), in numpy.

The step size is the loss's gap to a lower bound over the gradient's squared norm, a norm over
the whole params tree in optax; here over each param group (a group is one optax tree), over the
params stepped (a ``None`` gradient skips its param). So the step is not element-wise, and it
needs the loss: ``step(grads, loss=value)``. No state but the step counts.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

import numpy as np

from ._groupwise import GroupwiseOptimizer, group_sum, squared_norm
from ._pybase import real
from .optimizer import ParamsLike

__all__ = ["PolyakSGD"]

VARIANTS = ("sps", "sps+")
# optax's "no step" threshold of the squared gradient norm (plus eps): jnp.finfo(float).eps
NO_STEP_BELOW = float(np.finfo(float).eps)


class PolyakSGD(GroupwiseOptimizer):
    r"""SGD with Polyak's step size (optax.polyak_sgd 0.2.8), per param group.

    .. math:: u = \eta\,g;\quad s = \min\left(\frac{f - f_*}{\|u\|^2 + \epsilon},\ \gamma_{\max}\right);
              \quad x \leftarrow x - s\,u

    ``f`` is the loss, ``step(grads, loss=f)``; :math:`f_*` = ``f_min``, a lower bound of the loss
    (0 for models that interpolate the data); :math:`\gamma_{\max}` = ``max_learning_rate``;
    ``lr`` is optax's ``scaling`` (the squared norm is that of the scaled gradient, as optax's).
    ``variant="sps+"`` uses :math:`\max(f - f_*, 0)`. No step when :math:`\|u\|^2 + \epsilon` is at
    most float64's machine epsilon.
    """

    name = "polyak_sgd"
    lr_range = (0.1, 3.0)  # optax's scaling (searched by pyopt.tuner)
    step_requires_loss: ClassVar[bool] = True

    def __init__(self, params: ParamsLike, lr: float = 1.0, max_learning_rate: float = 1.0, f_min: float = 0.0,
                 eps: float = 0.0, variant: str = "sps") -> None:
        super().__init__(params, dict(lr=lr, max_learning_rate=max_learning_rate, f_min=f_min, eps=eps,
                                      variant=variant))

    def _check_hypers(self, group: dict[str, Any], where: str) -> dict[str, Any]:
        out = dict(group)
        for key in ("lr", "max_learning_rate", "f_min", "eps"):
            out[key] = real(where, key, group[key])
        for key in ("lr", "max_learning_rate", "eps"):
            if not out[key] >= 0.0:
                raise ValueError(f"{where}: invalid {key}: {out[key]} (must be >= 0)")
        if not np.isfinite(out["f_min"]):
            raise ValueError(f"{where}: invalid f_min: {out['f_min']} (must be finite)")
        if group["variant"] not in VARIANTS:
            raise ValueError(f"{where}: invalid variant: {group['variant']!r} (must be 'sps' or 'sps+')")
        return out

    def _update_group(self, params: list[np.ndarray], grads: list[np.ndarray], group_state: dict[str, Any],
                      param_states: list[dict[str, Any]], group: Mapping[str, Any], loss: float | None,
                      all_params: list[np.ndarray], all_states: list[dict[str, Any]]) -> None:
        updates = [-group["lr"] * g for g in grads]  # optax: sgd(learning_rate=scaling) first
        grad_sq_norm = group_sum([squared_norm(u) for u in updates])
        dtype = np.result_type(grad_sq_norm)
        gap = dtype.type(loss - group["f_min"])
        if group["variant"] == "sps+":
            gap = np.maximum(gap, dtype.type(0))
        denominator = grad_sq_norm + group["eps"]
        if denominator <= dtype.type(NO_STEP_BELOW):
            step_size = dtype.type(0.0)
        else:
            step_size = np.minimum(gap / denominator, group["max_learning_rate"])
        for p, u in zip(params, updates):
            p += step_size * u
