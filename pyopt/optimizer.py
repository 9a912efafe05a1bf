"""The stateful optimizer: param groups, state, checkpoints. Each step is one call into C++."""
from __future__ import annotations

import functools
import math
import numbers
import threading
import warnings
from typing import Any, Callable, ClassVar, Iterable, Mapping, Sequence, Union

import numpy as np

from . import _core
from . import sparse, storage
from ._spec import TUPLES, Spec, spec
from .sparse import RowSparse

ParamsLike = Union[np.ndarray, Sequence[np.ndarray], Mapping[str, np.ndarray], Sequence[Mapping[str, Any]]]
GradsLike = Union[np.ndarray, Sequence[Any], Mapping[str, Any]]

STATE_DICT_FORMAT = 1


def _locked(method: Any) -> Any:
    """Run the method holding the optimizer's lock (see ``Optimizer``: thread safety)."""
    @functools.wraps(method)
    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)
    return locked


class ParamGroup(dict):
    """A param group: ``params`` plus hyperparameters, editable between steps.

    Any edit (``group["lr"] = 1e-4``) is seen by the next ``step``; to add parameters use
    ``Optimizer.add_param_group`` rather than editing ``group["params"]`` in place.
    """

    __slots__ = ("_owner",)

    def __init__(self, owner: "Optimizer", *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owner = owner

    def _changed(self, keys: Iterable[Any]) -> None:
        # A new hyperparameter value only needs the engine's copy refreshed; a new params list
        # needs the engine rebuilt.
        if "params" in keys:
            self._owner._engine = None
        else:
            self._owner._hyper_changed = True

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self._changed((key,))

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._changed((key,))

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        changes = dict(*args, **kwargs)
        super().update(changes)
        self._changed(changes)

    def setdefault(self, key: str, default: Any = None) -> Any:
        value = super().setdefault(key, default)
        self._changed((key,))
        return value

    def pop(self, key: str, *default: Any) -> Any:  # type: ignore[override]
        value = super().pop(key, *default)
        self._changed((key,))
        return value


def save_schedules(opt: Any) -> tuple[list[tuple[Any, int, list[float] | None]], list[Any]]:
    """What attached schedules change in a step (their counts, base lrs, and the groups' lrs), so
    that a refused or skipped step can put it back with ``restore_schedules``."""
    schedules = [(s, s.count, None if s.base_lrs is None else list(s.base_lrs)) for s in opt._schedules]
    return schedules, [group["lr"] for group in opt.param_groups]


def restore_schedules(opt: Any, saved: tuple[list[tuple[Any, int, list[float] | None]], list[Any]]) -> None:
    schedules, lrs = saved
    for schedule, count, base_lrs in schedules:
        schedule.count, schedule.base_lrs = count, base_lrs
    for group, lr in zip(opt.param_groups, lrs):
        if group["lr"] is not lr:
            group["lr"] = lr


class OptimizerBase:
    """What every pyopt optimizer shares, whether its step runs in the C++ engine (``Optimizer``)
    or in Python (``pyopt._pybase.PyOptimizer``): params and param groups with their defaults,
    ``add_param_group``, the parsing of grads, attached lr schedules, ``state_dict`` /
    ``load_state_dict`` (checked whole before anything changes) and the lock (see ``Optimizer``).

    A subclass gives its per-param state through the hooks ``_new_group``, ``_params_added``,
    ``state``, ``_saved_group_values`` and ``_restore_state`` (and, optionally,
    ``_check_param_extra``), and its ``step``.
    """

    name: ClassVar[str] = ""
    # The learning rates pyopt.tuner searches (log scale); Adam-like by default, set per class.
    lr_range: ClassVar[tuple[float, float]] = (1e-5, 1e-1)
    tuples: ClassVar[frozenset[str]] = frozenset()  # tuple hyperparameters (lists in a state_dict)
    # float16 / ml_dtypes.bfloat16 params (float32 states, computed in float32): the C++ engine's
    # element-wise rules only, not the optimizers with steps of their own in Python.
    accepts_16bit_params: ClassVar[bool] = False
    # True: ``step(closure)``, the closure evaluating the loss and gradient (L-BFGS, which does so
    # several times per step), where the others take ``step(grads)``.
    step_requires_closure: ClassVar[bool] = False
    # True: ``step(grads, loss=value)``, the loss at the current params scaling the step (Polyak
    # SGD, MoMo).
    step_requires_loss: ClassVar[bool] = False

    def __init__(self, params: ParamsLike, defaults: Mapping[str, Any]) -> None:
        self._owner_label = type(self).__name__
        self.defaults: dict[str, Any] = dict(defaults)
        self.param_groups: list[ParamGroup] = []
        self._params: list[np.ndarray] = []
        self._labels: list[str] = []
        self._names: list[str] | None = None  # set when params came with names
        self._engine: Any = None  # the C++ engine (Optimizer); ParamGroup edits reset or flag it
        self._hyper_changed = False  # a group's hyperparameters were edited since the engine saw them
        self._schedules: list[Any] = []  # attached lr schedules (pyopt.schedules), run before each step
        self._pending_schedules: list[dict[str, Any]] = []  # loaded schedule states not yet claimed
        # Serializes step / load_state_dict / state_dict / add_param_group / zero_state across threads.
        self._lock = threading.RLock()
        for group in _as_groups(params, self._owner_label):
            self.add_param_group(group)

    # ----- subclass hooks ------------------------------------------------------------------
    def _new_group(self, param_group: Mapping[str, Any], where: str) -> "ParamGroup":  # pragma: no cover
        """The ParamGroup (without ``params``) of a new group's hyperparameters, defaults filled
        in, checked (TypeError / ValueError naming ``where``)."""
        raise NotImplementedError

    def _check_param_extra(self, p: np.ndarray, label: str) -> None:
        """Rules on a param beyond pyopt's usual ones (float32/float64, C-contiguous, writeable)."""

    def _params_added(self, count: int) -> None:  # pragma: no cover
        """Room for the state of ``count`` params just appended."""
        raise NotImplementedError

    @property
    def state(self) -> dict[int, dict[str, Any]]:  # pragma: no cover
        """Per-param state by param index (live arrays; ``state_dict`` returns copies)."""
        raise NotImplementedError

    def _saved_group_values(self, saved: Mapping[str, Any], group: Mapping[str, Any],
                            where: str) -> dict[str, Any]:  # pragma: no cover
        """The values a state_dict's param group gives ``group``, checked; nothing changes yet."""
        raise NotImplementedError

    def _restore_state(self, entries: dict[int, Mapping[str, Any]],
                       state_dict: Mapping[str, Any]) -> Callable[[], None]:  # pragma: no cover
        """Checks a state_dict's per-param state (``entries``, by param index; the whole dict for
        subclass keys such as ``storage``); returns what puts it in place (nothing changes before)."""
        raise NotImplementedError

    def _state_dict_extras(self) -> dict[str, Any]:
        """Top-level state_dict keys of a subclass (checked back by its ``_restore_state``)."""
        return {}

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
            _core.check_param(p, f"{who}: {label}", self.accepts_16bit_params)
            self._check_param_extra(p, f"{who}: {label}")
        _check_no_overlap(self._params + params, self._labels + labels, who)
        if names is not None:
            taken = set(self._names or [])
            clash = [n for n in names if n in taken]
            if clash:
                raise ValueError(f"{who}: param names used twice: {clash}")

        group = self._new_group(param_group, f"{who} (param group {len(self.param_groups)})")
        dict.__setitem__(group, "params", list(params))
        self.param_groups.append(group)
        self._params.extend(params)
        self._labels.extend(labels)
        if names is not None:
            self._names = (self._names or []) + list(names)
        self._params_added(len(params))

    def _grad_list(self, grads: GradsLike) -> Sequence[Any]:
        if type(grads) is list or type(grads) is tuple:  # the hot path first (an ABC check costs ~0.3 µs)
            return grads
        if isinstance(grads, Mapping):
            if self._names is None:
                raise TypeError(f"{self._owner_label}: grads given as a dict, but the params were not named")
            if len(grads) != len(self._names) or any(n not in grads for n in self._names):
                missing = [n for n in self._names if n not in grads]
                extra = [n for n in grads if n not in set(self._names)]
                raise ValueError(f"{self._owner_label}: grads do not match the params: missing {missing}, unexpected {extra}")
            return [grads[n] for n in self._names]
        if isinstance(grads, np.ndarray):
            if len(self._params) != 1:
                raise ValueError(f"{self._owner_label}: a single gradient array given for {len(self._params)} params")
            return (grads,)
        if isinstance(grads, (list, tuple)):
            return grads
        if isinstance(grads, RowSparse):
            if len(self._params) != 1:
                raise ValueError(f"{self._owner_label}: a single RowSparse gradient given for "
                                 f"{len(self._params)} params")
            return (grads,)
        raise TypeError(f"{self._owner_label}: grads must be a list, tuple, dict or array, got {type(grads).__name__}")

    # ----- schedules -----------------------------------------------------------------------
    @property
    def schedules(self) -> tuple[Any, ...]:
        """The lr schedules attached with ``sched.attach(opt)``, in the order they run."""
        return tuple(self._schedules)

    def _attach_schedule(self, schedule: Any) -> None:
        if self._pending_schedules:
            schedule.load_state_dict(self._pending_schedules[0])
            del self._pending_schedules[0]
        self._schedules.append(schedule)

    # ----- checkpoints ---------------------------------------------------------------------
    @_locked
    def state_dict(self) -> dict[str, Any]:
        """A checkpoint: arrays (copies) and plain JSON-able values only."""
        state = {
            i: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in entry.items()}
            for i, entry in self.state.items()
        }
        return {**_state_dict(self, state, self.tuples), **self._state_dict_extras()}

    @_locked
    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a ``state_dict``: hyperparameters, steps and state.

        The whole dict is checked before anything changes: its keys and format, the optimizer
        name, each group's keys and hyperparameters (types and ranges), each param's state (``step``
        an int in [0, 2**63), scalars real numbers, arrays float ndarrays of the param's shape, no
        unknown names) and the schedule states. Bad types raise TypeError, bad values ValueError."""
        who = self._owner_label
        saved_groups, saved_schedules, entries = _check_state_dict(self, state_dict)
        new_values = [self._saved_group_values(saved, group, f"{who}: state_dict param group {i}")
                      for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups))]
        put_state_in_place = self._restore_state(entries, state_dict)

        for group, values in zip(self.param_groups, new_values):
            dict.update(group, values)
        put_state_in_place()
        for schedule, saved in zip(self._schedules, saved_schedules):
            schedule.load_state_dict(saved)
        self._pending_schedules = [dict(s) for s in saved_schedules[len(self._schedules):]]

    def _each_group(self, check: Callable[[ParamGroup, str], Any]) -> list[Any]:
        """``check(group, where)`` of every group, after checking that none lacks a hyperparameter."""
        out = []
        for i, group in enumerate(self.param_groups):
            where = f"{self._owner_label} (param group {i})"
            missing = [k for k in self.defaults if k not in group]
            if missing:
                raise ValueError(f"{where}: missing hyperparameter(s) {missing}")
            out.append(check(group, where))
        return out

    def _check_groups_unedited(self) -> None:
        """Each group's ``params`` list is still the params it was added with, in order."""
        index = 0
        for g, group in enumerate(self.param_groups):
            count = len(group["params"])
            if index + count > len(self._params) or any(
                p is not q for p, q in zip(group["params"], self._params[index : index + count])
            ):
                raise ValueError(
                    f"{self._owner_label}: param group {g}'s 'params' list was edited; use add_param_group instead"
                )
            index += count
        if index != len(self._params):
            raise ValueError(f"{self._owner_label}: param groups were edited; use add_param_group instead")

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(k for k in group if k != "params"):
                lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)


class Optimizer(OptimizerBase):
    """Base class of every pyopt optimizer.

    ``params`` is an array, a list of arrays, a dict name → array, or a list of param-group
    dicts (``{"params": [...], "lr": 1e-4}``) as in torch. Arrays must be C-contiguous,
    writeable float32/float64 ndarrays; they are updated in place by ``step``. float16 and
    ``ml_dtypes.bfloat16`` params are computed in float32 and rounded back to nearest even each step
    (grads of the param's dtype or float32).

    Storage options (keyword-only, every optimizer; see ``pyopt.storage``): ``state_dtype`` =
    "float32" | "bfloat16" | "int8" (bitsandbytes' blockwise 8-bit states, for the optimizers whose
    record lists 8-bit slots), ``master_weights`` (a float32 master copy of 16-bit params) and
    ``stochastic_rounding`` (of 16-bit writes without a master). ``memory()`` reports the bytes held.

    Thread safety: each optimizer has a lock, held by ``step``, ``load_state_dict``,
    ``state_dict``, ``add_param_group`` and ``zero_state`` (and Sophia's ``update_hessian``, the
    schedule-free ``train``/``eval``), so calls from several threads on one optimizer run one after
    the other, each whole, with the same result as some serial order. The kernels release the GIL,
    so different optimizers step in parallel. Not covered: editing ``param_groups`` or the param
    arrays from another thread while a step runs (do that between steps).

    No array of a step may share memory with another one the step writes: a gradient that is a
    view of any param or state array is a ValueError naming both (gradients may share memory with
    each other; they are only read).
    """

    accepts_16bit_params: ClassVar[bool] = True
    state_dtypes: ClassVar[tuple[str, ...]] = storage.STATE_DTYPES  # what state_dtype may be

    tuples: ClassVar[frozenset[str]] = frozenset(TUPLES)

    def __init__(self, params: ParamsLike, *, master_weights: bool = False, state_dtype: str = "float32",
                 stochastic_rounding: bool = False, **hyper: Any) -> None:
        self._spec: Spec = spec(self.name)
        self._owner_label = type(self).__name__
        self._storage = storage.check_options(self.name, self._owner_label, master_weights, state_dtype,
                                              stochastic_rounding, self.state_dtypes)
        defaults = self._spec.defaults
        unknown = sorted(set(hyper) - set(defaults))
        if unknown:
            raise TypeError(
                f"{self._owner_label}: unknown hyperparameter {', '.join(map(repr, unknown))}; "
                f"valid: {', '.join(defaults)}"
            )
        self._slots: list[dict[str, np.ndarray]] = []
        self._steps = np.zeros(0, np.int64)
        self._scalars = np.zeros((0, _core.MAX_SCALARS), np.float64)
        self.last_grad_norm: float | None = None  # global grad norm of the last clipped / checked step
        self.skipped_steps = 0  # steps skipped by skip_nonfinite
        super().__init__(params, {**defaults, **hyper})
        # Fail at construction, not at the first step, on out-of-range hyperparameters.
        self._flat_hypers()

    def _new_group(self, param_group: Mapping[str, Any], where: str) -> ParamGroup:
        group = ParamGroup(self, {k: v for k, v in param_group.items() if k != "params"})
        for key, value in self.defaults.items():
            if key not in group:
                dict.__setitem__(group, key, value)
        self._checked_flat(group, where)
        return group

    def _params_added(self, count: int) -> None:
        self._slots.extend({} for _ in range(count))
        self._steps = np.concatenate([self._steps, np.zeros(count, np.int64)])
        fresh = np.zeros((count, _core.MAX_SCALARS), np.float64)
        for j, (_, initial) in enumerate(self._spec.scalars):
            fresh[:, j] = initial
        self._scalars = np.concatenate([self._scalars, fresh])
        self._engine = None

    # ----- stepping ------------------------------------------------------------------------
    def step(self, grads: GradsLike, *, clip_norm: float | None = None, clip_value: float | None = None,
             skip_nonfinite: bool = False) -> bool:
        """Update every param in place from its gradient. Returns True, or False for a skipped step.

        ``grads``: one gradient per param, as a list in the order of the params (``None`` skips
        a param this step), a dict keyed like the params, or a lone array for a lone param.
        Every gradient is checked before any array changes; gradients are never modified.

        Clipping happens inside the step, on the fly (the caller's arrays are not written):
        ``clip_value`` clamps every element to ``[-clip_value, clip_value]``; ``clip_norm`` then
        scales all gradients by ``clip_norm / (N + 1e-6)`` when that is below 1, N being the
        global L2 norm over every gradient of this step (torch.nn.utils.clip_grad_norm_). N is
        kept in ``last_grad_norm``. ``skip_nonfinite=True``: if any gradient holds NaN or Inf,
        nothing changes (params, state, step counts, schedules), a RuntimeWarning names the
        params, ``skipped_steps`` counts it, and False is returned. Otherwise NaN and Inf
        propagate into params and state exactly as in torch.optim.

        A refused step (TypeError / ValueError: a gradient of the wrong shape or dtype, one that
        shares memory with a param or state array, an invalid hyperparameter) changes nothing:
        params, state, step counts, and attached schedules (their counts and the lrs they set).
        Thread-safe: concurrent calls on one optimizer run one after the other (see the class).
        """
        clip_norm_arg = -1.0 if clip_norm is None else _nonnegative(clip_norm, "clip_norm", self._owner_label)
        clip_value_arg = math.inf if clip_value is None else _nonnegative(clip_value, "clip_value", self._owner_label)
        plain = clip_norm is None and clip_value is None and not skip_nonfinite
        with self._lock:
            if not self._schedules:
                return self._update(grads, plain, clip_norm_arg, clip_value_arg, skip_nonfinite)
            # A refused or skipped step leaves the schedules (their counts and the lrs they set) as they were.
            saved = save_schedules(self)
            try:
                for schedule in self._schedules:
                    schedule._before_step(self)
                applied = self._update(grads, plain, clip_norm_arg, clip_value_arg, skip_nonfinite)
            except BaseException:
                restore_schedules(self, saved)
                raise
            if not applied:
                restore_schedules(self, saved)
            return applied

    def _update(self, grads: Any, plain: bool, clip_norm: float, clip_value: float, skip_nonfinite: bool) -> bool:
        """The update itself (lock held, schedules already applied); False if a step was skipped."""
        if self._engine is None:
            self._rebuild()
        elif self._hyper_changed:
            self._refresh_hypers()
        grad_list = self._grad_list(grads)
        if RowSparse in map(type, grad_list):
            return sparse.step(self, grad_list, plain)
        if plain:
            self._engine.step(grad_list)
            return True
        return self._step_options(grad_list, clip_norm, clip_value, skip_nonfinite)

    def _step_options(self, grad_list: Sequence[Any], clip_norm: float, clip_value: float,
                      skip_nonfinite: bool) -> bool:
        applied, norm, nonfinite = self._engine.step(grad_list, clip_norm, clip_value, bool(skip_nonfinite))
        self.last_grad_norm = None if math.isnan(norm) and nonfinite == [] else float(norm)
        if not applied:
            self.skipped_steps += 1
            names = ", ".join(self._labels[i] for i in nonfinite[:5]) + (" ..." if len(nonfinite) > 5 else "")
            warnings.warn(f"{self._owner_label}: step skipped, non-finite gradient in {names}", RuntimeWarning,
                          stacklevel=4)  # step -> _update -> here
        return bool(applied)

    def _checked_flat(self, group: Mapping[str, Any], where: str) -> list[float]:
        """A group's hyperparameters as the rule's flat vector, checked (TypeError / ValueError
        naming ``where``)."""
        values = self._spec.flat(group, where)
        self._spec.validate(values, where)
        return values

    def _flat_hypers(self) -> list[list[float]]:
        return self._each_group(self._checked_flat)

    def _refresh_hypers(self) -> None:
        """Hand edited hyperparameters to the engine; rebuild only if they need new state slots."""
        flats = self._flat_hypers()
        for g, flat in enumerate(flats):
            if not self._engine.set_hyper(g, flat):
                self._rebuild()
                return
        self._hyper_changed = False

    def _rebuild(self) -> None:
        """Rebuild the C++ engine after groups or hyperparameters changed; allocate new state slots."""
        flats = self._flat_hypers()
        self._check_groups_unedited()
        tensors = []
        index = 0
        options = self._storage
        for g, group in enumerate(self.param_groups):
            needed = _core.slots_needed(self.name, flats[g])
            for p in group["params"]:
                entries = self._slots[index]
                for slot, initial in needed:
                    if slot not in entries:
                        entries.update(storage.new_state(options, self.name, p, slot, initial))
                if storage.has_master(options, p) and storage.MASTER not in entries:
                    entries[storage.MASTER] = storage.new_master(p)
                tensors.append((self._labels[index], g, p,
                                [storage.engine_state(entries, s) for s in self._spec.slots],
                                entries.get(storage.MASTER)))
                index += 1
        self._engine = _core.Engine(self.name, flats, tensors, self._steps, self._scalars,
                                    options.stochastic_rounding)
        self._hyper_changed = False

    # ----- state ---------------------------------------------------------------------------
    @property
    def state(self) -> dict[int, dict[str, Any]]:
        """Per-param state by param index (live arrays; ``state_dict`` returns copies)."""
        out: dict[int, dict[str, Any]] = {}
        for i, slots in enumerate(self._slots):
            if self._steps[i] == 0 and not slots:
                continue
            entry: dict[str, Any] = {"step": int(self._steps[i])}
            entry.update(slots)
            for j, (name, _) in enumerate(self._spec.scalars):
                entry[name] = float(self._scalars[i, j])
            out[i] = entry
        return out

    def _saved_group_values(self, saved: Mapping[str, Any], group: Mapping[str, Any], where: str) -> dict[str, Any]:
        values = {k: (tuple(v) if k in TUPLES and isinstance(v, list) else v)
                  for k, v in saved.items() if k in self.defaults}
        candidate = {**{k: v for k, v in group.items() if k != "params"}, **values}
        self._checked_flat(candidate, where)
        return values

    @property
    def storage(self) -> dict[str, Any]:
        """The storage options (``state_dtype``, ``master_weights``, ``stochastic_rounding``)."""
        return self._storage.as_dict()

    @_locked
    def memory(self) -> dict[str, int]:
        """Bytes this optimizer holds, by part: ``params`` (the caller's arrays it updates),
        ``master``, one entry per state slot held (an 8-bit slot's codes and absmax together), and
        ``total`` (their sum). States are allocated at the first step; before it there are none.
        ``pyopt.memory_estimate`` predicts the same numbers (plus the gradients) from sizes alone."""
        out = {"params": sum(int(p.nbytes) for p in self._params), storage.MASTER: 0}
        for entries in self._slots:
            for part, nbytes in storage.entry_bytes(entries).items():
                out[part] = out.get(part, 0) + nbytes
        out["total"] = sum(out.values())
        return out

    def _state_dict_extras(self) -> dict[str, Any]:
        return {"storage": self._storage.as_dict()}

    def _restore_state(self, entries: dict[int, Mapping[str, Any]], state_dict: Mapping[str, Any]) -> Callable[[], None]:
        """The saved storage options (``storage``; absent in checkpoints from before them: the
        defaults) replace this optimizer's, and each state entry must be stored as they say."""
        who = self._owner_label
        saved = state_dict.get("storage")
        options = (storage.StorageOptions() if saved is None else
                   storage.saved_options(saved, self.name, who, self.state_dtypes))
        scalar_names = [name for name, _ in self._spec.scalars]
        new_slots: dict[int, dict[str, np.ndarray]] = {}
        new_steps = np.zeros_like(self._steps)
        new_scalars = self._scalars.copy()
        for j, (_, initial) in enumerate(self._spec.scalars):
            new_scalars[:, j] = initial
        for i, entry in entries.items():
            p = self._params[i]
            where = f"{who}: state_dict param {i}"
            layout = storage.layout(options, self.name, p, self._spec.slots)
            slots = {}
            for name, value in entry.items():
                if name == "step":
                    new_steps[i] = _saved_step(value, where)
                elif name in scalar_names:
                    new_scalars[i, scalar_names.index(name)] = _saved_real(value, f"{where} state {name!r}")
                elif name in layout:
                    dtype, shape = layout[name]
                    slots[name] = storage.saved_entry(value, dtype, shape, f"{where} state {name!r}")
                else:
                    raise ValueError(f"{where} has unknown state {name!r} for {self.name} with storage "
                                     f"{options.as_dict()}; it may hold {', '.join(layout)}")
            for name in slots:
                pair = name + storage.ABSMAX_SUFFIX if name + storage.ABSMAX_SUFFIX in layout else None
                if pair and pair not in slots:
                    raise ValueError(f"{where}: 8-bit state {name!r} comes without its {pair!r}")
                if name.endswith(storage.ABSMAX_SUFFIX) and name[: -len(storage.ABSMAX_SUFFIX)] not in slots:
                    raise ValueError(f"{where}: {name!r} comes without its codes")
            new_slots[i] = slots

        def put_in_place() -> None:
            self._slots = [new_slots.get(i, {}) for i in range(len(self._params))]
            self._steps = new_steps
            self._scalars = new_scalars
            self._storage = options
            self._engine = None
        return put_in_place

    @_locked
    def zero_state(self) -> None:
        """Forget all state (steps restart at 1); hyperparameters are kept."""
        self._slots = [{} for _ in self._params]
        self._steps = np.zeros_like(self._steps)
        self._scalars = np.zeros_like(self._scalars)
        for j, (_, initial) in enumerate(self._spec.scalars):
            self._scalars[:, j] = initial
        self._engine = None


# ----- state_dict pieces shared with the Python-written optimizers (pyopt/_pybase.py) ---------
def _state_dict(opt: Any, state: dict[int, dict[str, Any]], tuples: Iterable[str]) -> dict[str, Any]:
    """The checkpoint dict of ``opt`` around its per-param ``state`` (tuple hyperparameters as lists)."""
    tuples = set(tuples)
    groups = []
    index = 0
    for group in opt.param_groups:
        g = {k: (list(v) if k in tuples else v) for k, v in group.items() if k != "params"}
        count = len(group["params"])
        g["params"] = list(range(index, index + count))
        if opt._names is not None:
            g["param_names"] = opt._names[index : index + count]
        index += count
        groups.append(g)
    out = {"format": STATE_DICT_FORMAT, "optimizer": opt.name, "state": state, "param_groups": groups}
    if opt._schedules or opt._pending_schedules:
        out["schedules"] = [s.state_dict() for s in opt._schedules] + [dict(s) for s in opt._pending_schedules]
    return out


# Top-level keys a state_dict may hold: Lookahead adds "lookahead" (its inner optimizer is handed
# the whole dict), the schedule-free optimizers "train_mode", the learning-rate-free ones
# (pyopt/lr_free.py) and Kron (its generator and counters) "global_state".
_STATE_DICT_KEYS = frozenset({"format", "optimizer", "state", "param_groups", "schedules", "lookahead", "train_mode",
                              "storage", "global_state"})
_INT64_MAX = 2**63 - 1


def _check_state_dict(opt: Any, state_dict: Any) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]],
                                                            dict[int, Mapping[str, Any]]]:
    """Checks a state_dict's frame against ``opt``: its keys, format and optimizer name, the param
    groups (their keys, param indices and names), the state's keys (param indices) and the
    schedules. Returns the param groups, the schedule states and the state by param index; the
    hyperparameter values and the state entries are the caller's to check. Raises TypeError or
    ValueError; never changes anything."""
    who = opt._owner_label
    if not isinstance(state_dict, Mapping) or "param_groups" not in state_dict or "state" not in state_dict:
        raise ValueError(f"{who}: not a pyopt state_dict (needs 'state' and 'param_groups')")
    unknown = sorted(map(repr, set(state_dict) - _STATE_DICT_KEYS))
    if unknown:
        raise ValueError(f"{who}: state_dict has unknown key(s) {', '.join(unknown)}")
    fmt = state_dict.get("format", STATE_DICT_FORMAT)
    if isinstance(fmt, bool) or not isinstance(fmt, (int, np.integer)) or int(fmt) != STATE_DICT_FORMAT:
        raise ValueError(f"{who}: unknown state_dict format {fmt!r} (this pyopt reads format {STATE_DICT_FORMAT})")
    saved_name = state_dict.get("optimizer", opt.name)
    if not isinstance(saved_name, str):
        raise TypeError(f"{who}: state_dict 'optimizer' must be a name, got {saved_name!r}")
    if saved_name != opt.name:
        raise ValueError(f"{who}: state_dict is for optimizer {saved_name!r}, not {opt.name!r}")

    saved_groups = state_dict["param_groups"]
    if not isinstance(saved_groups, (list, tuple)) or not all(isinstance(g, Mapping) for g in saved_groups):
        raise TypeError(f"{who}: state_dict 'param_groups' must be a list of dicts")
    if len(saved_groups) != len(opt.param_groups):
        raise ValueError(f"{who}: state_dict has {len(saved_groups)} param groups, optimizer has {len(opt.param_groups)}")
    index = 0
    for i, (saved, group) in enumerate(zip(saved_groups, opt.param_groups)):
        where = f"{who}: state_dict param group {i}"
        bad_keys = sorted(map(repr, set(saved) - set(opt.defaults) - {"params", "param_names"}))
        if bad_keys:
            raise ValueError(f"{where} has unknown key(s) {', '.join(bad_keys)}; valid: {', '.join(opt.defaults)}")
        count = len(group["params"])
        indices = saved.get("params")
        if not isinstance(indices, (list, tuple)) or any(
                isinstance(k, bool) or not isinstance(k, (int, np.integer)) for k in indices):
            raise TypeError(f"{where}: 'params' must be a list of param indices, got {indices!r:.80}")
        if len(indices) != count:
            raise ValueError(f"{who}: param group {i} has {count} params, state_dict has {len(indices)}")
        if [int(k) for k in indices] != list(range(index, index + count)):
            raise ValueError(f"{where}: 'params' must be the indices {index}..{index + count - 1} "
                             f"(as state_dict writes them), got {list(indices)!r:.80}")
        names = saved.get("param_names")
        if names is not None:
            if not isinstance(names, (list, tuple)) or len(names) != count or not all(isinstance(n, str) for n in names):
                raise TypeError(f"{where}: 'param_names' must be a list of {count} strings, got {names!r:.80}")
            if opt._names is not None and list(names) != opt._names[index : index + count]:
                raise ValueError(f"{where}: params are named {list(names)}, "
                                 f"the optimizer's are {opt._names[index : index + count]}")
        index += count

    saved_state = state_dict["state"]
    if not isinstance(saved_state, Mapping):
        raise TypeError(f"{who}: state_dict 'state' must be a dict param index -> state")
    entries: dict[int, Mapping[str, Any]] = {}
    for key, entry in saved_state.items():
        i = _state_index(key, len(opt._params), who)
        if i in entries:
            raise ValueError(f"{who}: state_dict has the state of param {i} twice")
        if not isinstance(entry, Mapping) or not all(isinstance(k, str) for k in entry):
            raise TypeError(f"{who}: state_dict param {i}: the state must be a dict name -> value")
        entries[i] = entry

    saved_schedules = state_dict.get("schedules", [])
    if not isinstance(saved_schedules, (list, tuple)) or not all(isinstance(s, Mapping) for s in saved_schedules):
        raise ValueError(f"{who}: state_dict 'schedules' must be a list of schedule states")
    from .schedules import check_saved_schedule  # (schedules imports this module for type hints only)

    for schedule, saved in zip(opt._schedules, saved_schedules):
        schedule._check_state(saved)
    for k, saved in enumerate(saved_schedules[len(opt._schedules):], len(opt._schedules)):
        check_saved_schedule(saved, f"{who}: state_dict schedule {k}")  # claimed by schedules attached later
    return list(saved_groups), list(saved_schedules), entries


def _saved_step(value: Any, where: str) -> int:
    """A step count from a state_dict: an int (not a bool) in [0, 2**63)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{where}: step must be an int, got {value!r}")
    if not 0 <= int(value) <= _INT64_MAX:
        raise ValueError(f"{where}: step must be in [0, 2**63), got {int(value)}")
    return int(value)


def _saved_real(value: Any, what: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{what} must be a real number, got {value!r}")
    return float(value)


def _state_array(value: Any, shape: Any, dtype: Any, what: str) -> np.ndarray:
    """A checkpoint's state array (an ndarray, or nested lists of floats as JSON gives them back),
    checked (a float dtype, this shape) and copied into ``dtype``."""
    arr = _float_array(value, what)
    if arr.shape != shape:
        raise ValueError(f"{what} has shape {arr.shape}, expected {shape}")
    return np.array(arr, dtype=dtype, order="C", copy=True)


def _float_array(value: Any, what: str) -> np.ndarray:
    """``value`` as an array of a float dtype; TypeError otherwise (strings, objects, ragged lists, ints)."""
    if isinstance(value, np.ndarray):
        arr = value
    elif isinstance(value, (list, tuple, numbers.Real, np.generic)):  # a 0-d state comes back as a float
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{what} is not an array of numbers ({exc})") from None
    else:
        raise TypeError(f"{what} must be a numpy array (or a list of floats), got {type(value).__name__}")
    if arr.dtype.kind != "f":
        raise TypeError(f"{what} has dtype {arr.dtype}, expected a float dtype")
    return arr


def _state_index(key: Any, count: int, who: str) -> int:
    """A state key: a param index as an int, or a decimal string as JSON writes it."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        i = int(key)
    elif isinstance(key, str) and key.isascii() and key.isdigit():
        i = int(key)
    else:
        raise ValueError(f"{who}: state_dict state key {key!r} is not a param index")
    if not 0 <= i < count:
        raise ValueError(f"{who}: state_dict has state for param {i}, optimizer has {count} params")
    return i


def _nonnegative(value: Any, what: str, who: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{who}: {what} must be a number, got {value!r}")
    v = float(value)
    if not v >= 0.0:
        raise ValueError(f"{who}: {what} must be >= 0, got {v}")
    return v


def _unit_interval(value: Any, what: str, who: str) -> float:
    """A real number in [0, 1] (EMA's decay, Lookahead's alpha); TypeError or ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{who}: {what} must be a real number, got {value!r}")
    v = float(value)
    if not 0.0 <= v <= 1.0:  # also rejects NaN
        raise ValueError(f"{who}: {what} must be in [0, 1], got {v}")
    return v


def _check_no_overlap(params: list[np.ndarray], labels: list[str], who: str) -> None:
    """No two params may share memory (the same array twice, or two views of one buffer)."""
    spans = sorted(
        (p.__array_interface__["data"][0], p.nbytes, label) for p, label in zip(params, labels) if p.nbytes
    )
    for (start, size, label), (next_start, _, next_label) in zip(spans, spans[1:]):
        if next_start < start + size:
            raise ValueError(f"{who}: {label} and {next_label} share memory (a param appears in more than one place)")


def _byte_bounds(a: np.ndarray) -> tuple[int, int]:
    return _BYTE_BOUNDS(a)  # type: ignore[no-any-return]


_BYTE_BOUNDS = getattr(getattr(np.lib, "array_utils", None), "byte_bounds", None) or np.byte_bounds


def _check_disjoint(arrays: list[tuple[np.ndarray, str, bool]], who: str) -> None:
    """No two arrays of one step may share memory when either is written by it: (array, label,
    written) triples, sorted by address, O(n log n). Gradients (read only) may share memory with
    each other."""
    spans = sorted((*_byte_bounds(a), label, written) for a, label, written in arrays if a.nbytes)
    end_any, label_any = -1, ""
    end_written, label_written = -1, ""
    for start, end, label, written in spans:
        if start < end_written or (written and start < end_any):
            other = label_written if start < end_written else label_any
            raise ValueError(f"{who}: {other} and {label} share memory")
        if end > end_any:
            end_any, label_any = end, label
        if written and end > end_written:
            end_written, label_written = end, label


def _as_param_list(params: Any, who: str) -> tuple[list[Any], list[str] | None]:
    if isinstance(params, np.ndarray):
        return [params], None
    if isinstance(params, Mapping):
        names = list(params)
        bad = [n for n in names if not isinstance(n, str)]
        if bad:
            raise TypeError(f"{who}: param names must be strings, got {bad[0]!r}")
        return [params[n] for n in names], names
    if isinstance(params, Iterable) and not isinstance(params, (str, bytes)):
        return list(params), None
    raise TypeError(f"{who}: params must be an array, a list of arrays, a dict name -> array or a list of groups")


def _as_groups(params: Any, who: str) -> list[Mapping[str, Any]]:
    if isinstance(params, (list, tuple)) and params and all(isinstance(g, Mapping) for g in params):
        return list(params)
    plist, names = _as_param_list(params, who)
    if not plist:
        raise ValueError(f"{who}: optimizer got an empty parameter list")
    return [{"params": dict(zip(names, plist)) if names is not None else plist}]
