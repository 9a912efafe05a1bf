r"""Muon (Keller Jordan, 2025), as torch.optim.Muon 2.13 computes it, in numpy.

Muon is not elementwise: each step orthogonalizes every 2-D param's momentum with a Newton–Schulz
iteration (matrix products), so it is written here with numpy's BLAS GEMMs, not in the C++ core.

torch 2.13 runs the Newton–Schulz iteration in **bfloat16** whatever the param dtype
(``grad.bfloat16()``), with float32 accumulation in its GEMMs, and adds the bfloat16 result to
the float32/float64 param. numpy has no bfloat16, so this module keeps bfloat16 values in float32
arrays: every torch bfloat16 result is a float32 computation (GEMMs are numpy float32 ``@``, on
bfloat16 values, whose products are exact in float32) rounded to bfloat16 (nearest, ties to even).
The normalising norm is torch's too: float32 squares, so gradients above ~1e19 give an infinite
norm (a zero update) and below ~1e-23 a zero one (clamped to eps). The momentum buffer and the
param stay in the param's dtype, as in torch.
"""
from __future__ import annotations

import bisect
import math
import numbers
from typing import Any, Mapping, Sequence

import numpy as np

try:
    from numpy.lib.array_utils import byte_bounds
except ImportError:  # numpy < 2
    byte_bounds = np.byte_bounds  # type: ignore[attr-defined]

from . import _core
from ._pybase import PyOptimizer, real
from .optimizer import ParamsLike

__all__ = ["Muon"]

ADJUST_LR_FNS = (None, "original", "match_rms_adamw")


class Muon(PyOptimizer):
    r"""Muon: momentum, orthogonalized by Newton–Schulz (KellerJordan/Muon; torch.optim.Muon 2.13).

    For 2-D params only; optimize biases, norms and embeddings with another optimizer (e.g.
    ``pyopt.AdamW``; ``pyopt.param_groups`` splits params by shape and name).

    .. math:: B \leftarrow \mathrm{lerp}(B, g, 1-\mu);\quad
              U = \mathrm{lerp}(g, B, \mu) \text{ if nesterov else } B;\quad
              X = \mathrm{NS}^{(a,b,c)}_{k}(U);\quad
              p \leftarrow p\,(1-\eta\lambda) - \eta\,s\,X

    with ``s = sqrt(max(1, rows/cols))`` (``adjust_lr_fn=None`` or ``"original"``) or
    ``0.2 * sqrt(max(rows, cols))`` (``"match_rms_adamw"``). The Newton–Schulz iteration runs in
    bfloat16, as torch's does (see the module docstring). Defaults are Keller Jordan's (torch's
    own are ``lr=1e-3, weight_decay=0.1``).
    """

    name = "muon"
    lr_range = (1e-3, 0.3)  # searched by pyopt.tuner
    slots = ("momentum_buffer",)
    tuples = frozenset({"ns_coefficients"})

    def __init__(self, params: ParamsLike, lr: float = 0.02, weight_decay: float = 0.0, momentum: float = 0.95,
                 nesterov: bool = True, ns_coefficients: Sequence[float] = (3.4445, -4.775, 2.0315),
                 eps: float = 1e-7, ns_steps: int = 5, adjust_lr_fn: str | None = None) -> None:
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                                      ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps,
                                      adjust_lr_fn=adjust_lr_fn))

    def _check_param_extra(self, p: np.ndarray, label: str) -> None:
        if p.ndim != 2:
            raise ValueError(
                f"{label}: Muon takes only 2-D params (weight matrices), got shape {p.shape}; optimize the "
                "others (biases, norms, embeddings) with another optimizer, e.g. pyopt.AdamW "
                "(pyopt.param_groups(params) splits params by shape and name)"
            )

    def _check_hypers(self, group: dict[str, Any], where: str) -> dict[str, Any]:
        out = dict(group)
        for key in ("lr", "weight_decay", "momentum", "eps"):
            out[key] = real(where, key, group[key])
        if not out["lr"] >= 0.0:
            raise ValueError(f"{where}: invalid lr: {out['lr']} (must be >= 0)")
        if not out["weight_decay"] >= 0.0:
            raise ValueError(f"{where}: invalid weight_decay: {out['weight_decay']} (must be >= 0)")
        if not 0.0 <= out["momentum"] < 1.0:
            raise ValueError(f"{where}: invalid momentum: {out['momentum']} (must be in [0, 1))")
        if not out["eps"] >= 0.0:
            raise ValueError(f"{where}: invalid eps: {out['eps']} (must be >= 0)")
        if not isinstance(group["nesterov"], (bool, np.bool_)):
            raise TypeError(f"{where}: nesterov must be a bool, got {group['nesterov']!r}")
        out["nesterov"] = bool(group["nesterov"])
        coeffs = group["ns_coefficients"]
        if not isinstance(coeffs, (tuple, list)) or len(coeffs) != 3:
            raise TypeError(f"{where}: ns_coefficients must be a tuple of 3 floats (a, b, c), got {coeffs!r}")
        out["ns_coefficients"] = tuple(real(where, f"ns_coefficients[{k}]", c) for k, c in enumerate(coeffs))
        if not all(math.isfinite(c) for c in out["ns_coefficients"]):
            raise ValueError(f"{where}: invalid ns_coefficients: {coeffs!r} (must be finite)")
        steps = group["ns_steps"]
        if isinstance(steps, (bool, np.bool_)) or not isinstance(steps, numbers.Integral):
            raise TypeError(f"{where}: ns_steps must be an int, got {steps!r}")
        if not 1 <= int(steps) < 100:
            raise ValueError(f"{where}: invalid ns_steps: {steps} (must be in [1, 99], as torch's)")
        out["ns_steps"] = int(steps)
        if group["adjust_lr_fn"] not in ADJUST_LR_FNS:
            raise ValueError(
                f"{where}: invalid adjust_lr_fn: {group['adjust_lr_fn']!r} "
                "(must be None, 'original' or 'match_rms_adamw')"
            )
        return out

    def _checked_step(self, glist: Sequence[Any]) -> tuple[list[dict[str, Any]], list[tuple[int, np.ndarray]]]:
        """Every param of the step is checked again (still writeable, float32/float64,
        C-contiguous, 2-D, the shape of its state), every gradient (shape, dtype, no memory shared
        with a param of the step), then every group's hyperparameters."""
        who = self._owner_label
        checked = []
        for i, (p, g) in enumerate(zip(self._params, glist)):
            if g is None:
                continue
            label = f"{who}: {self._labels[i]}"
            _core.check_param(p, label)  # made read-only since it was added?
            self._check_param_extra(p, label)  # reshaped in place?
            buf = self._state[i].get("momentum_buffer")
            if buf is not None and (buf.shape != p.shape or buf.dtype != p.dtype):
                raise ValueError(f"{label}: the param is now {p.dtype} {p.shape}, its momentum_buffer "
                                 f"{buf.dtype} {buf.shape}; it was changed in place")
            checked.append((i, self._check_grad(g, p, label)))
        self._check_grads_share_no_memory(checked)
        return self._groups_checked(), checked

    def _check_grads_share_no_memory(self, checked: list[tuple[int, np.ndarray]]) -> None:
        """No gradient may share memory with a param this step updates: params are updated one
        after the other, so a later gradient would change under an earlier update (and its own
        param's gradient under its own). Address ranges first, then numpy's exact test."""
        # Params are C-contiguous and never overlap one another: sorted by start, their ends are sorted too.
        updated = sorted((self._params[i].ctypes.data, i) for i, _ in checked if self._params[i].nbytes)
        starts = [start for start, _ in updated]
        ends = [start + self._params[j].nbytes for start, j in updated]
        for i, g in checked:
            if not g.nbytes:
                continue
            low, high = byte_bounds(g)
            for _, j in updated[bisect.bisect_right(ends, low) : bisect.bisect_left(starts, high)]:
                p = self._params[j]
                if np.shares_memory(g, p):
                    whose = "its param" if i == j else self._labels[j]
                    raise ValueError(f"{self._owner_label}: {self._labels[i]}: gradient shares memory with {whose}")

    def _update(self, p: np.ndarray, g: np.ndarray, state: dict[str, Any], group: Mapping[str, Any]) -> None:
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = np.zeros_like(p)
        momentum = group["momentum"]
        buf[...] = _lerp(buf, g, 1 - momentum)  # buf.lerp_(grad, 1 - momentum)
        update = _lerp(g, buf, momentum) if group["nesterov"] else buf
        ortho = _zeropower_via_newtonschulz(update, group["ns_coefficients"], group["ns_steps"], group["eps"])
        lr = group["lr"]
        adjusted_lr = _adjust_lr(lr, group["adjust_lr_fn"], p.shape)
        p *= p.dtype.type(1 - lr * group["weight_decay"])  # param.mul_(1 - lr * weight_decay)
        # param.add_(update, alpha=-adjusted_lr): torch fuses p + alpha * update (FMA) in p's dtype.
        if p.dtype == np.float32:
            # alpha (float32) times a bfloat16 value is exact in float64, so this is an FMA but
            # for a double rounding at the last step (float64, then float32).
            alpha = float(np.float32(-adjusted_lr))
            p[...] = p + alpha * ortho.astype(np.float64)
        else:
            p += -adjusted_lr * ortho.astype(np.float64)


# ----- torch's numerics, in numpy -------------------------------------------------------------
def _bf16(x: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (nearest, ties to even; NaN stays NaN), as float32."""
    x = np.asarray(x, dtype=np.float32)
    u = x.view(np.uint32)
    r = ((u + (((u >> 16) & np.uint32(1)) + np.uint32(0x7FFF))) & np.uint32(0xFFFF0000)).view(np.float32)
    nan = np.isnan(x)
    if nan.any():
        r = np.where(nan, np.float32(np.nan), r)
    return r


def _lerp(start: np.ndarray, end: np.ndarray, weight: float) -> np.ndarray:
    """torch.lerp(start, end, weight) as torch's vectorized CPU kernel computes it:
    ``fma(w, end - start, start)`` if ``|w| < 0.5`` else ``fma(w - 1, end - start, end)``, with
    the weight in the tensors' dtype."""
    w = start.dtype.type(weight)
    small = abs(w) < 0.5
    coeff = w if small else w - start.dtype.type(1)
    base = start if small else end
    diff = end - start
    if start.dtype == np.float32:
        # float32 * float32 is exact in float64: an FMA but for double rounding.
        return (float(coeff) * diff.astype(np.float64) + base).astype(np.float32)
    return coeff * diff + base


def _zeropower_via_newtonschulz(update: np.ndarray, ns_coefficients: tuple[float, float, float],
                                ns_steps: int, eps: float) -> np.ndarray:
    """torch 2.13's ``_zeropower_via_newtonschulz``: the iteration in bfloat16 (held in float32
    arrays), each GEMM a float32 numpy ``@`` rounded to bfloat16, each ``addmm`` rounded once."""
    with np.errstate(all="ignore"):  # inf and NaN propagate silently, as in torch
        return _newton_schulz_bf16(update, ns_coefficients, ns_steps, eps)


def _newton_schulz_bf16(update: np.ndarray, ns_coefficients: tuple[float, float, float], ns_steps: int,
                        eps: float) -> np.ndarray:
    a, b, c = (np.float32(v) for v in ns_coefficients)
    x = _bf16(update.astype(np.float32, copy=False))  # grad.bfloat16(): float64 goes through float32
    transposed = x.shape[0] > x.shape[1]
    if transposed:
        x = x.T
    # ortho_grad.div_(ortho_grad.norm().clamp(min=eps)): the norm and the clamp are bfloat16
    # scalars, the division is float32 rounded to bfloat16.
    norm = _bf16(np.maximum(_bf16_norm(x), np.float32(eps)))
    x = _bf16(x / norm)
    # oneDNN's addmm(C, A, B, beta, alpha) is fma(beta, C, alpha * (A @ B)) in float32, rounded
    # to bfloat16. A float32 times a bfloat16 value is exact in float64, so each fma below is one
    # float64 addition rounded to float32 (a double rounding, which is only rarely not the fma's).
    a64, b64 = float(a), float(b)
    for _ in range(ns_steps):
        gram = _bf16(x @ x.T)
        # torch.addmm(gram, gram, gram, beta=b, alpha=c)
        gram_update = _bf16((b64 * gram.astype(np.float64) + c * (gram @ gram)).astype(np.float32))
        # torch.addmm(x, gram_update, x, beta=a)
        x = _bf16((a64 * x.astype(np.float64) + gram_update @ x).astype(np.float32))
    return x.T if transposed else x


def _bf16_norm(x: np.ndarray) -> np.ndarray:
    """torch's ``Tensor.norm()`` of a bfloat16 matrix (``x`` holds bfloat16 values in float32), as a
    bfloat16 value in a float32 0-d array. torch accumulates it in float32: each square is a float32
    (inf above |x| ≈ 1.8e19, 0 below ≈ 2.6e-23, a denormal in between), the sum a float32, its
    square root a float32 rounded to bfloat16. A one-element tensor's norm is its |x|. Here the
    float32 squares are summed in float64 and rounded to float32 once, where torch rounds along the
    way: the bfloat16 norm differs only when that float32 sum sits at a bfloat16 rounding boundary
    or at the float32 overflow threshold (in none of 4,000 random matrices of entries 1e-23 to
    2e19, measured against torch 2.13)."""
    if x.size == 1:
        return np.abs(x).reshape(())
    total = np.float32(np.sum(np.square(x, dtype=np.float32), dtype=np.float64))  # beyond float32: inf
    return _bf16(np.sqrt(total))


def _adjust_lr(lr: float, adjust_lr_fn: str | None, shape: tuple[int, ...]) -> float:
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        ratio = math.sqrt(max(1, rows / cols)) if cols else 1.0
    else:  # "match_rms_adamw"
        ratio = 0.2 * math.sqrt(max(rows, cols))
    return lr * ratio
