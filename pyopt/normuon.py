r"""NorMuon (Li et al., 2025, "NorMuon: Making Muon more efficient and scalable",
https://arxiv.org/abs/2510.05491; official code: https://github.com/zichongli5/NorMuon), as
pytorch-optimizer 4.1.0's ``NorMuon`` computes it for its ``use_muon=True`` groups (its per-param
loop, ``foreach=False``), in numpy.

NorMuon is Muon whose orthogonalized update is then normalized per row by a running mean of its
squared entries (one second-moment value per output neuron), and rescaled to the orthogonalized
update's norm. The Newton–Schulz iteration is pyopt.muon's, in bfloat16 through numpy's float32
GEMMs (pytorch-optimizer's runs in bfloat16 too, with the same addmm steps); the rest is in the
param's dtype, as in pytorch-optimizer.

For matrices (and conv kernels: ``p.reshape(len(p), -1)``) only, as pyopt.Muon: pytorch-optimizer's
``use_muon=False`` groups are AdamW (optimize biases, norms and embeddings with ``pyopt.AdamW``).
Where pyopt differs: the Newton–Schulz coefficients are one ``(a, b, c)`` triple
(``ns_coefficients``; pytorch-optimizer's ``ns_coeffs`` also takes a schedule or a preset name); an
empty matrix is left alone (pytorch-optimizer cannot reshape it).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from ._pybase import PyOptimizer
from ._pyhelpers import add_scaled, flag, number, positive_int
from .muon import _lerp, _zeropower_via_newtonschulz
from .optimizer import ParamsLike

__all__ = ["NorMuon"]

UPDATE_SCALES = ("preserve_norm", "match_rms")
NS_EPS = 1e-7  # pytorch-optimizer's Newton–Schulz normalization floor (not the group's eps)


class NorMuon(PyOptimizer):
    r"""NorMuon (Li et al., 2025; pytorch-optimizer 4.1.0 ``NorMuon``, ``use_muon=True`` groups):
    Muon with a per-row second moment of the orthogonalized update. Params of two or more
    dimensions only.

    .. math:: B \leftarrow \mathrm{lerp}(B, g, 1-\mu);\quad
              O = \mathrm{NS}(\text{nesterov} ? \mathrm{lerp}(g, B, \mu) : B);\quad
              v \leftarrow \mathrm{lerp}(v, \mathrm{mean}_{\text{row}}(O^2), 1-\beta_2);\quad
              U = O / (\sqrt v + \epsilon);\quad p \leftarrow p(1-\eta\lambda) - \eta' s\,U

    ``s = ‖O‖ / (‖U‖ + ε)`` and ``η' = η·sqrt(max(1, rows/cols))`` (``use_adjusted_lr``:
    ``0.2·sqrt(max(rows, cols))``) with ``update_scale="preserve_norm"``; ``s = 0.2·sqrt(rows·cols)
    / (‖U‖ + ε)`` and ``η' = η`` with ``"match_rms"``.
    """

    name = "normuon"
    lr_range = (1e-3, 0.3)  # searched by pyopt.tuner
    slots = ("momentum_buffer", "second_momentum_buffer")
    tuples = frozenset({"ns_coefficients"})

    def __init__(self, params: ParamsLike, lr: float = 2e-2, momentum: float = 0.95, beta2: float = 0.95,
                 weight_decay: float = 0.0, weight_decouple: bool = True, nesterov: bool = True,
                 ns_coefficients: Sequence[float] = (3.4445, -4.775, 2.0315), ns_steps: int = 5,
                 update_scale: str = "preserve_norm", use_adjusted_lr: bool = False, eps: float = 1e-10, *,
                 maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, beta2=beta2, weight_decay=weight_decay,
                                      weight_decouple=weight_decouple, nesterov=nesterov,
                                      ns_coefficients=ns_coefficients, ns_steps=ns_steps, update_scale=update_scale,
                                      use_adjusted_lr=use_adjusted_lr, eps=eps, maximize=maximize))

    def _check_param_extra(self, p: np.ndarray, label: str) -> None:
        check_matrix_param(p, label, type(self).__name__)

    def _state_shape(self, name: str, p: np.ndarray) -> tuple[int, ...] | None:
        return p.shape if name == "momentum_buffer" else (p.shape[0], 1)

    def _check_hypers(self, group: dict[str, Any], where: str) -> dict[str, Any]:
        out = dict(group)
        out["lr"] = number(where, "lr", group["lr"], 0.0)
        out["momentum"] = number(where, "momentum", group["momentum"], 0.0, 1.0, "[)")
        out["beta2"] = number(where, "beta2", group["beta2"], 0.0, 1.0, "[)")
        out["weight_decay"] = number(where, "weight_decay", group["weight_decay"], 0.0)
        out["eps"] = number(where, "eps", group["eps"], 0.0)
        for key in ("weight_decouple", "nesterov", "use_adjusted_lr", "maximize"):
            out[key] = flag(where, key, group[key])
        out["ns_coefficients"] = checked_ns_coefficients(where, group["ns_coefficients"])
        out["ns_steps"] = positive_int(where, "ns_steps", group["ns_steps"])
        if group["update_scale"] not in UPDATE_SCALES:
            raise ValueError(f"{where}: invalid update_scale: {group['update_scale']!r} "
                             "(must be 'preserve_norm' or 'match_rms')")
        return out

    def _update(self, p: np.ndarray, g: np.ndarray, state: dict[str, Any], group: Mapping[str, Any]) -> None:
        self._new_state(p, state)
        if not p.size:
            return
        dtype = p.dtype.type
        lr, eps, momentum = group["lr"], group["eps"], group["momentum"]
        if group["maximize"]:
            g = -g
        buf, second = state["momentum_buffer"], state["second_momentum_buffer"]
        with np.errstate(all="ignore"):  # inf and NaN propagate silently, as in torch
            if group["weight_decay"]:
                if group["weight_decouple"]:
                    p *= dtype(1.0 - group["weight_decay"] * lr)
                else:
                    g = g.copy()  # (the caller's array)
                    add_scaled(g, p, group["weight_decay"])
            buf[...] = _lerp(buf, g, 1.0 - momentum)
            update = _lerp(g, buf, momentum) if group["nesterov"] else buf
            rows = p.shape[0]
            ortho = _zeropower_via_newtonschulz(update.reshape(rows, -1), group["ns_coefficients"], group["ns_steps"],
                                                NS_EPS).astype(p.dtype)
            original_norm = _norm(ortho)
            second[...] = _lerp(second, np.mean(np.square(ortho), axis=-1, keepdims=True), 1.0 - group["beta2"])
            ortho /= np.sqrt(second) + dtype(eps)
            if group["update_scale"] == "preserve_norm":
                ortho *= original_norm / (_norm(ortho) + dtype(eps))
                lr = _adjusted_lr(lr, rows, p.size // rows, group["use_adjusted_lr"])
            else:
                ortho *= dtype(0.2 * math.sqrt(ortho.size)) / (_norm(ortho) + dtype(eps))
            add_scaled(p, ortho.reshape(p.shape), -lr)


def _norm(x: np.ndarray) -> Any:
    """``x.norm()``, a scalar of x's dtype (summed in float64: torch's cascade sum is close to exact)."""
    return x.dtype.type(np.sqrt(np.sum(np.square(x, dtype=np.float64))))


def checked_ns_coefficients(where: str, coeffs: Any, note: str = "") -> tuple[float, float, float]:
    """The Newton–Schulz coefficients (a, b, c) as finite floats; TypeError/ValueError naming them."""
    if not isinstance(coeffs, (tuple, list)) or len(coeffs) != 3:
        raise TypeError(f"{where}: ns_coefficients must be a tuple of 3 floats (a, b, c), got {coeffs!r}{note}")
    return tuple(number(where, f"ns_coefficients[{k}]", c, -math.inf, math.inf, "()")  # type: ignore[return-value]
                 for k, c in enumerate(coeffs))


def check_matrix_param(p: np.ndarray, label: str, who: str) -> None:
    """ValueError unless ``p`` has two or more dimensions (the Muon variants orthogonalize matrices)."""
    if p.ndim < 2:
        raise ValueError(f"{label}: {who} takes only params of two or more dimensions (weight matrices, "
                         f"conv kernels), got shape {p.shape}; optimize the others (biases, norms) with another "
                         "optimizer, e.g. pyopt.AdamW (pyopt.param_groups(params) splits params by shape and name)")


def _adjusted_lr(lr: float, rows: int, cols: int, use_adjusted_lr: bool) -> float:
    """pytorch-optimizer's ``get_adjusted_lr``: Moonlight's ``0.2·sqrt(max(rows, cols))`` or Keller
    Jordan's ``sqrt(max(1, rows/cols))`` times lr."""
    return lr * (0.2 * math.sqrt(max(rows, cols)) if use_adjusted_lr else math.pow(max(1.0, rows / cols), 0.5))
