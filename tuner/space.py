"""Search spaces: which hyperparameters of an optimizer the tuner searches, over which ranges.

The optimizers declare their defaults and kinds (the C++ rules, seen through ``pyopt._spec``)
and their learning-rate range (``lr_range`` on each class, next to its definition); the rules
here turn those into Optuna distributions, by hyperparameter name:

- ``lr``: log-uniform over the class's ``lr_range`` (Lion-like sign methods 3-10x below Adam's).
- ``betas`` / ``beta``, ``momentum``, ``rho``, ``alpha`` (RMSprop): searched as 1 - beta on a log
  scale around the default, (1 - d)/10 .. min(0.5, 30(1 - d)), as the Deep Learning Tuning
  Playbook recommends for momentum-like parameters.
- ``weight_decay``: off, or log-uniform 1e-6 .. 0.3 (a conditional on/off choice).
- ``eps``: log-uniform over default/100 .. default·100 (when the default is > 0).
- ``nesterov``, ``amsgrad``, ``centered``: on/off.

Budgets: "lr" searches only lr; "core" adds the betas/momentum and weight decay; "full" adds eps
and the flags. "auto" picks by the trials available per optimizer (< 12: lr, < 40: core, else full).
Parameter names are prefixed with the optimizer (``adamw.lr``), so one study can search several
optimizers conditionally (``optimizer`` is the first, categorical choice).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyopt
from pyopt._spec import spec

BUDGETS = ("lr", "core", "full")
ONE_MINUS = ("beta", "momentum", "rho", "alpha")  # searched as 1 - value (log)
FLAGS = ("nesterov", "amsgrad", "centered")
WEIGHT_DECAY_RANGE = (1e-6, 0.3)


@dataclass(frozen=True)
class Dimension:
    """One searched hyperparameter: ``key`` (and ``index`` in a tuple) of the optimizer's
    hyperparameters, searched as ``kind`` ("log", "one_minus_log", "flag", "weight_decay")."""

    key: str
    index: int | None
    kind: str
    low: float = 0.0
    high: float = 0.0

    @property
    def label(self) -> str:
        name = self.key if self.index is None else f"{self.key}[{self.index}]"
        return f"1-{name}" if self.kind == "one_minus_log" else name


def defaults(optimizer: str) -> dict[str, Any]:
    """The optimizer's default hyperparameters (the class signature's)."""
    if optimizer in pyopt.available():
        return dict(spec(optimizer).defaults)
    import inspect

    cls: Any = {"muon": pyopt.Muon, "adafactor": pyopt.Adafactor}[optimizer]
    return {k: p.default for k, p in inspect.signature(cls).parameters.items() if k != "params"}


def lr_range(optimizer: str) -> tuple[float, float]:
    from pyopt.optimizers import CLASSES

    cls: Any = CLASSES.get(optimizer) or {"muon": pyopt.Muon, "adafactor": pyopt.Adafactor}[optimizer]
    return tuple(getattr(cls, "lr_range", (1e-5, 1e-1)))  # type: ignore[return-value]


def _one_minus_range(default: float) -> tuple[float, float]:
    gap = 1.0 - default
    if gap <= 0:
        return (1e-4, 0.5)
    return (max(gap / 10.0, 1e-5), min(0.5, gap * 30.0))


def dimensions(optimizer: str, budget: str) -> list[Dimension]:
    """The searched dimensions of ``optimizer`` under ``budget`` ("lr", "core" or "full")."""
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; one of {', '.join(BUDGETS)} (or auto)")
    d = defaults(optimizer)
    out = [Dimension("lr", None, "log", *lr_range(optimizer))]
    if budget == "lr":
        return out
    for key, value in d.items():
        if key == "lr" or isinstance(value, bool) and key not in FLAGS:
            continue
        if key in ("betas", "beta", "momentum", "rho", "alpha") and optimizer not in ("asgd",):
            values = value if isinstance(value, tuple) else (value,)
            for i, v in enumerate(values):
                if isinstance(v, (int, float)) and 0.0 < float(v) < 1.0:
                    out.append(Dimension(key, i if isinstance(value, tuple) else None, "one_minus_log",
                                         *_one_minus_range(float(v))))
        elif key == "weight_decay":
            out.append(Dimension(key, None, "weight_decay", *WEIGHT_DECAY_RANGE))
        elif budget == "full" and key == "eps" and isinstance(value, float) and value > 0:
            out.append(Dimension(key, None, "log", value / 100.0, value * 100.0))
        elif budget == "full" and key in FLAGS:
            if key == "nesterov" and not float(d.get("momentum", 0.0)) > 0.0:
                continue  # torch's rule: nesterov needs momentum (plain SGD searches none)
            out.append(Dimension(key, None, "flag"))
    return out


def auto_budget(trials_per_optimizer: float) -> str:
    return "lr" if trials_per_optimizer < 12 else "core" if trials_per_optimizer < 40 else "full"


def suggest(trial: Any, optimizer: str, budget: str) -> dict[str, Any]:
    """Draw ``optimizer``'s hyperparameters for an Optuna trial (the others keep their defaults)."""
    hyper = defaults(optimizer)
    for dim in dimensions(optimizer, budget):
        name = f"{optimizer}.{dim.label}"
        if dim.kind == "log":
            value: Any = trial.suggest_float(name, dim.low, dim.high, log=True)
        elif dim.kind == "one_minus_log":
            value = 1.0 - trial.suggest_float(name, dim.low, dim.high, log=True)
        elif dim.kind == "flag":
            value = trial.suggest_categorical(name, [False, True])
        else:  # weight_decay: off, or a log-uniform value
            on = trial.suggest_categorical(f"{optimizer}.weight_decay_on", [False, True])
            value = trial.suggest_float(name, dim.low, dim.high, log=True) if on else 0.0
        _assign(hyper, dim, value)
    return hyper


def default_params(optimizer: str, budget: str) -> dict[str, Any]:
    """Optuna parameter values that reproduce the optimizer's defaults (clipped into the ranges):
    enqueued as the first trial of each optimizer, a warm start."""
    d = defaults(optimizer)
    out: dict[str, Any] = {}
    for dim in dimensions(optimizer, budget):
        name = f"{optimizer}.{dim.label}"
        value = d[dim.key] if dim.index is None else d[dim.key][dim.index]
        if dim.kind == "log":
            out[name] = min(max(float(value), dim.low), dim.high)
        elif dim.kind == "one_minus_log":
            out[name] = min(max(1.0 - float(value), dim.low), dim.high)
        elif dim.kind == "flag":
            out[name] = bool(value)
        else:
            out[f"{optimizer}.weight_decay_on"] = float(value) > 0
            if float(value) > 0:
                out[name] = min(max(float(value), dim.low), dim.high)
    return out


def _assign(hyper: dict[str, Any], dim: Dimension, value: Any) -> None:
    if dim.index is None:
        hyper[dim.key] = value
    else:
        items = list(hyper[dim.key])
        items[dim.index] = value
        hyper[dim.key] = tuple(items)


def describe(optimizer: str, budget: str = "full") -> str:
    """One line per dimension, for ``pyopt tune --list``."""
    parts = []
    for dim in dimensions(optimizer, budget):
        if dim.kind == "flag":
            parts.append(f"{dim.label} in {{False, True}}")
        elif dim.kind == "weight_decay":
            parts.append(f"{dim.label}: off or log[{dim.low:g}, {dim.high:g}]")
        else:
            parts.append(f"{dim.label}: log[{dim.low:g}, {dim.high:g}]")
    return "; ".join(parts)


