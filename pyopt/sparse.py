"""Row-sparse gradients for embedding tables: ``pyopt.RowSparse(indices, rows)``.

An embedding lookup touches a few rows of a large table, so its gradient is those rows only
(torch: ``nn.Embedding(sparse=True)`` gives a sparse COO ``.grad``). ``opt.step`` takes a
``RowSparse`` wherever it takes a gradient, for a 2-D float32/float64 param, with these optimizers
(torch.optim's sparse-gradient semantics, checked against torch in tests/python/test_row_sparse.py):

  - ``sparse_adam`` (torch.optim.SparseAdam): "lazy" Adam, only the present rows update their
    moments and their param; the bias corrections use the param's step count;
  - ``adagrad`` (torch.optim.Adagrad's sparse path): ``sum`` updated on the present rows only;
    ``weight_decay`` must be 0 (torch raises too);
  - ``sgd`` / ``momentum`` / ``nag`` (torch.optim.SGD's sparse path): ``weight_decay`` must be 0
    (torch raises). Without momentum only the present rows change; with momentum torch keeps a
    momentum buffer over every row ever seen and steps them all, which is dense SGD on the
    gradient with zeros in the absent rows, so that is what pyopt runs;
  - ``rowwise_adagrad`` (pyopt.RowwiseAdagrad, FBGEMM's EXACT_ROWWISE_ADAGRAD).

Duplicate indices are summed, as torch's ``coalesce`` does (in the param's dtype, in the order
given; numpy: a stable sort and ``np.add.reduceat``). Then ``_core.apply_rows`` steps the present
rows of the param and its states in place: the optimizer's element-wise C++ kernel (the same SIMD
code as a dense step, the same per-step scalars) on each row, runs of consecutive rows as one span,
OpenMP threads sharing the rows, the GIL released. Every element gets the bits a dense step of the
gathered rows gives (tests/python/test_row_sparse.py checks that on every ISA path and thread
count), without copying the rows out and back. On a 1,000,000 x 64 float32 table (sparse_adam,
benchmarks/row_sparse.py's lookups, one thread) the row step takes 0.07 ms for 1365 distinct rows
(4096 lookups) and 0.9 ms for 13487 (65536 lookups), where gathering, stepping and scattering took
0.3 and 4.3 ms; summing the repeats (about 1 and 40 ms there) is now most of a step.
Not with the storage options (16-bit params or states, 8-bit states, master weights) nor
``clip_norm`` / ``clip_value`` / ``skip_nonfinite``: those refuse a RowSparse gradient with a
ValueError.

Rounding: sparse_adam's kernel computes in torch's order of operations. adagrad's and sgd's run
the dense kernels' (torch's dense paths), where torch's sparse paths multiply by lr after the
division (adagrad) or add sparse tensors unfused (sgd's momentum): a few float ulps apart.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import _core
from .storage import StorageOptions

__all__ = ["RowSparse"]

# The C++ rules that take a RowSparse through _core.apply_rows.
_RULES = ("sparse_adam", "adagrad", "sgd", "momentum", "nag")
ACCEPTED_BY = "sparse_adam, adagrad, rowwise_adagrad and sgd (momentum, nag)"


class RowSparse:
    """A gradient holding some rows of a 2-D param: ``rows[k]`` is the gradient of row
    ``indices[k]``; rows not listed have a zero gradient (and, for the lazy optimizers, no step).

    ``indices``: 1-D integers in ``[0, param rows)``, duplicates allowed (summed). ``rows``: shape
    ``(len(indices), param columns)``, any real dtype (converted to the param's). Both are checked
    against the param when the step reads them (TypeError / ValueError naming the gradient,
    before anything changes); they are only read.
    """

    __slots__ = ("indices", "rows", "_unique")

    def __init__(self, indices: Any, rows: Any) -> None:
        self.indices = indices if isinstance(indices, np.ndarray) else np.asarray(indices)
        self.rows = rows if isinstance(rows, np.ndarray) else np.asarray(rows)
        self._unique = False

    def __repr__(self) -> str:
        return f"RowSparse({self.indices.size} rows of {self.rows.shape[1:]} {self.rows.dtype})"

    def coalesced(self, param: np.ndarray, label: str) -> "RowSparse":
        """Checked against ``param`` and coalesced: sorted unique int64 indices, and fresh rows in
        the param's dtype with duplicates summed. ``label`` names the gradient in errors."""
        idx, rows = self.indices, self.rows
        if idx.dtype.kind not in "iu":
            raise TypeError(f"{label}: RowSparse indices must be integers, got dtype {idx.dtype}")
        if rows.dtype.kind not in "fiu":
            raise TypeError(f"{label}: RowSparse rows dtype {rows.dtype} is not a real number type")
        if param.ndim != 2:
            raise ValueError(f"{label}: a RowSparse gradient is for a 2-D param (rows x columns), "
                             f"the param has shape {param.shape}")
        if param.dtype not in (np.float32, np.float64):
            raise TypeError(f"{label}: a RowSparse gradient needs a float32 or float64 param, got {param.dtype}")
        if idx.ndim != 1:
            raise ValueError(f"{label}: RowSparse indices must be 1-D, got shape {idx.shape}")
        if rows.shape != (idx.size, param.shape[1]):
            raise ValueError(f"{label}: RowSparse rows have shape {rows.shape}, expected "
                             f"{(idx.size, param.shape[1])} (one row of the param's {param.shape[1]} columns "
                             "per index)")
        if idx.size:
            low, high = int(idx.min()), int(idx.max())
            if low < 0 or high >= param.shape[0]:
                bad = low if low < 0 else high
                raise ValueError(f"{label}: RowSparse index {bad} is out of range for a param of "
                                 f"{param.shape[0]} rows")
        out = RowSparse.__new__(RowSparse)
        out._unique = True
        order = np.argsort(idx, kind="stable")
        ordered = idx[order].astype(np.int64, copy=False)
        values = np.ascontiguousarray(rows[order], dtype=param.dtype)  # a fresh array
        if ordered.size > 1:
            starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
            if starts.size < ordered.size:
                ordered = ordered[starts]
                values = np.add.reduceat(values, starts, axis=0)
        out.indices, out.rows = ordered, values
        return out

    def dense(self, shape: tuple[int, ...]) -> np.ndarray:
        """The gradient as a dense array of ``shape`` (zeros in the absent rows); coalesced only."""
        assert self._unique
        out = np.zeros(shape, self.rows.dtype)
        out[self.indices] = self.rows
        return out


def refuse(optimizer_name: str, label: str) -> TypeError:
    """The error of an optimizer that does not take RowSparse gradients."""
    return TypeError(f"{label} is a pyopt.RowSparse, which {optimizer_name} does not take; the optimizers that "
                     f"take row-sparse gradients: {ACCEPTED_BY}")


def step(opt: Any, grads: Sequence[Any], plain: bool) -> bool:
    """One step of a C++-backed optimizer (``pyopt.Optimizer``, lock held, engine built) whose
    gradients include RowSparse ones: everything is checked first, then the dense gradients step
    through the engine, then the row-sparse ones, their rows in place through the rule's kernel."""
    who, name = opt._owner_label, opt.name
    labels = [f"{who}: the gradient of {label}" for label in opt._labels]
    sparse_at = [i for i, g in enumerate(grads) if isinstance(g, RowSparse)]
    if name not in _RULES:
        raise refuse(name, labels[sparse_at[0]])
    if len(grads) != len(opt._params):
        raise ValueError(f"{who}: expected {len(opt._params)} gradients (one per param), got {len(grads)}")
    if not plain:
        raise ValueError(f"{labels[sparse_at[0]]} is a pyopt.RowSparse: clip_norm, clip_value and skip_nonfinite "
                         "do not take row-sparse gradients")
    if opt._storage != StorageOptions():
        raise ValueError(f"{labels[sparse_at[0]]} is a pyopt.RowSparse, which the storage options "
                         f"({opt._storage.as_dict()}) do not take: keep float32/float64 params and states")
    flats = opt._flat_hypers()
    owner = [g for g, group in enumerate(opt.param_groups) for _ in group["params"]]
    dense = list(grads)
    work = []
    for i in sparse_at:
        group = opt.param_groups[owner[i]]
        if float(group.get("weight_decay", 0.0)) != 0.0:
            reference = "torch.optim.Adagrad" if name == "adagrad" else "torch.optim.SGD"
            raise ValueError(f"{labels[i]} is a pyopt.RowSparse: weight_decay must be 0 with row-sparse gradients "
                             f"(it is {group['weight_decay']}; {reference} refuses it with sparse gradients too)")
        coalesced = grads[i].coalesced(opt._params[i], labels[i])
        if name in ("sgd", "momentum", "nag") and float(group["momentum"]) != 0.0:
            dense[i] = coalesced.dense(opt._params[i].shape)  # torch's sparse momentum is dense momentum
        else:
            dense[i] = None
            work.append((i, coalesced))
    opt._engine.step(dense)  # checks the dense gradients; nothing has changed before this
    scalars = np.zeros(_core.MAX_SCALARS)
    for i, coalesced in work:
        opt._steps[i] += 1
        if not coalesced.indices.size:
            continue
        flat = flats[owner[i]]
        states = [opt._slots[i][slot] for slot, _ in _core.slots_needed(name, flat)]
        _core.apply_rows(name, opt._params[i], coalesced.indices, coalesced.rows, states, int(opt._steps[i]), flat,
                         scalars)
    return True
