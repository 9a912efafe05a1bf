r"""SOAP (Vyas et al., 2024, "SOAP: Improving and Stabilizing Shampoo using Adam",
https://arxiv.org/abs/2409.11321): Adam run in the eigenbasis of Shampoo's preconditioner, as
pytorch-optimizer 4.1.0's ``SOAP`` computes it, in numpy.

For a param whose (possibly merged) shape is :math:`n_1 \times \dots \times n_k`, each dimension
:math:`d` with :math:`n_d \le` ``max_precondition_dim`` keeps a Kronecker factor
:math:`L_d \leftarrow \mathrm{lerp}(L_d, G_{(d)} G_{(d)}^\top, 1-\beta_s)` (``GG_d``, the mode-d
Gram matrix of the gradient, :math:`\beta_s` = ``shampoo_beta``, default ``beta2``) and an
orthogonal basis :math:`Q_d` (``Q_d``). Each step rotates the gradient into that basis
(:math:`\hat G = G \times_1 Q_1^\top \dots \times_k Q_k^\top`), runs Adam there (the second moment
``exp_avg_sq`` lives in the rotated basis, the first moment ``exp_avg`` in the param's), rotates
the Adam direction back and steps; then decoupled weight decay ``p *= 1 - lr * weight_decay``.

Refresh schedule (as the reference): at a param's first step the factors are built and
:math:`Q_d` is their eigenbasis (``eigh`` of :math:`L_d + 10^{-30} I`, eigenvalues descending),
and that step does not move the param. Every ``precondition_frequency`` steps after that, one
power-iteration step refreshes each basis: :math:`Q_d \leftarrow \mathrm{QR}(L_d Q_d)` with its
columns sorted by the estimated eigenvalues :math:`\mathrm{diag}(Q_d^\top L_d Q_d)` (and
``exp_avg_sq`` permuted to match). The QR runs in float32 for float64 params too, as the
reference's (``power_iter.to(torch.float32)``), so a float64 SOAP's basis is float32-accurate.

Cost per step of a :math:`m \times n` param (both dims preconditioned): three rotations of two
GEMMs each (:math:`6mn(m+n)` flops) plus the Gram updates (:math:`mn(m+n)`); every
``precondition_frequency`` steps two :math:`n^3` GEMM + QR per factor; at the first step one
``eigh`` per factor (:math:`O(n^3)`). Memory: two param-sized moments plus two :math:`n_d^2`
matrices per preconditioned dimension.

Layout rules (the reference's): a 1-D param is plain Adam unless ``precondition_1d`` (and its
length <= ``max_precondition_dim``); a scalar is plain Adam; a dimension longer than
``max_precondition_dim`` is not rotated (identity); dimensions of length 0 are not rotated
either. ``merge_dims`` first merges consecutive small dimensions (product <= ``max_precondition_dim``;
``data_format='channels_last'`` permutes a 4-D NHWC param to NCHW first). The reference cannot
reshape a param whose dimensions would all merge into one (``merge_small_dims`` then returns
``[1]``; it raises RuntimeError), so pyopt refuses ``merge_dims=True`` for such a param with a
ValueError naming it. As in the reference, ``shampoo_beta`` and ``precondition_frequency`` are
read at a param's first step and kept in its state (``state['shampoo_beta']``,
``state['precondition_frequency']``, 0-d float64 arrays); later edits of the group do not change them.

How pyopt differs: the step count is per param (a param's first step with a gradient is its
step 1; the reference counts the group's ``step()`` calls, so the two agree when every param has
a gradient at every step); ``maximize`` and ``data_format`` are group hyperparameters (the
reference's are per optimizer); a non-finite gradient at a param's first step (whose ``eigh``
the reference cannot do: torch raises) is a ValueError before anything changes.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from ._precond import Layout, PreconditionedOptimizer, flag, integer, lerp, nonnegative, unit_interval
from ._pybase import real
from .optimizer import ParamsLike

__all__ = ["SOAP"]

DATA_FORMATS = ("channels_first", "channels_last")


class SOAP(PreconditionedOptimizer):
    r"""SOAP: Adam in the eigenbasis of Shampoo's Kronecker factors (pytorch-optimizer 4.1.0's ``SOAP``).

    ``precondition_frequency``: steps between basis refreshes (one power iteration + QR per
    factor). ``max_precondition_dim``: longer dimensions are not rotated. ``merge_dims``: merge
    small consecutive dimensions first. ``precondition_1d``: rotate 1-D params too (an
    :math:`n \times n` factor). ``shampoo_beta``: the factors' EMA rate (None: ``beta2``).
    ``correct_bias``: Adam's bias correction. ``normalize_gradient``: divide the update by its
    RMS. See the module docstring for the cost per step and the refresh schedule.
    """

    name = "soap"
    lr_range = (1e-4, 3e-2)  # searched by pyopt.tuner
    tuples = frozenset({"betas"})

    def __init__(self, params: ParamsLike, lr: float = 3e-3, betas: Sequence[float] = (0.95, 0.95),
                 shampoo_beta: float | None = None, weight_decay: float = 1e-2, precondition_frequency: int = 10,
                 max_precondition_dim: int = 10000, merge_dims: bool = False, precondition_1d: bool = False,
                 correct_bias: bool = True, normalize_gradient: bool = False, data_format: str = "channels_first",
                 eps: float = 1e-8, maximize: bool = False) -> None:
        super().__init__(params, dict(
            lr=lr, betas=betas, shampoo_beta=shampoo_beta, weight_decay=weight_decay,
            precondition_frequency=precondition_frequency, max_precondition_dim=max_precondition_dim,
            merge_dims=merge_dims, precondition_1d=precondition_1d, correct_bias=correct_bias,
            normalize_gradient=normalize_gradient, data_format=data_format, eps=eps, maximize=maximize))

    def _check_hypers(self, group: dict[str, Any], where: str) -> dict[str, Any]:
        out = dict(group)
        out["lr"] = nonnegative(where, group, "lr")
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"{where}: betas must be a tuple of 2 floats (beta1, beta2), got {betas!r}")
        out["betas"] = tuple(unit_interval(where, {f"betas[{k}]": b}, f"betas[{k}]") for k, b in enumerate(betas))
        if group["shampoo_beta"] is not None:
            out["shampoo_beta"] = nonnegative(where, group, "shampoo_beta")
        out["weight_decay"] = nonnegative(where, group, "weight_decay")
        out["eps"] = nonnegative(where, group, "eps")
        out["precondition_frequency"] = integer(where, group, "precondition_frequency", 1)
        out["max_precondition_dim"] = integer(where, group, "max_precondition_dim", 1)
        for key in ("merge_dims", "precondition_1d", "correct_bias", "normalize_gradient", "maximize"):
            out[key] = flag(where, group, key)
        if group["data_format"] not in DATA_FORMATS:
            raise ValueError(f"{where}: invalid data_format: {group['data_format']!r} "
                             "(must be 'channels_first' or 'channels_last')")
        return out

    # ----- the state's layout -------------------------------------------------------------------
    def _layout(self, p: np.ndarray, group: Mapping[str, Any]) -> Layout:
        # shampoo_beta and precondition_frequency as read at the first step (0-d float64 arrays)
        out: Layout = {"exp_avg": (p.shape, p.dtype), "exp_avg_sq": (p.shape, p.dtype),
                       "shampoo_beta": ((), np.dtype(np.float64)), "precondition_frequency": ((), np.dtype(np.float64))}
        for d, n in enumerate(_factor_sizes(p.shape, group)):
            if n is not None:
                out[f"GG_{d}"] = out[f"Q_{d}"] = ((n, n), p.dtype)
        return out

    def _check_step(self, p: np.ndarray, g: np.ndarray, state: dict[str, Any], group: Mapping[str, Any],
                    label: str) -> None:
        if group["merge_dims"]:
            merged = _merged_shape(p.shape, group)
            if math.prod(merged) != p.size:
                raise ValueError(f"{label}: merge_dims=True merges shape {p.shape} into {merged} "
                                 f"(max_precondition_dim={group['max_precondition_dim']}), which does not hold its "
                                 f"{p.size} elements (pytorch-optimizer's merge_small_dims; the reference raises "
                                 "RuntimeError): use merge_dims=False for this param")
        super()._check_step(p, g, state, group, label)
        if "exp_avg" not in state and any(n is not None for n in _factor_sizes(p.shape, group)) \
                and not np.isfinite(g).all():
            raise ValueError(f"{label}: a non-finite gradient at its first step: SOAP's initial eigenbasis (eigh) "
                             "cannot be computed from it (pytorch-optimizer raises too)")

    # ----- the step -----------------------------------------------------------------------------
    def _update(self, p: np.ndarray, g: np.ndarray, state: dict[str, Any], group: Mapping[str, Any]) -> None:
        beta1, beta2 = group["betas"]
        sizes = _factor_sizes(p.shape, group)
        with np.errstate(all="ignore"):  # inf and NaN propagate silently, as in torch
            if "exp_avg" not in state:
                self._first_step(p, g, state, group, sizes)
                return
            step = state["step"] - 1  # the reference's step count (its first step only builds the state)
            step_size = group["lr"]
            if group["correct_bias"]:
                step_size *= math.sqrt(1.0 - math.pow(beta2, step)) / (1.0 - math.pow(beta1, step))
            grad = -g if group["maximize"] else g
            factors = [state.get(f"Q_{d}") for d in range(len(sizes))]

            projected = _project(grad, factors, group)
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            exp_avg[...] = lerp(exp_avg, grad, 1.0 - beta1)
            exp_avg_sq[...] = lerp(exp_avg_sq, projected * projected, 1.0 - beta2)
            denom = np.sqrt(exp_avg_sq) + p.dtype.type(group["eps"])
            direction = _project(_project(exp_avg, factors, group) / denom, factors, group, backward=True)
            if group["normalize_gradient"]:
                rms = np.sqrt(np.mean(direction * direction)) if direction.size else p.dtype.type(np.nan)
                direction = direction / (rms + p.dtype.type(group["eps"]))
            p += p.dtype.type(-step_size) * direction
            if group["weight_decay"] != 0.0:
                p *= p.dtype.type(1.0 - group["weight_decay"] * group["lr"])
            self._update_factors(grad, state, group, sizes)
            if step % int(state["precondition_frequency"]) == 0:
                self._refresh_bases(state, group, sizes)

    # The decompositions, as methods: the reference tests replay them (see tests/python/preconditioned_refs.py).
    def _eigh(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.linalg.eigh(matrix)

    def _qr(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.linalg.qr(matrix)

    def _first_step(self, p: np.ndarray, g: np.ndarray, state: dict[str, Any], group: Mapping[str, Any],
                    sizes: list[int | None]) -> None:
        """The reference's init_group: zero moments, the factors from this gradient, their
        eigenbases; the param does not move."""
        new: dict[str, Any] = {"step": 1, "exp_avg": np.zeros_like(p), "exp_avg_sq": np.zeros_like(p),
                               "shampoo_beta": np.array(group["shampoo_beta"] if group["shampoo_beta"] is not None
                                                        else group["betas"][1], np.float64),
                               "precondition_frequency": np.array(group["precondition_frequency"], np.float64)}
        for d, n in enumerate(sizes):
            if n is not None:
                new[f"GG_{d}"] = np.zeros((n, n), p.dtype)
        self._update_factors(g, new, group, sizes)
        for d, n in enumerate(sizes):
            if n is not None:
                gram = new[f"GG_{d}"]
                _, vectors = self._eigh(gram + p.dtype.type(1e-30) * np.eye(n, dtype=p.dtype))
                new[f"Q_{d}"] = np.ascontiguousarray(vectors[:, ::-1])  # eigenvalues descending
        state.update(new)

    def _update_factors(self, grad: np.ndarray, state: dict[str, Any], group: Mapping[str, Any],
                        sizes: list[int | None]) -> None:
        """GG_d <- lerp(GG_d, mode-d Gram matrix of the gradient, 1 - shampoo_beta)."""
        weight = 1.0 - float(state["shampoo_beta"])
        if grad.ndim == 1:
            if sizes[0] is not None:
                state["GG_0"][...] = lerp(state["GG_0"], np.outer(grad, grad), weight)
            return
        x = _merged(grad, group) if group["merge_dims"] else grad
        for d, n in enumerate(sizes):
            if n is not None:
                others = [k for k in range(x.ndim) if k != d]
                state[f"GG_{d}"][...] = lerp(state[f"GG_{d}"], np.tensordot(x, x, axes=(others, others)), weight)

    def _refresh_bases(self, state: dict[str, Any], group: Mapping[str, Any], sizes: list[int | None]) -> None:
        """One power iteration per factor, Q_d <- QR(GG_d Q_d) (float32, as the reference), its
        columns ordered by the estimated eigenvalues, exp_avg_sq permuted alike."""
        exp_avg_sq = state["exp_avg_sq"]
        x = _merged(exp_avg_sq, group) if group["merge_dims"] else exp_avg_sq
        for d, n in enumerate(sizes):
            if n is None:
                continue
            gram, basis = state[f"GG_{d}"], state[f"Q_{d}"]
            product = gram @ basis
            estimated = np.sum(basis * product, axis=0)
            order = np.argsort(-estimated, kind="stable")
            x = np.take(x, order, axis=d)
            q, _ = self._qr(product[:, order].astype(np.float32))
            basis[...] = q
        exp_avg_sq[...] = _unmerged(x, exp_avg_sq.shape, group) if group["merge_dims"] else x


# ----- shapes and rotations ------------------------------------------------------------------------
def merge_small_dims(shape: Sequence[int], max_dim: int) -> list[int]:
    """pytorch-optimizer's merge_small_dims: consecutive dimensions merged while their product
    stays <= max_dim ([1] when that leaves a single dimension)."""
    merged: list[int] = []
    product = 1
    for n in shape:
        product *= n
        if product > max_dim:
            merged.append(product // n)
            product = n
    merged.append(product)
    return merged if len(merged) > 1 else [1]


def _channels_last(shape: Sequence[int], group: Mapping[str, Any]) -> bool:
    return group["data_format"] == "channels_last" and len(shape) == 4


def _merged_shape(shape: tuple[int, ...], group: Mapping[str, Any]) -> list[int]:
    if _channels_last(shape, group):
        shape = (shape[0], shape[3], shape[1], shape[2])
    return merge_small_dims(shape, group["max_precondition_dim"])


def _merged(x: np.ndarray, group: Mapping[str, Any]) -> np.ndarray:
    if _channels_last(x.shape, group):
        x = x.transpose(0, 3, 1, 2)
    return x.reshape(merge_small_dims(x.shape, group["max_precondition_dim"]))


def _unmerged(x: np.ndarray, shape: tuple[int, ...], group: Mapping[str, Any]) -> np.ndarray:
    if _channels_last(shape, group):
        return x.reshape(shape[0], shape[3], shape[1], shape[2]).transpose(0, 2, 3, 1)
    return x.reshape(shape)


def _factor_sizes(shape: tuple[int, ...], group: Mapping[str, Any]) -> list[int | None]:
    """The size of each rotated dimension of a param (None: not rotated), in the reference's
    factor order: one per dimension (of the merged shape with merge_dims), a lone one for 1-D."""
    limit = group["max_precondition_dim"]
    if len(shape) == 1:
        n = shape[0]
        return [n if group["precondition_1d"] and 0 < n <= limit else None]
    dims = _merged_shape(shape, group) if group["merge_dims"] else list(shape)
    return [n if 0 < n <= limit else None for n in dims]


def _project(x: np.ndarray, factors: list[np.ndarray | None], group: Mapping[str, Any],
             backward: bool = False) -> np.ndarray:
    """x rotated into the bases (x ×_d Q_dᵀ for each d), or back (x ×_d Q_d) with ``backward``:
    one tensordot (GEMM) per rotated dimension, each contracting the leading axis and appending
    the new one, so the axes come back in order (the reference's ``project``)."""
    shape = x.shape
    if group["merge_dims"]:
        x = _merged(x, group)
    for basis in factors:
        if basis is None:
            x = np.moveaxis(x, 0, -1)
        else:
            x = np.tensordot(x, basis, axes=([0], [1 if backward else 0]))
    if group["merge_dims"]:
        x = _unmerged(x, shape, group)
    return x if x.flags.c_contiguous else np.array(x, order="C")
