"""A base class for optimizers written in Python (numpy) rather than in the C++ core.

Some rules are not elementwise (Muon orthogonalizes each whole matrix with GEMMs), so they do not
fit the C++ engine. ``PyOptimizer`` gives them the same user-facing API as ``pyopt.Optimizer``:
params as an array / list / dict / param groups, ``step(grads)``, editable ``param_groups``,
``state``, ``state_dict()`` / ``load_state_dict()`` in the same format (so ``pyopt.save`` /
``pyopt.load`` work), ``zero_state()`` and attachable lr schedules. The helpers that parse params
and grads are those of ``pyopt.optimizer``, not copies.

A subclass sets ``name`` and ``slots`` (its per-param state arrays) and implements
``_check_hypers`` (validate and normalize a group's hyperparameters), optionally
``_check_param_extra`` (extra rules on a param, e.g. its shape) and ``_update`` (one param's step).
"""
from __future__ import annotations

import importlib
import numbers
import threading
from typing import Any, ClassVar, Mapping

import numpy as np

from . import _core
from .optimizer import (
    GradsLike,
    Optimizer,
    ParamGroup,
    ParamsLike,
    _as_groups,
    _as_param_list,
    _check_no_overlap,
    _check_disjoint,
    _check_state_dict,
    _locked,
    _saved_step,
    _state_array,
    _state_dict,
    restore_schedules,
    save_schedules,
)

# Optimizers implemented in Python, by state_dict name -> module defining them (``pyopt.load``
# looks here before the C++ catalogue).
_MODULES = {"muon": ".muon", "adafactor": ".adafactor"}


def python_optimizer(name: str) -> type["PyOptimizer"] | None:
    """The Python optimizer class saved under ``name`` in a state_dict, or None."""
    module = _MODULES.get(name)
    if module is None:
        return None
    mod = importlib.import_module(module, __package__)
    return next(c for c in vars(mod).values()
                if isinstance(c, type) and issubclass(c, PyOptimizer) and c.name == name)


class PyOptimizer:
    """Base class of the optimizers implemented in Python (see the module docstring)."""

    name: ClassVar[str] = ""
    slots: ClassVar[tuple[str, ...]] = ()  # per-param state arrays, shaped and typed like the param
    tuples: ClassVar[frozenset[str]] = frozenset()  # tuple hyperparameters (lists in a state_dict)

    def __init__(self, params: ParamsLike, defaults: Mapping[str, Any]) -> None:
        self._owner_label = type(self).__name__
        self.defaults: dict[str, Any] = self._check_hypers(dict(defaults), self._owner_label)
        self.param_groups: list[ParamGroup] = []
        self._params: list[np.ndarray] = []
        self._labels: list[str] = []
        self._names: list[str] | None = None
        self._state: list[dict[str, Any]] = []  # per param: {} until its first step
        # ParamGroup's edit hooks set these (the C++ engine uses them); hyperparameters are read
        # afresh at every step here, so they are bookkeeping only.
        self._engine: Any = None
        self._hyper_changed = False
        self._schedules: list[Any] = []
        self._pending_schedules: list[dict[str, Any]] = []
        self._lock = threading.RLock()  # serializes step, load_state_dict, ... (see Optimizer)
        for group in _as_groups(params, self._owner_label):
            self.add_param_group(group)

    # ----- subclass hooks ------------------------------------------------------------------
    def _check_hypers(self, group: dict[str, Any], where: str) -> dict[str, Any]:  # pragma: no cover
        """Check a group's hyperparameters (TypeError / ValueError naming ``where``); return them
        normalized (e.g. tuples as tuples)."""
        raise NotImplementedError

    def _state_shape(self, name: str, p: np.ndarray) -> tuple[int, ...] | None:
        """The shape of state array ``name`` of param ``p`` (None: this param has no such state)."""
        return p.shape

    def _check_param_extra(self, p: np.ndarray, label: str) -> None:
        """Rules on a param beyond pyopt's usual ones (float32/float64, C-contiguous, writeable)."""

    def _update(self, p: np.ndarray, g: np.ndarray, state: dict[str, Any], group: Mapping[str, Any]) -> None:
        raise NotImplementedError  # pragma: no cover

    # ----- params and groups ---------------------------------------------------------------
    @_locked
    def add_param_group(self, param_group: Mapping[str, Any]) -> None:
        """Add a group of params with its own hyperparameters (defaults fill the rest)."""
        who = self._owner_label
        if not isinstance(param_group, Mapping) or "params" not in param_group:
            raise TypeError(f"{who}: a param group is a dict with a 'params' entry")
        params, names = _as_param_list(param_group["params"], who)
        if not params:
            raise ValueError(f"{who}: a param group has no params")
        unknown = sorted(set(param_group) - set(self.defaults) - {"params"})
        if unknown:
            raise TypeError(
                f"{who}: unknown hyperparameter {', '.join(map(repr, unknown))} in a param group; "
                f"valid: {', '.join(self.defaults)}"
            )
        if self._params and (names is not None) != (self._names is not None):
            raise ValueError(f"{who}: either every param group names its params (dict) or none does")
        start = len(self._params)
        labels = [f"params[{n!r}]" for n in names] if names is not None else [
            f"params[{start + k}]" for k in range(len(params))]
        for p, label in zip(params, labels):
            _core.check_param(p, f"{who}: {label}")
            self._check_param_extra(p, f"{who}: {label}")
        _check_no_overlap(self._params + params, self._labels + labels, who)
        if names is not None:
            taken = set(self._names or [])
            clash = [n for n in names if n in taken]
            if clash:
                raise ValueError(f"{who}: param names used twice: {clash}")
        values = {**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}}
        values = self._check_hypers(values, f"{who} (param group {len(self.param_groups)})")

        group = ParamGroup(self, values)  # type: ignore[arg-type]
        dict.__setitem__(group, "params", list(params))
        self.param_groups.append(group)
        self._params.extend(params)
        self._labels.extend(labels)
        if names is not None:
            self._names = (self._names or []) + list(names)
        self._state.extend({} for _ in params)

    # ----- stepping ------------------------------------------------------------------------
    def step(self, grads: GradsLike) -> None:
        """Update every param in place from its gradient.

        ``grads``: one gradient per param, as a list in the order of the params (``None`` skips
        a param this step), a dict keyed like the params, or a lone array for a lone param.
        A gradient of another real dtype is converted to the param's dtype. NaN or Inf are not
        masked. All or nothing: every param, gradient, state array and hyperparameter is checked
        (shapes, dtypes, writeability, no array of the step sharing memory with another one
        written by it) before any array, step count or attached schedule changes. Thread-safe:
        concurrent calls on one optimizer run one after the other.
        """
        who = self._owner_label
        with self._lock:
            glist = self._grad_list(grads)  # type: ignore[misc]
            if len(glist) != len(self._params):
                raise ValueError(f"{who}: expected {len(self._params)} gradients (one per param), got {len(glist)}")
            hypers = self._groups_checked()
            owner = [g for g, group in enumerate(self.param_groups) for _ in group["params"]]
            checked = []
            arrays = []  # (array, label, written by the step)
            for i, (p, g) in enumerate(zip(self._params, glist)):
                if g is None:
                    continue
                label = f"{who}: {self._labels[i]}"
                _core.check_param(p, label)  # e.g. made read-only since it was added
                grad = self._check_grad(g, p, label)
                self._check_step(p, grad, self._state[i], hypers[owner[i]], label)
                checked.append((i, grad))
                arrays.append((p, self._labels[i], True))
                arrays.append((grad, f"the gradient of {self._labels[i]}", False))
                arrays.extend((v, f"{self._labels[i]} state {k!r}", True)
                              for k, v in self._state[i].items() if isinstance(v, np.ndarray))
            _check_disjoint(arrays, who)
            saved = save_schedules(self)
            try:
                for schedule in self._schedules:
                    schedule._before_step(self)
                if self._schedules:
                    hypers = self._groups_checked()  # the lrs the schedules set
            except BaseException:
                restore_schedules(self, saved)
                raise
            for i, g in checked:
                state = self._state[i]
                state["step"] = state.get("step", 0) + 1
                self._update(self._params[i], g, state, hypers[owner[i]])

    def _check_step(self, p: np.ndarray, g: np.ndarray, state: dict[str, Any], group: Mapping[str, Any],
                    label: str) -> None:
        """Checks one param's step before any param of the step changes (a subclass hook: e.g.
        the state arrays it will use). ``g`` is the checked gradient; nothing may be modified."""
        for name in self.slots:
            shape = self._state_shape(name, p)
            value = state.get(name)
            if value is not None and (shape is None or value.shape != shape or value.dtype != p.dtype
                                      or not value.flags.c_contiguous or not value.flags.writeable):
                raise ValueError(f"{label}: state {name!r} no longer fits its param")

    def _check_grad(self, g: Any, p: np.ndarray, label: str) -> np.ndarray:
        arr = g if isinstance(g, np.ndarray) else np.asarray(g)
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"{label}: gradient dtype {arr.dtype} is not a real number type")
        if arr.shape != p.shape:
            raise ValueError(f"{label}: gradient shape {arr.shape} does not match param shape {p.shape}")
        return arr.astype(p.dtype, copy=False)

    def _groups_checked(self) -> list[dict[str, Any]]:
        """Every group's hyperparameters, checked (they may have been edited since the last step),
        and its params list unedited."""
        out = []
        index = 0
        for g, group in enumerate(self.param_groups):
            where = f"{self._owner_label} (param group {g})"
            count = len(group["params"])
            if index + count > len(self._params) or any(
                p is not q for p, q in zip(group["params"], self._params[index : index + count])
            ):
                raise ValueError(f"{where}: its 'params' list was edited; use add_param_group instead")
            index += count
            missing = [k for k in self.defaults if k not in group]
            if missing:
                raise ValueError(f"{where}: missing hyperparameter(s) {missing}")
            out.append(self._check_hypers({k: group[k] for k in self.defaults}, where))
        if index != len(self._params):
            raise ValueError(f"{self._owner_label}: param groups were edited; use add_param_group instead")
        return out

    # The same grads parsing, schedule hooks and repr as the C++-backed optimizers.
    _grad_list = Optimizer._grad_list
    schedules = Optimizer.schedules
    _attach_schedule = Optimizer._attach_schedule
    __repr__ = Optimizer.__repr__

    # ----- state ---------------------------------------------------------------------------
    @property
    def state(self) -> dict[int, dict[str, Any]]:
        """Per-param state by param index (live arrays; ``state_dict`` returns copies)."""
        return {i: dict(entry) for i, entry in enumerate(self._state) if entry}

    @_locked
    def state_dict(self) -> dict[str, Any]:
        """A checkpoint: arrays (copies) and plain JSON-able values only."""
        state = {
            i: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in entry.items()}
            for i, entry in self.state.items()
        }
        return _state_dict(self, state, self.tuples)

    @_locked
    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a ``state_dict``: hyperparameters, steps and state. Checked whole (keys, types,
        ranges, shapes) before anything changes; TypeError / ValueError otherwise."""
        who = self._owner_label
        saved_groups, saved_schedules, entries = _check_state_dict(self, state_dict)
        new_values = []
        for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            values = {k: v for k, v in saved.items() if k in self.defaults}
            candidate = {**{k: v for k, v in group.items() if k != "params"}, **values}
            new_values.append(self._check_hypers(candidate, f"{who}: state_dict param group {i}"))

        new_state: dict[int, dict[str, Any]] = {}
        for i, entry in entries.items():
            p = self._params[i]
            where = f"{who}: state_dict param {i}"
            restored: dict[str, Any] = {}
            for name, value in entry.items():
                if name == "step":
                    restored["step"] = _saved_step(value, where)
                elif name in self.slots and self._state_shape(name, p) is not None:
                    restored[name] = _state_array(value, self._state_shape(name, p), p.dtype,
                                                  f"{where} state {name!r}")
                else:
                    raise ValueError(f"{where} has unknown state {name!r} for {self.name}")
            if restored:
                restored.setdefault("step", 0)
            new_state[i] = restored

        for group, values in zip(self.param_groups, new_values):
            dict.update(group, values)
        self._state = [new_state.get(i, {}) for i in range(len(self._params))]
        for schedule, saved in zip(self._schedules, saved_schedules):
            schedule.load_state_dict(saved)
        self._pending_schedules = [dict(s) for s in saved_schedules[len(self._schedules):]]

    @_locked
    def zero_state(self) -> None:
        """Forget all state (steps restart at 1); hyperparameters are kept."""
        self._state = [{} for _ in self._params]


def real(where: str, name: str, value: Any) -> float:
    """A real-number hyperparameter (not a bool), as a float; TypeError otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: {name} must be a real number, got {value!r}")
    return float(value)
