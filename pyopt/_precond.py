"""What the preconditioned optimizers (SOAP, Shampoo, Kron) share: per-param state that is not
shaped like the param (one matrix or vector per tensor dimension), checked and restored from a
layout each optimizer derives from the param's shape and its group's hyperparameters.

``_layout(p, group)`` names every state array a param's state holds after its first step, with
its shape and dtype. A step checks the live state against it (so a param reshaped in place, or a
hyperparameter that changes the layout, such as SOAP's ``max_precondition_dim``, edited after the
first step, is refused before anything changes), and ``load_state_dict`` checks a checkpoint's
arrays against it (under the checkpoint's own hyperparameters).
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, ClassVar, Mapping

import numpy as np

from ._pybase import PyOptimizer, real
from .optimizer import _saved_step, _state_array
from .storage import StorageOptions

Layout = dict[str, tuple[tuple[int, ...], np.dtype]]


class PreconditionedOptimizer(PyOptimizer):
    """A PyOptimizer whose per-param state arrays are named and shaped by ``_layout``."""

    scalar_state: ClassVar[tuple[str, ...]] = ()  # per-param numbers (besides "step") a state may hold

    def _layout(self, p: np.ndarray, group: Mapping[str, Any]) -> Layout:  # pragma: no cover
        raise NotImplementedError

    def _check_step(self, p: np.ndarray, g: np.ndarray, state: dict[str, Any], group: Mapping[str, Any],
                    label: str) -> None:
        if not any(isinstance(v, np.ndarray) for v in state.values()):
            return
        layout = self._layout(p, group)
        arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
        if set(arrays) != set(layout):
            raise ValueError(f"{label}: its state holds {sorted(arrays)}, but the param's shape {p.shape} and the "
                             f"group's hyperparameters now call for {sorted(layout)} (a hyperparameter that shapes the "
                             "state was changed, or the param reshaped, after its first step; zero_state() starts "
                             "afresh)")
        for name, (shape, dtype) in layout.items():
            value = arrays[name]
            if (value.shape != shape or value.dtype != dtype or not value.flags.c_contiguous
                    or not value.flags.writeable):
                raise ValueError(f"{label}: state {name!r} ({value.dtype} {value.shape}) no longer fits its param "
                                 f"(expected {np.dtype(dtype)} {shape})")

    def _restore_state(self, entries: dict[int, Mapping[str, Any]],
                       state_dict: Mapping[str, Any]) -> Callable[[], None]:
        who = self._owner_label
        saved_storage = state_dict.get("storage")
        if saved_storage is not None and saved_storage != StorageOptions().as_dict():
            raise ValueError(f"{who}: state_dict 'storage' is {saved_storage!r:.120}; {self.name} has no storage "
                             "options")
        groups = [self._saved_group_values(saved, group, f"{who}: state_dict param group {g}")
                  for g, (saved, group) in enumerate(zip(state_dict["param_groups"], self.param_groups))]
        owner = [g for g, group in enumerate(self.param_groups) for _ in group["params"]]
        new_state: dict[int, dict[str, Any]] = {}
        for i, entry in entries.items():
            p = self._params[i]
            where = f"{who}: state_dict param {i}"
            layout = self._layout(p, groups[owner[i]])
            restored: dict[str, Any] = {}
            for name, value in entry.items():
                if name == "step":
                    restored["step"] = _saved_step(value, where)
                elif name in self.scalar_state:
                    restored[name] = _saved_number(value, f"{where} state {name!r}")
                elif name in layout:
                    shape, dtype = layout[name]
                    restored[name] = _state_array(value, shape, dtype, f"{where} state {name!r}")
                else:
                    raise ValueError(f"{where} has unknown state {name!r} for {self.name}; with its param's shape "
                                     f"{p.shape} and these hyperparameters it holds {', '.join(sorted(layout))}")
            arrays = set(restored) - {"step", *self.scalar_state}
            missing = sorted(set(layout) - arrays) + [n for n in self.scalar_state if n not in restored]
            if arrays and missing:
                raise ValueError(f"{where}: state lacks {', '.join(map(repr, missing))}; {self.name} keeps "
                                 f"{', '.join(sorted(layout) + list(self.scalar_state))} for this param")
            if restored:
                restored.setdefault("step", 0)
            new_state[i] = restored

        def put_in_place() -> None:
            self._state = [new_state.get(i, {}) for i in range(len(self._params))]
        return put_in_place


def _saved_number(value: Any, what: str) -> float | int:
    """A per-param number from a state_dict (a Python number or a 0-d array), kept an int if it is one."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a real number, got {value!r:.80}")
    return int(value) if isinstance(value, numbers.Integral) else float(value)


# ----- hyperparameter checks --------------------------------------------------------------------
def nonnegative(where: str, group: Mapping[str, Any], key: str) -> float:
    value = real(where, key, group[key])
    if not value >= 0.0:
        raise ValueError(f"{where}: invalid {key}: {value} (must be >= 0)")
    return value


def unit_interval(where: str, group: Mapping[str, Any], key: str, closed_right: bool = False) -> float:
    value = real(where, key, group[key])
    if not (0.0 <= value <= 1.0 if closed_right else 0.0 <= value < 1.0):
        raise ValueError(f"{where}: invalid {key}: {value} (must be in [0, 1{']' if closed_right else ')'})")
    return value


def integer(where: str, group: Mapping[str, Any], key: str, low: int) -> int:
    value = group[key]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: {key} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"{where}: invalid {key}: {value} (must be >= {low})")
    return int(value)


def flag(where: str, group: Mapping[str, Any], key: str) -> bool:
    value = group[key]
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where}: {key} must be a bool, got {value!r}")
    return bool(value)


def lerp(start: np.ndarray, end: np.ndarray, weight: float) -> np.ndarray:
    """torch.lerp(start, end, weight) in start's dtype: ``start + w (end - start)`` if |w| < 0.5,
    else ``end - (1 - w)(end - start)`` (torch's two branches, which round differently)."""
    w = start.dtype.type(weight)
    diff = end - start
    if abs(w) < 0.5:
        return start + w * diff
    return end - (start.dtype.type(1) - w) * diff
