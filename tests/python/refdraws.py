"""Hyperparameter draws declared as data, for the reference table (reference_table.py).

A row lists, in draw order, one draw per hyperparameter. Every draw takes its random numbers from
the row's generator in a fixed order, so a row's cases never change when other rows are added.
The seed picks a mode: seed 0 turns every optional feature off, seed 1 turns every one on (the
extremes), other seeds draw each flag at random. ``Flag`` always consumes one random number, in
every mode, so the later draws of a row do not depend on the mode.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

MODES = {0: "off", 1: "on"}


def loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


@dataclass
class Drawing:
    """The state of one draw: the generator, the mode and what was drawn so far (in ``h``)."""

    rng: np.random.Generator
    mode: str
    h: dict[str, Any] = field(default_factory=dict)

    def flag(self) -> bool:
        coin = bool(self.rng.integers(2))
        return {"off": False, "on": True}.get(self.mode, coin)


class Draw:
    def __call__(self, d: Drawing) -> Any:  # pragma: no cover - every draw overrides it
        raise NotImplementedError


@dataclass(frozen=True)
class Log(Draw):
    """Log-uniform in [lo, hi], times ``scale`` (applied after the draw, as its own rounding)."""

    lo: float
    hi: float
    scale: float | None = None

    def __call__(self, d: Drawing) -> float:
        value = loguniform(d.rng, self.lo, self.hi)
        return value if self.scale is None else value * self.scale


@dataclass(frozen=True)
class Uniform(Draw):
    lo: float
    hi: float

    def __call__(self, d: Drawing) -> float:
        return float(d.rng.uniform(self.lo, self.hi))


@dataclass(frozen=True)
class Integer(Draw):
    """An integer in [lo, hi), as ``cast`` (float for hyperparameters the rules keep as reals)."""

    lo: int
    hi: int
    cast: Callable[[Any], Any] = float

    def __call__(self, d: Drawing) -> Any:
        return self.cast(d.rng.integers(self.lo, self.hi))


@dataclass(frozen=True)
class Flag(Draw):
    def __call__(self, d: Drawing) -> bool:
        return d.flag()


@dataclass(frozen=True)
class Fixed(Draw):
    """Always ``value``; a flag drawn as Fixed is not required to take both values."""

    value: Any

    def __call__(self, d: Drawing) -> Any:
        return self.value


@dataclass(frozen=True)
class Optional(Draw):
    """An optional feature: ``value`` is drawn, then a flag; 0 when the flag is off."""

    value: Draw

    def __call__(self, d: Drawing) -> Any:
        value = self.value(d)
        return value if d.flag() else 0.0


@dataclass(frozen=True)
class When(Draw):
    """A flag first; ``value`` is drawn only when it is on, else ``otherwise``."""

    value: Draw
    otherwise: Any = 0.0

    def __call__(self, d: Drawing) -> Any:
        return self.value(d) if d.flag() else self.otherwise


@dataclass(frozen=True)
class UnlessOff(Draw):
    """``value`` drawn in every mode but "off" (seed 0), where it is ``off`` (no flag drawn)."""

    value: Draw
    off: Any = 0.0

    def __call__(self, d: Drawing) -> Any:
        return self.off if d.mode == "off" else self.value(d)


@dataclass(frozen=True)
class Tuple(Draw):
    members: tuple[Draw, ...]

    def __init__(self, *members: Draw) -> None:
        object.__setattr__(self, "members", members)

    def __call__(self, d: Drawing) -> tuple:
        return tuple(m(d) for m in self.members)


@dataclass(frozen=True)
class Derived(Draw):
    """A value that depends on earlier draws: ``rule(d)`` reads ``d.h`` (e.g. SGD's nesterov needs
    momentum > 0 and dampening = 0)."""

    rule: Callable[[Drawing], Any]

    def __call__(self, d: Drawing) -> Any:
        return self.rule(d)


def draw_all(draws: dict[str, Draw], seed: int, salt: tuple[int, ...], flags: list[str]) -> dict[str, Any]:
    """Every draw of ``draws`` in order, then each of ``flags`` (the optimizer's boolean
    hyperparameters ``draws`` does not list, maximize among them) as a Flag."""
    d = Drawing(np.random.default_rng([seed, *salt]), MODES.get(seed, "random"))
    for key, draw in draws.items():
        d.h[key] = draw(d)
    for key in flags:
        d.h[key] = d.flag()
    return d.h
