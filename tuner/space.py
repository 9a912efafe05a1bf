"""Search spaces: which hyperparameters of an optimizer the tuner searches, over which ranges.

Everything comes from the optimizer records (csrc/include/pyopt/records.def, through ``pyopt._spec``):
each hyperparameter declares its search kind and bounds (the core resolves bounds a record leaves
at 0: see Search in csrc/include/pyopt/record.hpp), and the rules here turn the kinds into Optuna
distributions (no rule looks at a hyperparameter's name):

- ``log``: log-uniform over (low, high); for ``lr`` the record's ``lr_range``, for eps-like ones
  default/100 .. default·100, SophiaG's rho 0.01 .. 0.1.
- ``one_minus_log``: 1 - value on a log scale around the default, (1 - d)/10 .. min(0.5, 30(1 - d)),
  as the Deep Learning Tuning Playbook recommends for momentum-like parameters (betas, momentum).
- ``weight_decay``: off, or log-uniform 1e-6 .. 0.3 (a conditional on/off choice).
- ``flag``: on/off.
- ``fixed``: not searched.

Budgets: "lr" searches only lr; "core" adds the one_minus_log and weight_decay dimensions; "full"
adds the other log ones (eps, SophiaG's rho) and the flags. "auto" picks by the trials available
per optimizer (< 12: lr, < 40: core, else full). Parameter names are prefixed with the optimizer
(``adamw.lr``), so one study can search several optimizers conditionally (``optimizer`` is the
first, categorical choice).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import pyopt
from pyopt._spec import record, spec

BUDGETS = ("lr", "core", "full")
# The budget from which on each search kind is searched.
KIND_BUDGET = {"one_minus_log": "core", "weight_decay": "core", "log": "full", "flag": "full"}


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


def tunable() -> list[str]:
    """The optimizers the tuner searches: all of pyopt's but those whose step takes a closure."""
    from pyopt._pybase import python_optimizer

    return [n for n in pyopt.available() if not getattr(python_optimizer(n), "step_requires_closure", False)]


def check_tunable(optimizer: str) -> None:
    """ValueError saying why, for an optimizer the tuner cannot train (or does not know)."""
    from pyopt._pybase import python_optimizer

    cls = python_optimizer(optimizer) if isinstance(optimizer, str) else None
    if cls is not None and cls.step_requires_closure:
        raise ValueError(f"{optimizer} cannot be tuned: its step takes a closure (step(closure), which evaluates "
                         "the loss and gradient several times per step), and the tuner's training loop calls "
                         "step(grads) once per batch")
    if optimizer not in tunable():
        raise ValueError(f"unknown optimizer {optimizer!r}; available: {', '.join(sorted(tunable()))}")


def defaults(optimizer: str) -> dict[str, Any]:
    """The optimizer's default hyperparameters (the class signature's)."""
    if record(optimizer).rule is not None:
        return dict(spec(optimizer).defaults)
    import inspect

    cls: Any = getattr(pyopt, record(optimizer).class_name)
    return {k: p.default for k, p in inspect.signature(cls).parameters.items() if k != "params"}


def lr_range(optimizer: str) -> tuple[float, float]:
    return record(optimizer).lr_range


def dimensions(optimizer: str, budget: str) -> list[Dimension]:
    """The searched dimensions of ``optimizer`` under ``budget`` ("lr", "core" or "full")."""
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; one of {', '.join(BUDGETS)} (or auto)")
    s = record(optimizer)
    out = [Dimension("lr", None, "log", *s.lr_range)]
    for param in s.params:
        for i, h in enumerate(param.members):
            if h.name == "lr" or h.search == "fixed" or BUDGETS.index(budget) < BUDGETS.index(KIND_BUDGET[h.search]):
                continue
            out.append(Dimension(param.name, i if param.is_tuple else None, h.search, h.low, h.high))
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




# ----- lr schedules (``--schedules``) ------------------------------------------------------------
# The schedule is one more searched dimension when ``--schedules`` names more than "constant" (the
# default, which adds no parameter at all: a study without it is what it was before). Every run
# gets a complete schedule over its own steps (``train``), so a low-fidelity run is a short run
# that ends annealed, not the start of a long one.
#
# - ``constant``: the optimizer's lr throughout.
# - ``cosine``: optional linear warmup, then cosine decay to 0 (Loshchilov & Hutter 2017; the
#   usual default for fixed-length runs).
# - ``wsd``: warmup-stable-decay: constant lr, then the last ``WSD_DECAY_FRACTION`` of the steps
#   decay to 0 along 1 - sqrt. Hägele et al. 2024 ("Scaling Laws and Compute-Optimal Training
#   Beyond Fixed Training Durations") find a 20% cooldown matches cosine and 1 - sqrt beats a
#   linear one; fixed here rather than searched, so the dimension stays one choice.
#
# Knobs: only the warmup fraction, {0, 0.05} of the run's steps, and only from budget "core" on
# (the second-order choices come after lr, as the optimizers' own). Two values: warmup mostly
# matters for the first steps of Adam-like methods at high lr, where some warmup beats none and
# its exact length matters little; a continuous range would spend trials on a flat dimension.
#
# Schedule-free optimizers (``train_mode``/``eval()``: schedulefree_adamw, schedulefree_sgd) get
# no schedule: doing without one is their point (Defazio et al. 2024; the reference takes a
# warmup only, its own ``warmup_steps``). The learning-rate-free ones (prodigy, dadapt_*, dog,
# ...) do: their lr is a multiplier on the estimated step, and the reference codes recommend
# a schedule on top (Prodigy's README: cosine annealing; D-Adaptation's: "use the same schedule
# as for the base optimizer"), which is what scaling group["lr"] does.
SCHEDULES = ("constant", "cosine", "wsd")
WARMUP_FRACTIONS = (0.0, 0.05)
WSD_DECAY_FRACTION = 0.2
WSD_DECAY = "sqrt"


def check_schedules(schedules: Any) -> tuple[str, ...]:
    """``schedules`` (a comma-separated string or a sequence of names) as a tuple without
    duplicates; ValueError naming the option for anything else. None: ("constant",)."""
    if schedules is None:
        return ("constant",)
    names = [s.strip() for s in schedules.split(",")] if isinstance(schedules, str) else schedules
    if isinstance(names, (bytes, dict)) or not hasattr(names, "__iter__"):
        raise ValueError(f"schedules (--schedules) must be a comma-separated list of {', '.join(SCHEDULES)}, "
                         f"got {schedules!r}")
    names = list(names)
    bad = [n for n in names if n not in SCHEDULES]
    if bad:
        raise ValueError(f"schedules (--schedules): unknown schedule(s) {', '.join(map(repr, bad))}; "
                         f"one of {', '.join(SCHEDULES)}")
    if not names:
        raise ValueError(f"schedules (--schedules): empty; give some of {', '.join(SCHEDULES)}")
    return tuple(dict.fromkeys(names))


def searches_schedules(schedules: Sequence[str]) -> bool:
    return tuple(schedules) != ("constant",)


def schedule_free(optimizer: str) -> bool:
    """True for the schedule-free optimizers (they average iterates; ``eval()`` swaps the average in)."""
    return hasattr(getattr(pyopt, record(optimizer).class_name, None), "train_mode")


def takes_schedule(optimizer: str, schedules: Sequence[str]) -> bool:
    """Whether trials of ``optimizer`` draw a schedule (the study searches them and it is not schedule-free)."""
    return searches_schedules(schedules) and not schedule_free(optimizer)


def portfolio_schedules(schedules: Sequence[str]) -> tuple[str, list[str]]:
    """(baseline, others): the schedule of each optimizer's defaults in the phased portfolio
    ("constant" when listed: the optimizer as shipped, else the first) and those its lr sweep
    points take in turn (the others, in the order given; the baseline alone if there is none)."""
    baseline = "constant" if "constant" in schedules else schedules[0]
    others = [s for s in schedules if s != baseline] or [baseline]
    return baseline, others


def schedule_params(optimizer: str, schedules: Sequence[str], budget: str, name: str,
                    warmup: float = 0.0) -> dict[str, Any]:
    """The Optuna params that fix schedule ``name`` (with ``warmup``) for an enqueued trial of
    ``optimizer``; {} when it draws no schedule."""
    if not takes_schedule(optimizer, schedules):
        return {}
    out: dict[str, Any] = {"schedule": name}
    if name != "constant" and budget != "lr":
        out["schedule.warmup"] = warmup
    return out


def suggest_schedule(trial: Any, optimizer: str, schedules: Sequence[str], budget: str) -> dict[str, Any] | None:
    """Draw the trial's schedule: {"name", "warmup"} (warmup a fraction of the run's steps), or
    None when the study searches none. Schedule-free optimizers get {"name": "constant"} and no
    Optuna parameter."""
    if not searches_schedules(schedules):
        return None
    if schedule_free(optimizer):
        return {"name": "constant", "warmup": 0.0}
    name = trial.suggest_categorical("schedule", list(schedules))
    warmup = 0.0
    if name != "constant" and budget != "lr":
        warmup = float(trial.suggest_categorical("schedule.warmup", list(WARMUP_FRACTIONS)))
    return {"name": name, "warmup": warmup}


def make_schedule(spec: dict[str, Any], total_steps: int) -> Any:
    """The ``pyopt.schedules`` multiplier schedule of ``spec`` ({"name", "warmup"}) over
    ``total_steps`` steps (attach it with ``.attach(opt)``: group lr = its lr x the value)."""
    from pyopt import schedules as sch

    name = spec["name"]
    warmup_steps = int(round(float(spec.get("warmup", 0.0)) * total_steps))
    if name == "constant":
        return sch.constant()
    if name == "cosine":
        return sch.cosine(total_steps, warmup_steps=min(warmup_steps, total_steps - 1))
    if name == "wsd":
        decay_steps = int(round(WSD_DECAY_FRACTION * total_steps))
        return sch.wsd(total_steps, warmup_steps=min(warmup_steps, total_steps - decay_steps),
                       decay_fraction=WSD_DECAY_FRACTION, decay=WSD_DECAY)
    raise ValueError(f"schedules (--schedules): unknown schedule {name!r}; one of {', '.join(SCHEDULES)}")


def describe_schedule(spec: dict[str, Any] | None) -> str:
    """``cosine`` / ``cosine warmup=0.05`` / ``constant``."""
    if not spec:
        return "constant"
    warmup = float(spec.get("warmup", 0.0))
    return spec["name"] + (f" warmup={warmup:g}" if warmup else "")
