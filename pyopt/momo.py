r"""MoMo, momentum models for adaptive learning rates (Schaipp et al., 2023,
https://arxiv.org/abs/2305.07583), as optax 0.2.8 computes it (``optax.contrib.momo``), in numpy.

SGD with momentum whose step is capped by a Polyak-type step size built from averages of the
loss, of the gradients and of ⟨g, x⟩ and a lower bound of the loss. The averages of scalars and
the inner products and norms are over the whole params tree in optax; here over each param group
(a group is one optax tree), over the params stepped (a ``None`` gradient skips its param). The
group's scalars (``barf``, ``gamma``, ``lb``) are 0-d arrays of its first param's dtype, as optax
keeps them in the params' dtype (see ``pyopt._groupwise``). The step needs the loss:
``step(grads, loss=value)``.

One difference: with ``adapt_lower_bound=False`` the bound used is the group's ``lower_bound``
as it is at each step (optax fixes it at ``init``; the same while it is not edited).
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

import numpy as np

from ._groupwise import GroupwiseOptimizer, group_sum, squared_norm
from ._pybase import real
from .optimizer import ParamsLike

__all__ = ["Momo"]

# optax's "no step" threshold of the averaged gradient's squared norm: jnp.finfo(float).eps
NO_STEP_BELOW = float(np.finfo(float).eps)


class Momo(GroupwiseOptimizer):
    r"""MoMo (Schaipp et al., 2023; optax.contrib.momo 0.2.8): SGD with momentum and the step size
    :math:`\min(\eta, \tau^*)`, per param group.

    .. math:: \bar f \leftarrow \beta \bar f + (1-\beta) f;\quad d \leftarrow \beta d + (1-\beta) g;\quad
              \gamma \leftarrow \beta\gamma + (1-\beta)\langle g, x\rangle;\quad
              \tau^* = \frac{\max\big((1+\eta\lambda)(\bar f - f_* - \gamma) + \langle d, x\rangle,\ 0\big)}{\|d\|^2};
              \quad x \leftarrow \frac{x}{1+\eta\lambda} - \min(\eta, \tau^*)\, d

    (:math:`\beta = 0` at the first step: the averages start at the first values.) ``f`` is the
    loss, ``step(grads, loss=f)``; :math:`f_*` = ``lower_bound``, or with ``adapt_lower_bound``
    an estimate updated on the fly (``lb`` in the state). No step while :math:`\|d\|^2` is at
    most float64's machine epsilon.
    """

    name = "momo"
    lr_range = (1e-2, 10.0)  # an upper bound of the adaptive step (searched by pyopt.tuner)
    step_requires_loss: ClassVar[bool] = True
    param_slots = ("exp_avg",)
    group_slots = ("barf", "gamma", "lb")

    def __init__(self, params: ParamsLike, lr: float = 1.0, beta: float = 0.9, lower_bound: float = 0.0,
                 weight_decay: float = 0.0, adapt_lower_bound: bool = False) -> None:
        super().__init__(params, dict(lr=lr, beta=beta, lower_bound=lower_bound, weight_decay=weight_decay,
                                      adapt_lower_bound=adapt_lower_bound))

    def _check_hypers(self, group: dict[str, Any], where: str) -> dict[str, Any]:
        out = dict(group)
        for key in ("lr", "beta", "lower_bound", "weight_decay"):
            out[key] = real(where, key, group[key])
        for key in ("lr", "weight_decay"):
            if not out[key] >= 0.0:
                raise ValueError(f"{where}: invalid {key}: {out[key]} (must be >= 0)")
        if not 0.0 <= out["beta"] < 1.0:
            raise ValueError(f"{where}: invalid beta: {out['beta']} (must be in [0, 1))")
        if not np.isfinite(out["lower_bound"]):
            raise ValueError(f"{where}: invalid lower_bound: {out['lower_bound']} (must be finite)")
        if not isinstance(group["adapt_lower_bound"], (bool, np.bool_)):
            raise TypeError(f"{where}: adapt_lower_bound must be a bool, got {group['adapt_lower_bound']!r}")
        out["adapt_lower_bound"] = bool(group["adapt_lower_bound"])
        return out

    def _update_group(self, params: list[np.ndarray], grads: list[np.ndarray], group_state: dict[str, Any],
                      param_states: list[dict[str, Any]], group: Mapping[str, Any], loss: float | None,
                      all_params: list[np.ndarray], all_states: list[dict[str, Any]]) -> None:
        dtype = all_params[0].dtype
        lower_bound = group["lower_bound"]
        first = "barf" not in group_state
        if first:
            group_state.update(barf=np.zeros((), dtype), gamma=np.zeros((), dtype), lb=np.array(lower_bound, dtype))
        for p, state in zip(params, param_states):
            state.setdefault("exp_avg", np.zeros_like(p))
        # optax: beta is 0 at the group's first step (count == 0), in the params' dtype
        beta = dtype.type(0.0 if first else group["beta"])
        one_minus_beta = dtype.type(1) - beta
        barf = beta * group_state["barf"] + one_minus_beta * dtype.type(loss)
        exp_avgs = [beta * s["exp_avg"] + one_minus_beta * g for s, g in zip(param_states, grads)]
        gamma = beta * group_state["gamma"] + one_minus_beta * group_sum([_vdot(g, p) for g, p in zip(grads, params)])
        exp_avg_norm = group_sum([squared_norm(d) for d in exp_avgs])
        iprod = group_sum([_vdot(d, p) for d, p in zip(exp_avgs, params)])
        alpha, wd = group["lr"], group["weight_decay"]
        decay = 1 + alpha * wd  # (Python floats, as optax's)
        lb = group_state["lb"] if group["adapt_lower_bound"] else dtype.type(lower_bound)
        if group["adapt_lower_bound"]:
            cap = decay * (barf - gamma) + iprod
            if cap < decay * lb:
                lb = np.maximum(cap / (2 * decay), lower_bound)
        t1 = np.maximum(decay * (barf - lb - gamma) + iprod, 0.0) / exp_avg_norm
        if exp_avg_norm <= dtype.type(NO_STEP_BELOW):
            t1 = dtype.type(0.0)
        tau = np.minimum(alpha, t1)
        shrink = -(alpha * wd) / (1 + alpha * wd)
        for p, d, state in zip(params, exp_avgs, param_states):
            p += shrink * p - tau * d
            state["exp_avg"][...] = d
        group_state["barf"][...] = barf
        group_state["gamma"][...] = gamma
        if group["adapt_lower_bound"]:
            group_state["lb"][...] = np.maximum((barf + iprod - gamma) - (1 / 2) * tau * exp_avg_norm, lower_bound)


def _vdot(a: np.ndarray, b: np.ndarray) -> Any:
    """⟨a, b⟩ as a scalar of their dtype."""
    return np.dot(a.reshape(-1), b.reshape(-1))
