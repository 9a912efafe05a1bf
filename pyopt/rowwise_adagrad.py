r"""Row-wise Adagrad: one accumulator per row of an embedding table, as FBGEMM's
``EXACT_ROWWISE_ADAGRAD`` (pytorch/FBGEMM, fbgemm_gpu/codegen/genscript/optimizers.py,
``rowwise_adagrad``; the optimizer of DLRM's and TorchRec's embedding tables) runs it without
weight decay.

For each row ``r`` of a 2-D param with ``D`` columns and gradient row ``g`` (duplicate indices of a
``pyopt.RowSparse`` summed first, as FBGEMM's backward sums them):

.. math:: a_r \leftarrow a_r + \tfrac{1}{D}\textstyle\sum_j g_j^2;\quad
          p_r \leftarrow p_r - \frac{\eta}{\sqrt{a_r} + \epsilon}\, g

A ``RowSparse`` gradient updates only the rows it holds (their accumulators and params); a dense
gradient updates every row. A param of other than 2 dims has its rows along axis 0 (a 1-D param:
one element per row, which is element-wise Adagrad without lr_decay), so the tuner's tasks and
whole models can run it; FBGEMM's tables are 2-D. The accumulator (state ``sum``, shape ``(rows,)``) is kept in the
param's dtype (FBGEMM keeps float32 ones); the row mean of g² is numpy's (pairwise summation in
the param's dtype), the rest is element-wise numpy. Reference test: a float64 numpy model of the
FBGEMM update (tests/python/test_row_sparse.py).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ._pybase import PyOptimizer, real
from .optimizer import ParamsLike
from .sparse import RowSparse

__all__ = ["RowwiseAdagrad"]


class RowwiseAdagrad(PyOptimizer):
    r"""Row-wise Adagrad (FBGEMM's EXACT_ROWWISE_ADAGRAD, no weight decay): one accumulator of
    the mean squared gradient per row (rows along axis 0; FBGEMM's tables are 2-D). Takes dense
    gradients, and ``pyopt.RowSparse`` ones for 2-D params (only the rows present step).

    .. math:: a_r \leftarrow a_r + \mathrm{mean}_j(g_{rj}^2);\quad
              p_r \leftarrow p_r - \eta\, g_r / (\sqrt{a_r} + \epsilon)
    """

    name = "rowwise_adagrad"
    lr_range = (1e-4, 1.0)  # searched by pyopt.tuner
    slots = ("sum",)

    def __init__(self, params: ParamsLike, lr: float = 1e-2, eps: float = 1e-8, *, maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, eps=eps, maximize=maximize))

    def _check_param_extra(self, p: np.ndarray, label: str) -> None:
        if p.ndim == 0:
            raise ValueError(f"{label}: RowwiseAdagrad keeps one accumulator per row (axis 0); a 0-d param has none")

    def _state_shape(self, name: str, p: np.ndarray) -> tuple[int, ...] | None:
        return p.shape[:1]

    def _check_hypers(self, group: dict[str, Any], where: str) -> dict[str, Any]:
        out = dict(group)
        for key in ("lr", "eps"):
            out[key] = real(where, key, group[key])
            if not out[key] >= 0.0:
                raise ValueError(f"{where}: invalid {key}: {out[key]} (must be >= 0)")
        if not isinstance(group["maximize"], (bool, np.bool_)):
            raise TypeError(f"{where}: maximize must be a bool, got {group['maximize']!r}")
        out["maximize"] = bool(group["maximize"])
        return out

    def _check_grad(self, g: Any, p: np.ndarray, label: str) -> Any:
        self._check_param_extra(p, label)  # (reshaped in place since it was added?)
        if isinstance(g, RowSparse):
            return g.coalesced(p, f"{label}'s gradient")
        return super()._check_grad(g, p, label)

    def _update(self, p: np.ndarray, g: Any, state: dict[str, Any], group: Mapping[str, Any]) -> None:
        acc = state.get("sum")
        if acc is None:
            acc = state["sum"] = np.zeros(p.shape[:1], p.dtype)
        if isinstance(g, RowSparse):
            rows, g = g.indices, g.rows
        else:
            rows = slice(None)
            p, g = p.reshape(p.shape[0], -1), g.reshape(p.shape[0], -1)  # (views: p is C-contiguous)
        if g.size == 0:
            return
        dtype = p.dtype.type
        if group["maximize"]:
            g = -g
        acc[rows] += np.mean(g * g, axis=1)
        multiplier = dtype(group["lr"]) / (np.sqrt(acc[rows]) + dtype(group["eps"]))
        p[rows] -= multiplier[:, None] * g
