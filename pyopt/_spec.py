"""The optimizer catalogue as the C++ core declares it, seen from Python.

The C++ rules are the one source of truth for hyperparameter names, defaults and kinds. Python
shows them torch-style: ``beta1``/``beta2`` (/``beta3``) travel together as ``betas`` (and Rprop's
``etaminus``/``etaplus`` as ``etas``, ``step_size_min``/``step_size_max`` as ``step_sizes``,
QHAdam's ``nu1``/``nu2`` as ``nus``), and
names an optimizer pins (``adamw``'s ``decoupled_weight_decay``) are not user-settable.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any, Mapping

from . import _core

# Hyperparameters the C++ rules keep flat and Python shows as one tuple, torch-style:
# tuple name -> its members, in order (a rule has a prefix of them, or none).
TUPLES: dict[str, tuple[str, ...]] = {
    "betas": ("beta1", "beta2", "beta3"),
    "etas": ("etaminus", "etaplus"),
    "step_sizes": ("step_size_min", "step_size_max"),
    "nus": ("nu1", "nu2"),
}
_MEMBER = {m: (t, i) for t, ms in TUPLES.items() for i, m in enumerate(ms)}


@dataclass(frozen=True)
class Spec:
    name: str
    rule: str
    hyper: tuple[tuple[str, float, str], ...]  # rule order: (name, default, "real" | "bool")
    fixed: frozenset[str]
    slots: tuple[str, ...]
    scalars: tuple[tuple[str, float], ...]
    summary: str
    reference: str

    @property
    def defaults(self) -> dict[str, Any]:
        """Public hyperparameters with their defaults, in torch's spelling."""
        out: dict[str, Any] = {}
        for key, default, kind in self.hyper:
            if key in self.fixed:
                continue
            if key in _MEMBER:
                tup, index = _MEMBER[key]
                if index == 0:
                    given = dict((k, d) for k, d, _ in self.hyper)
                    out[tup] = tuple(given[m] for m in self._tuples[tup])
            else:
                out[key] = bool(default) if kind == "bool" else default
        return out

    @cached_property
    def _tuples(self) -> dict[str, tuple[str, ...]]:
        """The tuples this rule has (see TUPLES), with the members it has: beta1, beta2 (and beta3,
        as Adan has) travel together as ``betas``."""
        names = {h[0] for h in self.hyper}
        out = {t: tuple(m for m in ms if m in names) for t, ms in TUPLES.items()}
        return {t: ms for t, ms in out.items() if ms}

    @cached_property
    def _plan(self) -> tuple[tuple[str, str, int, str, float], ...]:
        """How to read each C++ hyperparameter from a group: (label, group key, index into betas
        or -1, kind, fixed value). Computed once; flat() runs before steps whose group changed."""
        plan = []
        for key, default, kind in self.hyper:
            if key in self.fixed:
                plan.append((key, "", -1, "fixed", default))
            elif key in _MEMBER:
                tup, index = _MEMBER[key]
                plan.append((f"{tup}[{index}]", tup, index, kind, 0.0))
            else:
                plan.append((key, key, -1, kind, 0.0))
        return tuple(plan)

    def flat(self, group: Mapping[str, Any], where: str) -> list[float]:
        """The group's hyperparameters as the C++ rule's flat vector; TypeError on bad types."""
        for tup, members in self._tuples.items():
            value = group[tup]
            n = len(members)
            if not isinstance(value, (tuple, list)) or len(value) != n:
                shape = "a pair" if n == 2 else f"a tuple of {n}"
                raise TypeError(f"{where}: {tup} must be {shape} of floats, got {value!r}")
        out = []
        for label, key, index, kind, fixed in self._plan:
            if kind == "fixed":
                out.append(fixed)
                continue
            value = group[key] if index < 0 else group[key][index]
            cls = type(value)
            if kind == "bool":
                if cls is not bool and not isinstance(value, _np_bool):
                    raise TypeError(f"{where}: {label} must be a bool, got {value!r}")
            elif cls is not float and cls is not int and (
                isinstance(value, (bool, _np_bool)) or not isinstance(value, numbers.Real)
            ):
                raise TypeError(f"{where}: {label} must be a real number, got {value!r}")
            out.append(float(value))
        return out

    def validate(self, flat: list[float], where: str) -> None:
        try:
            _core.validate(self.name, flat)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None


try:
    import numpy as _np

    _np_bool: type = _np.bool_
except ImportError:  # pragma: no cover
    _np_bool = bool


@lru_cache(maxsize=None)
def _catalogue() -> dict[str, Spec]:
    out = {}
    for name, d in _core.optimizers().items():
        if d["rule"] is None:  # written in Python (muon, adafactor)
            continue
        out[name] = Spec(
            name=name,
            rule=d["rule"],
            hyper=tuple((h["name"], h["default"], h["kind"]) for h in d["hyper"]),
            fixed=frozenset(d["fixed"]),
            slots=tuple(d["slots"]),
            scalars=tuple(tuple(s) for s in d["scalars"]),
            summary=d["summary"],
            reference=d["reference"],
        )
    return out


def spec(name: str) -> Spec:
    catalogue = _catalogue()
    if not isinstance(name, str) or name not in catalogue:
        raise ValueError(f"unknown optimizer {name!r}; available: {', '.join(catalogue)}")
    return catalogue[name]


def available() -> list[str]:
    return list(_catalogue())
