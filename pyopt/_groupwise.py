"""A base for the Python optimizers whose step reads a whole param group at once.

DoG (a distance from the initial point and gradient-norm sums), Polyak SGD (the gradient's norm
and the loss) and MoMo (averages of the loss and of inner products) compute scalars over all the
params they step, as optax does over its whole params tree: here over each param group, a group
being one optax tree. ``GroupwiseOptimizer.step`` checks everything as ``PyOptimizer.step`` does,
then calls ``_update_group`` once per group with the params stepped and their gradients.

A group's scalars are state (``group_slots``): 0-d arrays of the group's first param's dtype,
kept in that first param's state entry (where torch.optim.LBFGS keeps its global state), so
``state_dict`` / ``load_state_dict``, ``pyopt.save`` / ``pyopt.load`` and pyopt.torch's twins carry
them bit for bit, as they carry any state array.

Optimizers that need the loss (``step_requires_loss``) take it as ``step(grads, loss=value)``;
pyopt.torch's twins take it from ``step(closure)``, and the tuner passes it.
"""
from __future__ import annotations

import numbers
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from ._pybase import PyOptimizer
from .optimizer import GradsLike


class GroupwiseOptimizer(PyOptimizer):
    """Base class of the Python optimizers stepping each param group as a whole (module docstring)."""

    param_slots: ClassVar[tuple[str, ...]] = ()  # per-param state arrays, shaped like the param
    group_slots: ClassVar[tuple[str, ...]] = ()  # per-group 0-d states, on the group's first param

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.slots = cls.param_slots + cls.group_slots

    # ----- subclass hook -------------------------------------------------------------------
    def _update_group(self, params: list[np.ndarray], grads: list[np.ndarray], group_state: dict[str, Any],
                      param_states: list[dict[str, Any]], group: Mapping[str, Any], loss: float | None,
                      all_params: list[np.ndarray], all_states: list[dict[str, Any]]) -> None:
        """One step of a group: ``params`` (those with a gradient) and their ``grads`` and states;
        ``group_state`` the state entry of the group's first param, holding the group's scalars
        (none before the group's first step: create them);
        ``all_params`` / ``all_states`` every param of the group, stepped or not."""
        raise NotImplementedError  # pragma: no cover

    # ----- where the group's scalars live --------------------------------------------------
    def _first_params(self) -> dict[int, int]:
        """id of each group's first param -> that param's index."""
        out, start = {}, 0
        for group in self.param_groups:
            out[id(self._params[start])] = start
            start += len(group["params"])
        return out

    def _state_shape(self, name: str, p: np.ndarray) -> tuple[int, ...] | None:
        if name in self.group_slots:
            return () if id(p) in self._first_params() else None
        return p.shape

    # ----- stepping ------------------------------------------------------------------------
    def step(self, grads: GradsLike, loss: Any = None) -> None:  # type: ignore[override]
        """Update every param in place from its gradient, each param group as a whole.

        ``grads`` as ``pyopt.Optimizer.step`` takes them (``None`` skips a param: it neither
        moves nor counts in its group's norms this step). ``loss``: the loss at the current
        params (a real number), required by the optimizers that use it (``step_requires_loss``).
        All or nothing, as ``PyOptimizer.step``: everything is checked before anything changes."""
        value = self._checked_loss(loss)
        with self._lock:
            hypers, checked = self._checked_and_scheduled(grads)
            stepped = dict(checked)
            start = 0
            for group, hyper in zip(self.param_groups, hypers):
                indices = range(start, start + len(group["params"]))
                start += len(group["params"])
                mine = [i for i in indices if i in stepped]
                if not mine:
                    continue
                for i in mine:
                    self._state[i]["step"] = self._state[i].get("step", 0) + 1
                with np.errstate(all="ignore"):  # inf and NaN propagate silently, as in optax
                    self._update_group([self._params[i] for i in mine], [stepped[i] for i in mine],
                                       self._state[indices[0]], [self._state[i] for i in mine], hyper, value,
                                       [self._params[i] for i in indices], [self._state[i] for i in indices])

    def _checked_loss(self, loss: Any) -> float | None:
        who = self._owner_label
        if loss is None:
            if self.step_requires_loss:
                raise TypeError(f"{who}: step needs the loss at the current params: opt.step(grads, loss=value) "
                                f"({self.name} scales its step by the loss)")
            return None
        if isinstance(loss, np.ndarray) and loss.ndim == 0:
            loss = loss[()]
        if isinstance(loss, (bool, np.bool_)) or not isinstance(loss, (numbers.Real, np.floating, np.integer)):
            raise TypeError(f"{who}: loss must be a real number, got {loss!r:.80}")
        return float(loss)

    def _checked_step(self, glist: Sequence[Any]) -> tuple[list[dict[str, Any]], list[tuple[int, np.ndarray]]]:
        checked = super()._checked_step(glist)
        self._check_group_states()
        return checked

    def _check_group_states(self) -> None:
        """Each group's scalars are all there or none is, 0-d arrays of its first param's dtype;
        every param's state arrays (stepped this step or not: a group's norms read them all) fit it."""
        for i, (p, state) in enumerate(zip(self._params, self._state)):
            for k in self.param_slots:
                v = state.get(k)
                if v is not None and (v.shape != p.shape or v.dtype != p.dtype or not v.flags.c_contiguous
                                      or not v.flags.writeable):
                    raise ValueError(f"{self._owner_label}: {self._labels[i]} state {k!r} no longer fits its param")
        for index in self._first_params().values():
            state, p = self._state[index], self._params[index]
            present = [k for k in self.group_slots if k in state]
            if present and len(present) != len(self.group_slots):
                raise ValueError(f"{self._owner_label}: {self._labels[index]} holds its group's state "
                                 f"{', '.join(map(repr, present))} without the rest of {self.group_slots}")
            for k in present:
                v = state[k]
                if not isinstance(v, np.ndarray) or v.shape != () or v.dtype != p.dtype or not v.flags.writeable:
                    raise ValueError(f"{self._owner_label}: {self._labels[index]} state {k!r} no longer fits "
                                     "its param (a writeable 0-d array of its dtype)")

    def _restore_state(self, entries: dict[int, Mapping[str, Any]], state_dict: Mapping[str, Any]) -> Any:
        firsts = set(self._first_params().values())
        for i, entry in entries.items():
            present = [k for k in self.group_slots if k in entry]
            if present and (i not in firsts or len(present) != len(self.group_slots)):
                raise ValueError(f"{self._owner_label}: state_dict param {i}: a group's state "
                                 f"({', '.join(self.group_slots)}) goes, complete, on the group's first param")
        return super()._restore_state(entries, state_dict)


def group_sum(values: Sequence[Any]) -> Any:
    """Sum of per-param scalars in order, as optax's tree reductions add leaves (from 0)."""
    total: Any = 0
    for v in values:
        total = total + v
    return total


def squared_norm(x: np.ndarray) -> Any:
    """sum(x²) as a scalar of x's dtype."""
    return np.sum(np.square(x))
