"""The harness shared by the reference tests (test_reference*.py) and the per-optimizer tests.

The matrix (ISA paths, dtypes, tensor shapes, steps, seeds), error helpers, a small trajectory
cache, ISA/thread switches, torch with a correctly rounded sqrt, and the PYOPT_REFERENCE_REPORT
dump. The optimizers, their references, draws and tolerances are rows of reference_table.py.
torch is imported only by the helpers that need it.
"""
from __future__ import annotations

import collections
import contextlib
import functools
import json
import os
from typing import Any, Callable, Hashable, Iterator

import numpy as np

import pyopt
from refdraws import loguniform  # noqa: F401 - used by the per-optimizer tests

ISAS = list(pyopt.info()["isa_available"])
DTYPES = {"float32": np.float32, "float64": np.float64}
# Sizes 1, 7, 17, 1023, 100003; two of them 2-D.
SHAPES = [(1,), (7,), (1, 17), (31, 33), (100003,)]
STEPS = 100
# Seed 0: every optional feature off; 1: every feature on; 2, 3: everything drawn at random.
SEEDS = (0, 1, 2, 3)


@functools.lru_cache(maxsize=None)
def fma_isas() -> tuple[str, ...]:
    """pyopt's ISA paths with hardware FMA where torch fuses too. torch fuses only when its own
    kernels run with AVX2 or AVX-512 (ATEN_CPU_CAPABILITY=default would turn that off): otherwise,
    or without torch, there are none."""
    try:
        import torch
    except ImportError:
        return ()

    return tuple(i for i in ("avx2", "avx512") if i in ISAS) \
        if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") else ()


def merge_errors(into: dict[str, float], errors: dict[str, float]) -> None:
    """Keep the largest value seen for each error name."""
    for k, v in errors.items():
        into[k] = max(into.get(k, 0.0), v)


def update_error(params: list[np.ndarray], initial: list[np.ndarray],
                 ref_params: list[np.ndarray]) -> tuple[float, float]:
    """The normwise error of the total update, ||Δp − Δp_ref|| / ||Δp_ref|| (Δp from ``initial``),
    and ||Δp_ref||²."""
    num = den = 0.0
    for p, p0, rp in zip(params, initial, ref_params):
        num += float(np.sum((p.astype(np.float64) - rp) ** 2))
        den += float(np.sum((rp.astype(np.float64) - p0) ** 2))
    return ((num / den) ** 0.5 if den > 0 else float(num > 0)), den


class RecentCache:
    """The last ``keep`` computed values (first in, first out): the ISA loop is innermost in the
    test matrix, so each reference trajectory is computed once and memory stays flat."""

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self.items: collections.OrderedDict = collections.OrderedDict()

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        if key not in self.items:
            self.items[key] = compute()
            while len(self.items) > self.keep:
                self.items.popitem(last=False)
        return self.items[key]


@contextlib.contextmanager
def isa_path(isa: str) -> Iterator[str]:
    """Switch the kernels to ISA path ``isa``; restore the previous path afterwards."""
    saved = pyopt.info()["isa"]
    pyopt.set_isa(isa)
    try:
        assert pyopt.info()["isa"] == isa
        yield isa
    finally:
        pyopt.set_isa(saved)


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[int]:
    """Run pyopt's kernels on ``n`` threads; restore the previous count afterwards."""
    saved = pyopt.info()["num_threads"]
    pyopt.set_num_threads(n)
    try:
        yield pyopt.info()["num_threads"]
    finally:
        pyopt.set_num_threads(saved)


@contextlib.contextmanager
def ieee_sqrt() -> Iterator[None]:
    """torch with a correctly rounded sqrt: Tensor.sqrt and Tensor.sqrt_ (all the single-tensor
    paths call) through numpy. float32 goes through float64, which rounds correctly for sqrt."""
    import torch

    def sqrt(t: torch.Tensor) -> torch.Tensor:
        a = t.numpy()
        return torch.from_numpy(np.sqrt(a.astype(np.float64)).astype(a.dtype))

    def sqrt_(t: torch.Tensor) -> torch.Tensor:
        return t.copy_(sqrt(t))

    saved = {k: torch.Tensor.__dict__[k] for k in ("sqrt", "sqrt_") if k in torch.Tensor.__dict__}
    torch.Tensor.sqrt, torch.Tensor.sqrt_ = sqrt, sqrt_
    try:
        yield
    finally:
        for k in ("sqrt", "sqrt_"):
            if k in saved:
                setattr(torch.Tensor, k, saved[k])
            else:
                delattr(torch.Tensor, k)


_REPORTED: dict[str, dict[str, float]] = {}  # every module's errors of this pytest run


def write_report(observed: dict[tuple[str, str, str], dict[str, float]]) -> None:
    """If PYOPT_REFERENCE_REPORT=<path> is set, dump the largest observed errors there as JSON: those
    of every module that reported in this run (the test_reference*.py files)."""
    path = os.environ.get("PYOPT_REFERENCE_REPORT")
    if path:
        _REPORTED.update({"/".join(k): v for k, v in observed.items()})
        with open(path, "w") as f:
            json.dump(dict(sorted(_REPORTED.items())), f, indent=1)
