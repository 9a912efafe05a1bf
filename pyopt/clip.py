"""Gradient clipping on numpy arrays, in place, with torch.nn.utils semantics."""
from __future__ import annotations

import math
import numbers
from typing import Any, Mapping, Sequence, Union

import numpy as np

__all__ = ["clip_grad_norm_", "clip_grad_value_"]

GradsIn = Union[np.ndarray, Sequence[Any], Mapping[str, Any]]

_CHUNK = 1 << 16  # elements converted to float64 at a time: no full-size temporaries


def _grad_arrays(grads: GradsIn, who: str) -> list[np.ndarray]:
    if isinstance(grads, np.ndarray):
        items: list[tuple[str, Any]] = [("grads", grads)]
    elif isinstance(grads, Mapping):
        items = [(f"grads[{k!r}]", g) for k, g in grads.items()]
    elif isinstance(grads, (list, tuple)):
        items = [(f"grads[{i}]", g) for i, g in enumerate(grads)]
    else:
        raise TypeError(f"{who}: grads must be a list, dict or array of numpy arrays, got {type(grads).__name__}")
    out = []
    for label, g in items:
        if g is None:
            continue
        if not isinstance(g, np.ndarray):
            raise TypeError(f"{who}: {label} must be a numpy array (clipped in place), got {type(g).__name__}")
        if g.dtype.kind != "f":
            raise TypeError(f"{who}: {label} must be a floating-point array, got dtype {g.dtype}")
        if not g.flags.writeable:
            raise ValueError(f"{who}: {label} is read-only; it is clipped in place")
        out.append(g)
    return out


def _norm64(g: np.ndarray, p: float) -> float:
    """The p-norm of one array, accumulated in float64 chunk by chunk."""
    if g.size == 0:
        return 0.0
    if math.isinf(p):
        return float(np.maximum(g.max(), -g.min()))  # NaN propagates like torch
    flat = g.reshape(-1)  # a view for contiguous arrays
    total = 0.0
    for start in range(0, flat.size, _CHUNK):
        c = flat[start : start + _CHUNK].astype(np.float64, copy=False)
        if p == 2.0:
            total += float(np.dot(c, c))
        elif p == 1.0:
            total += float(np.abs(c).sum())
        else:
            total += float((np.abs(c) ** p).sum())
    if p == 1.0:
        return total
    return math.sqrt(total) if p == 2.0 else total ** (1.0 / p)


def _norm_type(norm_type: Any, who: str) -> float:
    if isinstance(norm_type, bool) or not isinstance(norm_type, numbers.Real):
        raise TypeError(f"{who}: norm_type must be a positive number or inf, got {norm_type!r}")
    p = float(norm_type)
    if math.isnan(p) or p <= 0:
        raise ValueError(f"{who}: norm_type must be > 0 (or inf), got {p}")
    return p


def clip_grad_norm_(grads: GradsIn, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> float:
    r"""Scale ``grads`` in place so that their joint ``norm_type``-norm is at most ``max_norm``
    (torch.nn.utils.clip_grad_norm_). Returns the total norm before clipping, as a float.

    :math:`N = \lVert (\lVert g_1\rVert_p, \ldots, \lVert g_n\rVert_p) \rVert_p`; with
    :math:`c = \text{max\_norm}/(N + 10^{-6})`, every grad is multiplied by :math:`c` when
    :math:`c < 1` (``inf``: :math:`N = \max_i |g_i|`).

    ``grads``: a list or dict of numpy arrays (``None`` entries are skipped) or one array.
    As in torch, each array's norm has the array's dtype and the total has the promoted dtype of
    the grads; here each norm is accumulated in float64 (in chunks, without a full-size
    temporary) and then rounded, so float32 results agree with torch's to float32 rounding for
    ``norm_type`` 2 and inf, and float64 ones to ~1e-15. For other orders (1 included) torch
    accumulates float32 sums in float32 (a few 1e-6 off on 1e5 elements); these are closer to exact. A NaN/Inf total makes every grad NaN, as in torch, unless
    ``error_if_nonfinite`` raises ``RuntimeError`` first (grads then untouched).
    """
    who = "clip_grad_norm_"
    if isinstance(max_norm, bool) or not isinstance(max_norm, numbers.Real):
        raise TypeError(f"{who}: max_norm must be a number, got {max_norm!r}")
    p = _norm_type(norm_type, who)
    arrays = _grad_arrays(grads, who)
    if not arrays:
        return 0.0
    dt = np.result_type(*arrays)
    norms = [g.dtype.type(_norm64(g, p)) for g in arrays]
    if math.isinf(p):
        total = dt.type(np.max(np.asarray(norms, dtype=dt)))
    else:
        total = dt.type(_norm64(np.asarray(norms, dtype=dt), p))
    if error_if_nonfinite and not np.isfinite(total):
        raise RuntimeError(
            f"{who}: the total norm of order {p} of the gradients is non-finite ({float(total)}), so it cannot "
            "be clipped. Pass error_if_nonfinite=False to clip anyway (the grads become NaN)."
        )
    coef = dt.type(max_norm) / (total + dt.type(1e-6))
    if not coef >= 1.0:  # also when NaN, as torch's clamp(max=1) keeps NaN
        with np.errstate(invalid="ignore"):  # inf * 0 -> NaN, silently as in torch
            for g in arrays:
                g *= g.dtype.type(coef)
    return float(total)


def clip_grad_value_(grads: GradsIn, clip_value: float) -> None:
    """Clamp every gradient element into ``[-clip_value, clip_value]`` in place
    (torch.nn.utils.clip_grad_value_; NaN stays NaN)."""
    who = "clip_grad_value_"
    if isinstance(clip_value, bool) or not isinstance(clip_value, numbers.Real):
        raise TypeError(f"{who}: clip_value must be a number, got {clip_value!r}")
    v = float(clip_value)
    if math.isnan(v) or v < 0:
        raise ValueError(f"{who}: clip_value must be >= 0, got {v}")
    for g in _grad_arrays(grads, who):
        np.clip(g, g.dtype.type(-v), g.dtype.type(v), out=g)
