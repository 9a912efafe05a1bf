r"""Noisy SGD (Neelakantan et al., 2015, arXiv:1511.06807), as optax 0.2.8's ``optax.noisy_sgd``:
``add_noise(eta, gamma)`` then ``scale_by_learning_rate``.

.. math:: \sigma_t^2 = \frac{\eta}{t^{\gamma}};\quad p \leftarrow p + (-\mathrm{lr})\,(g + \sigma_t\,n_t),
          \quad n_t \sim \mathcal N(0, I)

with t = 1, 2, ... the param's step count (optax's ``(1 + t)^γ`` with t from 0).

**The noise is pyopt's own.** jax's generator (threefry keys split each step) cannot be
reproduced here, so the update equals optax's exactly only with ``eta = 0`` (then optax adds
0 · noise, and pyopt draws nothing); with ``eta > 0`` it has the same distribution. The noise of
param ``i`` at its step ``t`` is ``numpy.random.default_rng([seed, i, t]).standard_normal(p.shape)``
in the param's dtype: a counter-based key (seed, param index, step), so a run is reproducible from
its seed alone, a resumed checkpoint continues with the same noise (the state is the step count),
and the result does not depend on the thread count or the ISA path (pyopt.set_num_threads /
set_isa change nothing here).

Why numpy rather than a C++ rule: a rule sees one element at a time without its index, so a
counter-based generator inside the C++ driver would need the element index, seed and param
index threaded through every kernel's hot loop; drawing Gaussians is the whole cost of this
optimizer, and numpy's generator draws them at memory speed, vectorized and already
counter-keyed, while the update itself is two numpy operations.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Mapping, Sequence

import numpy as np

from ._pybase import PyOptimizer, real
from .optimizer import ParamsLike

__all__ = ["NoisySGD"]


class NoisySGD(PyOptimizer):
    r"""Noisy SGD (Neelakantan et al., 2015; optax.noisy_sgd 0.2.8): SGD on the gradient plus
    Gaussian noise of variance ``eta / t**gamma`` at step t (t from 1).

    .. math:: p \leftarrow p - \mathrm{lr}\,\Bigl(g + \sqrt{\eta / t^{\gamma}}\;n_t\Bigr),\quad n_t \sim \mathcal N(0, I)

    ``seed`` keys the noise: param i at its step t draws from ``numpy.random.default_rng([seed, i, t])``,
    so the same seed gives the same trajectory (see the module docstring; jax's noise itself is not
    reproduced, so the trajectory equals optax's only for ``eta = 0``).
    """

    name = "noisy_sgd"
    lr_range = (1e-4, 1.0)  # searched by pyopt.tuner
    _draw_index_offset = 0  # added to the param index of the noise's key (pyopt.torch: earlier groups' params)

    def __init__(self, params: ParamsLike, lr: float = 1e-2, eta: float = 0.01, gamma: float = 0.55, seed: int = 0,
                 *, maximize: bool = False) -> None:
        self._noise_index: dict[int, int] = {}
        super().__init__(params, dict(lr=lr, eta=eta, gamma=gamma, seed=seed, maximize=maximize))

    def _check_hypers(self, group: dict[str, Any], where: str) -> dict[str, Any]:
        out = dict(group)
        for key in ("lr", "eta", "gamma"):
            out[key] = real(where, key, group[key])
        seed = group["seed"]
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"{where}: seed must be an int, got {seed!r}")
        if not isinstance(group["maximize"], (bool, np.bool_)):
            raise TypeError(f"{where}: maximize must be a bool, got {group['maximize']!r}")
        out["seed"], out["maximize"] = int(seed), bool(group["maximize"])
        checks = [("lr", out["lr"] >= 0, "must be >= 0"), ("eta", out["eta"] >= 0, "must be >= 0"),
                  ("gamma", math.isfinite(out["gamma"]), "must be finite"), ("seed", out["seed"] >= 0, "must be >= 0")]
        for key, ok, rule in checks:
            if not ok:
                raise ValueError(f"{where}: invalid {key}: {out[key]} ({rule})")
        return out

    def _checked_step(self, glist: Sequence[Any]) -> tuple[list[dict[str, Any]], list[tuple[int, np.ndarray]]]:
        hypers, checked = super()._checked_step(glist)
        self._noise_index = {id(self._state[i]): self._draw_index_offset + i for i, _ in checked}  # the param index keys the noise
        return hypers, checked

    def _update(self, p: np.ndarray, g: np.ndarray, state: dict[str, Any], group: Mapping[str, Any]) -> None:
        dtype = p.dtype.type
        direction = -g if group["maximize"] else g
        t = state["step"]
        if group["eta"] != 0.0:  # optax adds 0 · noise: the same values
            noise = np.random.default_rng([group["seed"], self._noise_index[id(state)], t]).standard_normal(
                p.shape, dtype=p.dtype)
            std = dtype(math.sqrt(group["eta"] / t ** group["gamma"]))
            direction = direction + std * noise
        p += dtype(-group["lr"]) * direction
