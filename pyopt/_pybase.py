"""A base class for optimizers written in Python (numpy) rather than in the C++ core.

Some rules are not elementwise (Muon orthogonalizes each whole matrix with GEMMs), so they do not
fit the C++ engine. ``PyOptimizer`` gives them the same user-facing API as ``pyopt.Optimizer``:
params as an array / list / dict / param groups, ``step(grads)``, editable ``param_groups``,
``state``, ``state_dict()`` / ``load_state_dict()`` in the same format (so ``pyopt.save`` /
``pyopt.load`` work), ``zero_state()`` and attachable lr schedules. The helpers that parse params
and grads are those of ``pyopt.optimizer``, not copies.

The group, schedule, checkpoint and locking code is ``pyopt.optimizer.OptimizerBase``'s, shared
with the C++-backed ``Optimizer``. A subclass sets ``name`` and ``slots`` (its per-param state
arrays) and implements ``_check_hypers`` (validate and normalize a group's hyperparameters),
optionally ``_check_param_extra`` (extra rules on a param, e.g. its shape), ``_checked_step``
(the checks of a step) and ``_update`` (one param's step).
"""
from __future__ import annotations

import importlib
import numbers
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

from . import _core, sparse
from .sparse import RowSparse
from .storage import StorageOptions
from .optimizer import (
    GradsLike,
    OptimizerBase,
    ParamGroup,
    ParamsLike,
    _check_disjoint,
    _locked,
    _saved_step,
    _state_array,
    restore_schedules,
    save_schedules,
)

# Optimizers implemented in Python, by state_dict name -> module defining them (``pyopt.load``
# looks here before the C++ catalogue).
_MODULES = {
    "muon": ".muon",
    "adafactor": ".adafactor",
    "rowwise_adagrad": ".rowwise_adagrad",
    "lbfgs": ".lbfgs",
    "prodigy": ".lr_free",
    "dadapt_adam": ".lr_free",
    "dadapt_sgd": ".lr_free",
    "sm3": ".sm3",
    "fromage": ".fromage",
    "polyak_sgd": ".polyak_sgd",
    "dog": ".dog",
    "momo": ".momo",
    "adamp": ".adamp",
    "came": ".came",
    "adam_mini": ".adam_mini",
    "normuon": ".normuon",
    "adamuon": ".adamuon",
    "soap": ".soap",
    "shampoo": ".shampoo",
    "kron": ".kron",
    "noisy_sgd": ".noisy_sgd",
    "mars_shampoo": ".mars_shampoo",
}
PYTHON_OPTIMIZERS = tuple(_MODULES)  # their names, for the messages that list the optimizers


def python_optimizer(name: str) -> type["PyOptimizer"] | None:
    """The Python optimizer class saved under ``name`` in a state_dict, or None."""
    module = _MODULES.get(name)
    if module is None:
        return None
    mod = importlib.import_module(module, __package__)
    return next(c for c in vars(mod).values()
                if isinstance(c, type) and issubclass(c, PyOptimizer) and c.name == name)


class PyOptimizer(OptimizerBase):
    """Base class of the optimizers implemented in Python (see the module docstring)."""

    slots: ClassVar[tuple[str, ...]] = ()  # per-param state arrays, shaped and typed like the param

    def __init__(self, params: ParamsLike, defaults: Mapping[str, Any]) -> None:
        self._state: list[dict[str, Any]] = []  # per param: {} until its first step
        # Hyperparameters are read afresh at every step, so ParamGroup's edit hooks (_engine,
        # _hyper_changed) are bookkeeping only here.
        super().__init__(params, self._check_hypers(dict(defaults), type(self).__name__))

    # ----- subclass hooks ------------------------------------------------------------------
    def _check_hypers(self, group: dict[str, Any], where: str) -> dict[str, Any]:  # pragma: no cover
        """Check a group's hyperparameters (TypeError / ValueError naming ``where``); return them
        normalized (e.g. tuples as tuples)."""
        raise NotImplementedError

    def _state_shape(self, name: str, p: np.ndarray) -> tuple[int, ...] | None:
        """The shape of state array ``name`` of param ``p`` (None: this param has no such state)."""
        return p.shape

    def _new_state(self, p: np.ndarray, state: dict[str, Any], skip: Sequence[str] = ()) -> None:
        """Zeros for the slots ``p`` has (``_state_shape`` not None) and ``state`` lacks, but ``skip``."""
        for name in self.slots:
            shape = self._state_shape(name, p)
            if shape is not None and name not in state and name not in skip:
                state[name] = np.zeros(shape, p.dtype)

    def _update(self, p: np.ndarray, g: np.ndarray, state: dict[str, Any], group: Mapping[str, Any]) -> None:
        raise NotImplementedError  # pragma: no cover

    # ----- OptimizerBase hooks -------------------------------------------------------------
    def _new_group(self, param_group: Mapping[str, Any], where: str) -> ParamGroup:
        values = {**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}}
        return ParamGroup(self, self._check_hypers(values, where))  # type: ignore[arg-type]

    def _params_added(self, count: int) -> None:
        self._state.extend({} for _ in range(count))

    # ----- stepping ------------------------------------------------------------------------
    def step(self, grads: GradsLike) -> None:
        """Update every param in place from its gradient.

        ``grads``: one gradient per param, as a list in the order of the params (``None`` skips
        a param this step), a dict keyed like the params, or a lone array for a lone param.
        A gradient of another real dtype is converted to the param's dtype. NaN or Inf are not
        masked. All or nothing: every param, gradient, state array and hyperparameter is checked
        (shapes, dtypes, writeability, no array of the step sharing memory with another one
        written by it) before any array, step count or attached schedule changes; attached
        schedules then set the lrs, which are checked in turn (a refused step puts them back).
        Thread-safe: concurrent calls on one optimizer run one after the other.
        """
        with self._lock:
            hypers, checked = self._checked_and_scheduled(grads)
            owner = [g for g, group in enumerate(self.param_groups) for _ in group["params"]]
            for i, g in checked:
                state = self._state[i]
                state["step"] = state.get("step", 0) + 1
                self._update(self._params[i], g, state, hypers[owner[i]])

    def _checked_and_scheduled(self, grads: GradsLike) -> tuple[list[dict[str, Any]], list[tuple[int, np.ndarray]]]:
        """The first part of every step (``step``'s docstring): everything checked, changing
        nothing, then the attached schedules run and their lrs checked (put back if refused).
        Returns each group's hyperparameters and the (param index, gradient) pairs to update."""
        who = self._owner_label
        glist = self._grad_list(grads)
        if len(glist) != len(self._params):
            raise ValueError(f"{who}: expected {len(self._params)} gradients (one per param), got {len(glist)}")
        hypers, checked = self._checked_step(glist)
        saved = save_schedules(self)
        try:
            for schedule in self._schedules:
                schedule._before_step(self)
            if self._schedules:
                hypers = self._groups_checked()  # the lrs the schedules set
        except BaseException:
            restore_schedules(self, saved)
            raise
        return hypers, checked

    def _checked_step(self, glist: Sequence[Any]) -> tuple[list[dict[str, Any]], list[tuple[int, np.ndarray]]]:
        """Checks everything a step uses, changing nothing: every group's hyperparameters, and each
        stepping param, its gradient (converted to the param's dtype) and its state. Returns the
        checked hyperparameters per group and the (param index, gradient) pairs to update."""
        who = self._owner_label
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
            if isinstance(grad, np.ndarray):  # (a RowSparse's checked rows are fresh arrays)
                arrays.append((grad, f"the gradient of {self._labels[i]}", False))
            arrays.extend((v, f"{self._labels[i]} state {k!r}", True)
                          for k, v in self._state[i].items() if isinstance(v, np.ndarray))
        _check_disjoint(arrays, who)
        return hypers, checked

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
        if isinstance(g, RowSparse):
            raise sparse.refuse(self.name, f"{label}'s gradient")
        arr = g if isinstance(g, np.ndarray) else np.asarray(g)
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"{label}: gradient dtype {arr.dtype} is not a real number type")
        if arr.shape != p.shape:
            raise ValueError(f"{label}: gradient shape {arr.shape} does not match param shape {p.shape}")
        return arr.astype(p.dtype, copy=False)

    def _groups_checked(self) -> list[dict[str, Any]]:
        """Every group's hyperparameters, checked (they may have been edited since the last step),
        and its params list unedited."""
        self._check_groups_unedited()
        return self._each_group(lambda group, where: self._check_hypers({k: group[k] for k in self.defaults}, where))

    # ----- state ---------------------------------------------------------------------------
    @property
    def state(self) -> dict[int, dict[str, Any]]:
        """Per-param state by param index (live arrays; ``state_dict`` returns copies)."""
        return {i: dict(entry) for i, entry in enumerate(self._state) if entry}

    def _saved_group_values(self, saved: Mapping[str, Any], group: Mapping[str, Any], where: str) -> dict[str, Any]:
        values = {k: v for k, v in saved.items() if k in self.defaults}
        candidate = {**{k: v for k, v in group.items() if k != "params"}, **values}
        return self._check_hypers(candidate, where)

    def _restore_state(self, entries: dict[int, Mapping[str, Any]], state_dict: Mapping[str, Any]) -> Callable[[], None]:
        who = self._owner_label
        saved_storage = state_dict.get("storage")
        if saved_storage is not None and saved_storage != StorageOptions().as_dict():
            raise ValueError(f"{who}: state_dict 'storage' is {saved_storage!r:.120}; {self.name} has no storage "
                             "options (its states are its params' dtype)")
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

        def put_in_place() -> None:
            self._state = [new_state.get(i, {}) for i in range(len(self._params))]
        return put_in_place

    @_locked
    def zero_state(self) -> None:
        """Forget all state (steps restart at 1); hyperparameters are kept."""
        self._state = [{} for _ in self._params]

    @_locked
    def memory(self) -> dict[str, int]:
        """Bytes this optimizer holds, by part (as ``pyopt.Optimizer.memory``): ``params``, one
        entry per state array, ``total``. States are allocated at a param's first step."""
        out = {"params": sum(int(p.nbytes) for p in self._params)}
        for entry in self._state:
            for name, value in entry.items():
                if isinstance(value, np.ndarray):
                    out[name] = out.get(name, 0) + int(value.nbytes)
        out["total"] = sum(out.values())
        return out


def real(where: str, name: str, value: Any) -> float:
    """A real-number hyperparameter (not a bool), as a float; TypeError otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: {name} must be a real number, got {value!r}")
    return float(value)
