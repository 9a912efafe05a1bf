"""Pieces shared by Python-written optimizers (AdamP, CAME, AdamMini): hyperparameter checks for
``PyOptimizer._check_hypers`` (each raises TypeError/ValueError naming the group, ``where``, and
the hyperparameter, and returns the value normalized; NaN is never accepted), and torch's fused
``add_(y, alpha=a)``."""
from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

import numpy as np

from ._pybase import real


def flag(where: str, name: str, value: Any) -> bool:
    """A bool hyperparameter (True/False, numpy's bool too)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where}: {name} must be a bool, got {value!r}")
    return bool(value)


def number(where: str, name: str, value: Any, low: float = -math.inf, high: float = math.inf,
           interval: str = "[]") -> float:
    """A real number in ``low .. high`` (``interval``: which ends are closed, e.g. "[)")."""
    x = real(where, name, value)
    above = x >= low if interval[0] == "[" else x > low
    below = x <= high if interval[1] == "]" else x < high
    if not (above and below):  # NaN fails both
        if math.isinf(high):
            rule = f"must be {'>=' if interval[0] == '[' else '>'} {low:g}"
        elif math.isinf(low):
            rule = f"must be {'<=' if interval[1] == ']' else '<'} {high:g}"
        else:
            rule = f"must be in {interval[0]}{low:g}, {high:g}{interval[1]}"
        raise ValueError(f"{where}: invalid {name}: {value!r} ({rule})")
    return x


def betas(where: str, value: Any, count: int, intervals: Sequence[str], name: str = "betas") -> tuple[float, ...]:
    """A tuple of ``count`` decay rates in [0, 1] with the given closed/open ends per member."""
    if not isinstance(value, (tuple, list)) or len(value) != count:
        raise TypeError(f"{where}: {name} must be a tuple of {count} floats, got {value!r}")
    return tuple(number(where, f"{name}[{i}]", b, 0.0, 1.0, iv) for i, (b, iv) in enumerate(zip(value, intervals)))


def positive_int(where: str, name: str, value: Any) -> int:
    """An int >= 1 (not a bool)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: {name} must be an int, got {value!r}")
    if int(value) < 1:
        raise ValueError(f"{where}: invalid {name}: {value} (must be >= 1)")
    return int(value)


def add_scaled(x: np.ndarray, y: np.ndarray, alpha: float) -> None:
    """``x.add_(y, alpha=alpha)`` in place. torch fuses it into an FMA with alpha in x's dtype: for
    float32 the product of two float32 numbers is exact in float64, so this is that FMA but for a
    double rounding; float64 rounds the product first."""
    if x.dtype == np.float32:
        x[...] = float(np.float32(alpha)) * y.astype(np.float64) + x
    else:
        x += alpha * y
