r"""DoG, Distance over Gradients (Ivgi et al., 2023, https://arxiv.org/abs/2302.12022), as optax
0.2.8 computes it (``optax.contrib.dog``), in numpy.

A parameter-free step size: the largest distance the params have moved from their initial point,
over the root of the sum of all squared gradient norms so far. Both are norms over the whole
params tree in optax; here over each param group (a group is one optax tree), so the step is
not element-wise. The distance covers every param of the group; the gradient norms the params
stepped (a ``None`` gradient skips its param). The initial point is the params at their group's
first step (optax: at ``init``). The group's scalars (``max_dist``, ``sum_sq_norm_grads``) are
0-d arrays of its first param's dtype, as optax keeps them in the params' dtype (see
``pyopt._groupwise``).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from ._groupwise import GroupwiseOptimizer, group_sum, squared_norm
from ._pybase import real
from .optimizer import ParamsLike

__all__ = ["DoG"]

INIT_STEP_KINDS = ("distance", "learning_rate", "heuristic")


class DoG(GroupwiseOptimizer):
    r"""DoG (Ivgi et al., 2023; optax.contrib.dog 0.2.8): SGD with the step size
    :math:`\bar r_t / \sqrt{G_t + \epsilon}`, per param group.

    .. math:: g \leftarrow g + \lambda p;\quad \bar r_t = \max(\bar r_{t-1}, \|x_t - x_0\|);\quad
              G_t = G_{t-1} + \|g_t\|^2;\quad x_{t+1} = x_t - \eta\,\frac{\bar r_t}{\sqrt{G_t + \epsilon}}\,g_t

    ``init_step`` is optax's pair ``(kind, value)``: ``("distance", r)`` starts :math:`\bar r`
    at r; ``("heuristic", a)`` at :math:`a(1 + \|x_0\|)` (a = 1e-6, or 1e-4 with batch norm, the
    authors suggest); ``("learning_rate", s)`` starts it at 0 and makes the first step size s.
    ``lr`` scales every step (1 is DoG's own step). The authors recommend averaging the
    iterates (e.g. ``pyopt.EMA``).
    """

    name = "dog"
    lr_range = (0.1, 3.0)  # a multiplier of DoG's own step size (searched by pyopt.tuner)
    param_slots = ("init_params",)
    group_slots = ("max_dist", "sum_sq_norm_grads")
    tuples = frozenset({"init_step"})

    def __init__(self, params: ParamsLike, lr: float = 1.0, init_step: tuple[str, float] = ("heuristic", 1e-6),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, init_step=init_step, eps=eps, weight_decay=weight_decay))

    def _check_hypers(self, group: dict[str, Any], where: str) -> dict[str, Any]:
        out = dict(group)
        for key in ("lr", "eps", "weight_decay"):
            out[key] = real(where, key, group[key])
            if not out[key] >= 0.0:
                raise ValueError(f"{where}: invalid {key}: {out[key]} (must be >= 0)")
        init_step = group["init_step"]
        if not isinstance(init_step, (tuple, list)) or len(init_step) != 2:
            raise TypeError(f"{where}: init_step must be a pair (kind, value), kind one of "
                            f"{', '.join(map(repr, INIT_STEP_KINDS))}, got {init_step!r}")
        kind, value = init_step
        if kind not in INIT_STEP_KINDS:
            raise ValueError(f"{where}: invalid init_step kind: {kind!r} (must be one of "
                             f"{', '.join(map(repr, INIT_STEP_KINDS))})")
        value = real(where, "init_step[1]", value)
        if not (value >= 0.0 and math.isfinite(value)):
            raise ValueError(f"{where}: invalid init_step[1]: {value} (must be finite and >= 0)")
        out["init_step"] = (kind, value)
        return out

    def _update_group(self, params: list[np.ndarray], grads: list[np.ndarray], group_state: dict[str, Any],
                      param_states: list[dict[str, Any]], group: Mapping[str, Any], loss: float | None,
                      all_params: list[np.ndarray], all_states: list[dict[str, Any]]) -> None:
        dtype = all_params[0].dtype
        kind, value = group["init_step"]
        first = "max_dist" not in group_state
        if first:
            for p, state in zip(all_params, all_states):
                state["init_params"] = p.copy()
            if kind == "distance":
                r_epsilon = dtype.type(value)
            elif kind == "heuristic":
                norm = np.sqrt(group_sum([squared_norm(p) for p in all_params]))
                r_epsilon = value * (1 + norm)
            else:  # learning_rate
                r_epsilon = dtype.type(0.0)
            group_state["max_dist"] = np.array(r_epsilon, dtype)
            group_state["sum_sq_norm_grads"] = np.zeros((), dtype)
        for p, state in zip(all_params, all_states):  # (a param added to the state since)
            state.setdefault("init_params", p.copy())
        wd = group["weight_decay"]
        # optax.add_decayed_weights skips a zero weight decay (0 * inf would be NaN)
        updates = [g + wd * p if wd != 0.0 else g for p, g in zip(params, grads)]
        dist = np.sqrt(group_sum([squared_norm(s["init_params"] - p) for p, s in zip(all_params, all_states)]))
        max_dist = np.maximum(group_state["max_dist"], dist)
        sum_sq = group_state["sum_sq_norm_grads"] + group_sum([squared_norm(u) for u in updates])
        step_size = max_dist / np.sqrt(sum_sq + group["eps"])
        if kind == "learning_rate" and first:
            step_size = dtype.type(value)
        group_state["max_dist"][...] = max_dist
        group_state["sum_sq_norm_grads"][...] = sum_sq
        lr = group["lr"]
        for p, u in zip(params, updates):
            p += -lr * (step_size * u)
