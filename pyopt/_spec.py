"""The optimizer records (csrc/include/pyopt/records.def), seen from Python.

Each optimizer's record is the one place that states its facts: name, class, summary, paper,
reference, lr range, demo lr, and each hyperparameter's default, kind, valid range and tuner
search. ``_core.optimizers()`` exposes them; the classes, docstrings, ``pyopt list``, the docs
and the tuner's search space are derived from them here and in ``optimizers.py``/``catalog.py``.
Python shows the hyperparameters torch-style: ``beta1``/``beta2`` (/``beta3``) travel together
as ``betas`` (and the other tuples of ``_core.hyper_tuples()``: Rprop's ``etas`` and
``step_sizes``, QHAdam's ``nus``), and names an optimizer pins (``adamw``'s
``decoupled_weight_decay``) are not user-settable.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any, Mapping

from . import _core

# Hyperparameters the C++ rules keep flat and Python shows as one tuple, torch-style:
# tuple name -> its members, in order (a rule has a prefix of them, or none).
TUPLES: dict[str, tuple[str, ...]] = {name: tuple(members) for name, members in _core.hyper_tuples().items()}
_MEMBER = {m: (t, i) for t, ms in TUPLES.items() for i, m in enumerate(ms)}


@dataclass(frozen=True)
class HyperSpec:
    """One hyperparameter of a record, in the rule's order (its index in the flat vector)."""

    name: str
    default: float
    kind: str  # "real" | "bool" | "int"
    range: str  # "any" | "finite" | "nonnegative" | "positive" | "[0,1)" | "[0,1]" | "(0,1]" | ...
    search: str  # "fixed" | "log" | "one_minus_log" | "flag" | "weight_decay"
    low: float = 0.0
    high: float = 0.0
    keyword_only: bool = False
    doc: str = ""
    range_note: str = ""  # why the range (appended to its out-of-range message)

    @property
    def value(self) -> Any:
        """The default as Python shows it: a bool for flags, an int for integers."""
        if self.kind == "bool":
            return bool(self.default)
        if self.kind == "int":
            return int(self.default)
        return self.default


@dataclass(frozen=True)
class Param:
    """One public (torch-style) hyperparameter: a flat one, or a tuple of flat members."""

    name: str
    members: tuple[HyperSpec, ...]
    keyword_only: bool

    @property
    def is_tuple(self) -> bool:
        return self.name in TUPLES

    @property
    def default(self) -> Any:
        """As ``Spec.defaults`` shows it (integers as the floats the rules keep)."""
        values = tuple(bool(m.default) if m.kind == "bool" else m.default for m in self.members)
        return values if self.is_tuple else values[0]


@dataclass(frozen=True)
class Spec:
    name: str
    rule: str | None  # None: written in Python (muon, adafactor), no C++ rule
    hyper: tuple[tuple[str, float, str], ...]  # rule order: (name, default, kind)
    fixed: frozenset[str]
    slots: tuple[str, ...]
    scalars: tuple[tuple[str, float], ...]
    summary: str
    reference: str
    alias_of: str | None = None
    class_name: str = ""
    paper: str = ""
    paper_url: str = ""
    lr_range: tuple[float, float] = (1e-5, 1e-1)
    demo_lr: float = 0.0
    specs: tuple[HyperSpec, ...] = ()

    @property
    def defaults(self) -> dict[str, Any]:
        """Public hyperparameters with their defaults, in torch's spelling."""
        return {p.name: p.default for p in self.params}

    @cached_property
    def params(self) -> tuple[Param, ...]:
        """The public hyperparameters in signature order: positional ones first, then the
        keyword-only ones; a tuple sits where its first member is."""
        out: list[Param] = []
        for h in self.specs:
            if h.name in self.fixed:
                continue
            if h.name in _MEMBER and _MEMBER[h.name][0] in self._tuples:
                tup, index = _MEMBER[h.name]
                if index == 0:
                    members = tuple(s for m in self._tuples[tup] for s in self.specs if s.name == m)
                    out.append(Param(tup, members, h.keyword_only))
            else:
                out.append(Param(h.name, (h,), h.keyword_only))
        return tuple(p for p in out if not p.keyword_only) + tuple(p for p in out if p.keyword_only)

    @cached_property
    def _tuples(self) -> dict[str, tuple[str, ...]]:
        """The tuples this rule has (see TUPLES), with the members it has: beta1, beta2 (and beta3,
        as Adan has) travel together as ``betas``."""
        names = {h[0] for h in self.hyper}
        out = {t: tuple(m for m in ms if m in names) for t, ms in TUPLES.items()}
        # A tuple is a prefix of its members; a lone later member (NorMuon's beta2) stays flat.
        return {t: ms for t, ms in out.items() if ms and ms[0] == TUPLES[t][0]}

    @cached_property
    def _plan(self) -> tuple[tuple[str, str, int, str, float], ...]:
        """How to read each C++ hyperparameter from a group: (label, group key, index into betas
        or -1, kind, fixed value). Computed once; flat() runs before steps whose group changed."""
        plan = []
        for key, default, kind in self.hyper:
            if key in self.fixed:
                plan.append((key, "", -1, "fixed", default))
            elif key in _MEMBER and _MEMBER[key][0] in self._tuples:
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


def _hyper_spec(d: Mapping[str, Any]) -> HyperSpec:
    return HyperSpec(name=d["name"], default=float(d["default"]), kind=d["kind"], range=d["range"],
                     search=d["search"], low=float(d["low"]), high=float(d["high"]),
                     keyword_only=bool(d["keyword_only"]), doc=d["doc"], range_note=d.get("range_note", ""))


@lru_cache(maxsize=None)
def records() -> dict[str, Spec]:
    """Every optimizer's record by public name, those written in Python (rule None) included."""
    out = {}
    for name, d in _core.optimizers().items():
        specs = tuple(_hyper_spec(h) for h in d["hyper"])
        out[name] = Spec(
            name=name,
            rule=d["rule"],
            hyper=tuple((h.name, h.default, "bool" if h.kind == "bool" else "real") for h in specs),
            fixed=frozenset(d["fixed"]),
            slots=tuple(d["slots"]),
            scalars=tuple(tuple(s) for s in d["scalars"]),
            summary=d["summary"],
            reference=d["reference"],
            alias_of=d["alias_of"],
            class_name=d["class_name"],
            paper=d["paper"],
            paper_url=d["paper_url"],
            lr_range=(float(d["lr_range"][0]), float(d["lr_range"][1])),
            demo_lr=float(d["demo_lr"]),
            specs=specs,
        )
    return out


def record(name: str) -> Spec:
    """The record of any optimizer, the Python-written ones (muon, adafactor) included."""
    everything = records()
    if not isinstance(name, str) or name not in everything:
        raise ValueError(f"unknown optimizer {name!r}; available: {', '.join(everything)}")
    return everything[name]


@lru_cache(maxsize=None)
def _catalogue() -> dict[str, Spec]:
    """The optimizers with a C++ rule (what ``rule_optimizers()`` lists)."""
    return {name: s for name, s in records().items() if s.rule is not None}


def spec(name: str) -> Spec:
    catalogue = _catalogue()
    if not isinstance(name, str) or name not in catalogue:
        raise ValueError(f"unknown optimizer {name!r}; available: {', '.join(catalogue)}")
    return catalogue[name]


def available() -> list[str]:
    """Every optimizer name ``pyopt.create`` accepts: those with a C++ rule (and their aliases),
    then those written in Python (Muon, Adafactor, L-BFGS, ...), in the records' order."""
    return list(_catalogue()) + [name for name, s in records().items() if s.rule is None]


def rule_optimizers() -> list[str]:
    """The optimizers run by a C++ rule (and their aliases): those with a ``pyopt.Optimizer``
    class, a functional form (``pyopt.functional``), a C API entry and a benchmark."""
    return list(_catalogue())
