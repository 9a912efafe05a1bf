"""The stateless, in-place layer under the optimizer classes.

``pyopt.functional.<name>_(param, grad, *state, step, **hyper)`` applies one step of optimizer
``<name>`` to one array: ``state`` are the state arrays the rule needs for these hyperparameters,
in the order ``state_slots(name, **hyper)`` lists (e.g. Adam: ``exp_avg, exp_avg_sq`` and, with
``amsgrad=True``, ``max_exp_avg_sq``); ``step`` is the 1-based count of this step. Rules that keep
scalar state (NAdam's ``mu_product``) take it as a keyword and return its new value in a dict.

Storage (as the optimizer classes' ``state_dtype`` / ``master_weights`` / ``stochastic_rounding``
keep it): a state may be a ``ml_dtypes.bfloat16`` array, or for the rule's 8-bit slots a pair
``(codes uint8, absmax float32)`` (``pyopt.quantize_blockwise`` makes one); ``master=`` a float32 copy of a
float16/bfloat16 param, which the step updates and rounds into the param; ``rounding_seed=`` turns
on stochastic rounding of the 16-bit writes with that seed.

    m, v = np.zeros_like(w), np.zeros_like(w)
    for t in range(1, 101):
        pyopt.functional.adamw_(w, grad(w), m, v, step=t, lr=1e-3)
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from . import _core
from ._spec import rule_optimizers, spec

__all__ = ["state_slots"]


def state_slots(name: str, **hyper: Any) -> list[tuple[str, float]]:
    """The state arrays optimizer ``name`` needs with these hyperparameters: (slot, initial value)."""
    s = spec(name)
    group = {**s.defaults, **hyper}
    return [(str(slot), float(initial)) for slot, initial in _core.slots_needed(name, s.flat(group, name))]


def _make(name: str) -> Callable[..., Any]:
    s = spec(name)
    scalar_names = [n for n, _ in s.scalars]

    def apply(param: np.ndarray, grad: Any, *state: Any, step: int, master: np.ndarray | None = None,
              rounding_seed: int | None = None, **hyper: Any) -> dict[str, float] | None:
        scalars = np.zeros(_core.MAX_SCALARS)
        for j, (scalar, initial) in enumerate(s.scalars):
            scalars[j] = float(hyper.pop(scalar, initial))
        unknown = sorted(set(hyper) - set(s.defaults))
        if unknown:
            raise TypeError(
                f"{name}_: unknown hyperparameter {', '.join(map(repr, unknown))}; "
                f"valid: {', '.join([*s.defaults, *scalar_names])}"
            )
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
            raise TypeError(f"{name}_: step must be an int, got {step!r}")
        flat = s.flat({**s.defaults, **hyper}, f"{name}_")
        if rounding_seed is not None and (isinstance(rounding_seed, bool) or not isinstance(rounding_seed, (int, np.integer))
                                          or not 0 <= int(rounding_seed) < 2**63):
            raise TypeError(f"{name}_: rounding_seed must be an int in [0, 2**63), got {rounding_seed!r}")
        seed = -1 if rounding_seed is None else int(rounding_seed)
        _core.apply(name, param, grad, list(state), int(step), flat, scalars, master, seed)
        if scalar_names:
            return {n: float(scalars[j]) for j, n in enumerate(scalar_names)}
        return None

    apply.__name__ = apply.__qualname__ = f"{name}_"
    apply.__doc__ = (
        f"One in-place {name} step ({s.summary}; matches {s.reference}).\n\n"
        f"State arrays, in order: {', '.join(s.slots)} (only those the hyperparameters need; see state_slots).\n"
        f"Hyperparameters and defaults: {s.defaults}."
        + (f"\nScalar state keywords (returned updated): {scalar_names}." if scalar_names else "")
    )
    return apply


for _name in rule_optimizers():
    globals()[f"{_name}_"] = _make(_name)
    __all__.append(f"{_name}_")
del _name
