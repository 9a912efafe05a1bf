"""pyopt's optimizers for PyTorch: ``pyopt.torch.AdamW``, ``pyopt.torch.Lion``, ... (one per pyopt
optimizer, named as the numpy classes) are ``torch.optim.Optimizer`` subclasses.

    model = torch.nn.Linear(784, 10)
    opt = pyopt.torch.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100)
    loss_fn(model(x), y).backward(); opt.step(); opt.zero_grad(); sched.step()

What torch.optim gives is kept: ``params`` as tensors or param-group dicts, ``param_groups`` that
LR schedulers (and ZeroRedundancyOptimizer, DeepSpeed) edit, ``zero_grad``, ``step(closure)``,
``add_param_group``, step and state_dict hooks, state created at a param's first step, params
whose ``.grad`` is None skipped, a 1-element Tensor lr, and ``state_dict()`` in torch's format
and key names (``step``, ``exp_avg``, ``exp_avg_sq``, ``momentum_buffer``, ...), so a checkpoint
of a torch.optim optimizer loads into its pyopt twin and the other way round. The twins also
accept torch's implementation flags: ``foreach`` and ``fused`` (pyopt's kernels are always
fused), ``capturable`` and ``differentiable`` (only False: CUDA graphs and autograd through the
step are not what pyopt does).

Params are stepped in place, without a copy, by pyopt's C++ kernels with the GIL released: CPU
tensors, contiguous, float32 / float64 / bfloat16 / float16 (grads of the param's dtype, or
float32 for 16-bit params). Anything else is a ValueError / TypeError naming the param, before
anything changes. The storage options (``master_weights``, ``state_dtype``,
``stochastic_rounding``) are those of the numpy classes (``pyopt.storage``).

LBFGS steps with a closure, ``step(closure)``, as torch.optim.LBFGS does (the closure zeroes the
grads, computes the loss, runs backward and returns the loss; it is called several times per step).
PolyakSGD and MoMo, whose step uses the loss, need that closure too (called once per step).

Optimizers whose step reads whole tensors (LAMB, LARS, StableAdamW, NovoGrad, Muon, Adafactor, LBFGS:
``per_tensor`` in their record) refuse params that were not given to them, as happens when an
engine such as DeepSpeed ZeRO replaces ``param_groups`` with flat partitions of many params: a
norm over such a partition is not the norm of any param. The element-wise ones step such
partitions exactly as they would step the params one by one.

This module imports torch; ``import pyopt`` does not.
"""
from __future__ import annotations

import contextlib
import inspect
import math
import re
import weakref
from collections import defaultdict
from typing import Any, Callable, ClassVar, Iterable, Mapping

import ml_dtypes
import numpy as np
import torch

from . import _core
from . import optimizers as _numpy_optimizers
from ._pybase import PyOptimizer, python_optimizer
from ._spec import spec
from .optimizer import Optimizer as NumpyOptimizer
from .optimizer import OptimizerBase
from .sparse import RowSparse
from .storage import StorageOptions

__all__ = ["Optimizer"]  # and one class per optimizer, added below

STORAGE_OPTIONS = tuple(StorageOptions().as_dict())
IMPLEMENTATION_FLAGS = ("foreach", "fused", "capturable", "differentiable")
_BF16 = np.dtype(ml_dtypes.bfloat16)
_TENSOR_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
TWINS_WITHOUT_STEP = ("SGD", "Muon")  # torch.optim classes whose state has no ``step``


class UnsupportedTensorError(TypeError, RuntimeError):
    """A tensor pyopt cannot step (complex, sparse, an integer dtype). A TypeError, and also the
    RuntimeError torch.optim raises for complex params where it does not take them."""


_VIEWED_AS_ITSELF = {torch.float32: True, torch.float64: True, torch.float16: True, torch.bfloat16: False}


def numpy_view(t: torch.Tensor, what: str, read_only: bool = False) -> np.ndarray:
    """The tensor's memory as an ndarray (no copy): CPU, strided, contiguous, float32 / float64 /
    bfloat16 (as ``ml_dtypes.bfloat16``) / float16."""
    # The fast path of every step (a few hundred ns per grad); the checks below say what is wrong.
    itself = _VIEWED_AS_ITSELF.get(getattr(t, "dtype", None))
    if itself is not None and t.is_cpu and t.layout is torch.strided and t.is_contiguous():
        if t.requires_grad:
            t = t.detach()
        return t.numpy() if itself else t.view(torch.int16).numpy().view(_BF16)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(t).__name__}")
    if t.layout != torch.strided:
        raise UnsupportedTensorError(f"{what} is a {t.layout} tensor; pyopt.torch steps dense tensors only")
    if t.is_complex():
        raise UnsupportedTensorError(f"{what} is complex ({t.dtype}); pyopt does not support complex parameters "
                                     "(step torch.view_as_real of it instead)")
    if t.dtype not in _TENSOR_DTYPES:
        raise UnsupportedTensorError(f"{what} has dtype {t.dtype}; pyopt steps float32, float64, bfloat16 and "
                                     "float16 tensors")
    if t.device.type != "cpu":
        raise ValueError(f"{what} is on {t.device}; pyopt.torch steps CPU tensors only (move the model "
                         "or the optimizer state to the CPU, e.g. ZeRO-Offload)")
    if not t.is_contiguous():
        advice = ("pyopt.torch reads it in place and needs a contiguous one (pass .contiguous())" if read_only else
                  "pyopt.torch updates params in place and needs contiguous tensors (make the param contiguous "
                  "once, before creating the optimizer)")
        raise ValueError(f"{what} is not contiguous (strides {tuple(t.stride())}); {advice}")
    t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(_BF16)
    return t.numpy()


def _row_sparse(t: torch.Tensor, what: str) -> RowSparse:
    """A sparse COO gradient of a 2-D param with sparse rows (as ``nn.Embedding(sparse=True)`` makes
    it; duplicates allowed) as a ``pyopt.RowSparse`` viewing its indices and values."""
    if t.dim() != 2 or t.sparse_dim() != 1:
        raise UnsupportedTensorError(f"{what} is a sparse tensor of shape {tuple(t.shape)} with {t.sparse_dim()} "
                                     "sparse dims; pyopt.torch takes sparse gradients of 2-D params whose rows are "
                                     "sparse (nn.Embedding(sparse=True)'s)")
    t = t.detach()
    return RowSparse(t._indices()[0].numpy(), numpy_view(t._values().contiguous(), what, read_only=True))


def tensor_view(a: np.ndarray) -> torch.Tensor:
    """An ndarray's memory as a tensor (no copy; bfloat16 arrays as torch.bfloat16)."""
    if a.dtype == _BF16:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _plain(value: Any) -> Any:
    """A hyperparameter as the numpy optimizer takes it: 1-element tensors as floats (also inside
    tuples such as betas); the value itself when it holds no tensor."""
    if isinstance(value, torch.Tensor):
        return float(value)
    if isinstance(value, tuple) and any(isinstance(v, torch.Tensor) for v in value):
        return tuple(_plain(v) for v in value)
    return value


def _scalar_dtype() -> torch.dtype:
    """The dtype of torch.optim's scalar state tensors (``step``, ``mu_product``, ``eta``...)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


class _StateEntry(dict):
    """``Optimizer.state[p]`` (tensors viewing a numpy optimizer's state): an edit other than in
    place (torch code resets moments by assigning them) is reported to the optimizer."""
    __slots__ = ("_state", "_param")

    def __init__(self, state: Any = None, param: Any = None, *args: Any) -> None:
        super().__init__(*args)
        self._state, self._param = state, param

    def __reduce__(self) -> Any:  # copies and pickles are plain dicts
        return dict, (dict(self),)

    def _changed(self) -> None:
        state = getattr(self, "_state", None)  # (None while unpickling)
        if state is not None:
            state._changed(self._param)

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self._changed()

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        self._changed()

    def clear(self) -> None:
        super().clear()
        self._changed()

    def pop(self, key: Any, *default: Any) -> Any:
        value = super().pop(key, *default)
        self._changed()
        return value

    def popitem(self) -> Any:
        item = super().popitem()
        self._changed()
        return item

    def update(self, *args: Any, **kwargs: Any) -> None:
        super().update(*args, **kwargs)
        self._changed()

    def setdefault(self, key: Any, default: Any = None) -> Any:
        value = super().setdefault(key, default)
        self._changed()
        return value


class _State(defaultdict):
    """``Optimizer.state``: any edit of a param's entry (setting, replacing or removing it, e.g.
    ``opt.state.clear()`` or ZeroRedundancyOptimizer's ``optim.state[p] = loaded``) is reported to
    the optimizer, whose next step then reads that param's state from here, as torch.optim does."""

    def __init__(self, owner: Any, *args: Any) -> None:
        super().__init__(dict, *args)
        self._owner = weakref.ref(owner)

    def __reduce__(self) -> Any:  # copies and pickles are plain defaultdicts
        return defaultdict, (dict,), None, None, iter(self.items())

    def _changed(self, param: Any) -> None:
        owner = self._owner()
        if owner is not None:
            owner._state_changed(param)

    def __missing__(self, key: Any) -> Any:  # reading state[p] is no edit
        entry = _StateEntry(self, key)
        dict.__setitem__(self, key, entry)
        return entry

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self._changed(key)

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        self._changed(key)

    def pop(self, key: Any, *default: Any) -> Any:
        value = super().pop(key, *default)
        self._changed(key)
        return value

    def popitem(self) -> Any:
        key, value = super().popitem()
        self._changed(key)
        return key, value

    def clear(self) -> None:
        keys = list(self)
        super().clear()
        for key in keys:
            self._changed(key)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]


class _GroupStepper:
    """The numpy optimizer of one param group, over ndarray views of its params."""

    def __init__(self, inner: OptimizerBase, params: list[torch.Tensor]) -> None:
        self.inner = inner
        self.params = params
        self.ids = frozenset(id(p) for p in params)
        self.synced: dict[str, Any] = {}  # the group's hyperparameter objects last handed to `inner`
        self.tensor_valued: set[str] = set()  # of those, the ones holding tensors (edited in place)
        self.engine_seen: Any = None  # (the C++ engine, arrays replaced) whose state arrays self.state views
        self.exposed: set[int] = set()  # params (by index) whose state is in self.state
        self.stale = False  # a param's entry of self.state was edited: rebuild from self.state


class Optimizer(torch.optim.Optimizer):
    """Base class of the ``pyopt.torch`` optimizers (see the module docstring). A subclass names
    its pyopt optimizer (``name``); the work is done by its numpy class: one instance per param
    group, over ndarray views of the group's tensors, kept for as long as the group holds the same
    params (engines that step one group at a time by swapping ``param_groups`` find it again)."""

    name: ClassVar[str]
    numpy_class: ClassVar[type]
    implementation_flags: ClassVar[dict[str, Any]] = {}  # torch's flags the twin takes, with torch's defaults
    per_tensor: ClassVar[bool] = False
    scalar_keys: ClassVar[frozenset[str]] = frozenset({"step"})  # state entries that are numbers, not arrays
    has_torch_twin: ClassVar[bool] = False
    state_has_step: ClassVar[bool] = True  # the numpy optimizer counts steps (LBFGS counts iterations)

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # A numpy class whose arguments may name another optimizer (MARS's mars_type="shampoo")
        # builds that one's twin instead.
        routed = getattr(cls.numpy_class, "_routed", None)
        kwargs = dict(kwargs)
        target = routed(kwargs) if routed is not None else None
        if target is None:
            return super().__new__(cls)
        return globals()[_core.optimizers()[target]["class_name"]](*args, **kwargs)

    def __init__(self, params: Any, *args: Any, **kwargs: Any) -> None:
        label = type(self).__name__
        flags = {**self.implementation_flags}
        for flag in IMPLEMENTATION_FLAGS:
            if flag in kwargs and flag in flags:
                flags[flag] = kwargs.pop(flag)
        try:
            bound = _hyper_signature(self.numpy_class).bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{label}: {exc}") from None
        bound.apply_defaults()
        hyper = dict(bound.arguments)
        fold = getattr(self.numpy_class, "_fold", None)
        if fold is not None:  # arguments that are not hyperparameters (MARS's mars_type) into those they set
            fold(hyper)
        self._storage_options = {k: hyper.pop(k) for k in STORAGE_OPTIONS if k in hyper}
        _check_torch_arguments(label, hyper, flags)
        # torch.optim checks its hyperparameters before its params (torch's own error inputs pass
        # params=None): check them first, on a scratch param, so a bad value is a ValueError whatever
        # params is.
        self.numpy_class([{"params": [np.zeros((1, 1), np.float32)], **{k: _plain(v) for k, v in hyper.items()}}],
                         **self._storage_options)
        self._hyper_keys = tuple(hyper)
        self._label = label
        self._steppers: dict[tuple, _GroupStepper] = {}  # by group key (see _group_key)
        self._train_mode = True  # schedule-free optimizers: the mode of every group
        self._given: dict[int, weakref.ref] = {}  # id -> param given to the constructor or add_param_group
        self._constructing = True
        super().__init__(params, {**hyper, **flags})
        self.state = _State(self)
        self._constructing = False
        for g, group in enumerate(self.param_groups):  # checks every param and hyperparameter now
            if group["params"]:  # (torch.optim takes empty groups: ZeroRedundancyOptimizer makes some)
                self._stepper(g)

    # ----- param groups ----------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch's add_param_group (its checks and defaults), then pyopt's checks of the new params
        and hyperparameters: on any error the group is not added."""
        before = len(self.param_groups)
        super().add_param_group(param_group)
        for p in self.param_groups[-1]["params"]:
            self._given[id(p)] = weakref.ref(p)
        if self._constructing:
            return
        try:
            if self.param_groups[before]["params"]:
                self._stepper(before)
        except BaseException:
            del self.param_groups[before:]
            raise

    @staticmethod
    def _group_key(group: Mapping[str, Any]) -> tuple:
        """What identifies the params a group's numpy optimizer views: their identity and memory."""
        key: list[int] = []
        for p in group["params"]:
            key.append(id(p))
            key.append(p.data_ptr())
        return tuple(key)

    def _stepper(self, g: int, key: tuple | None = None) -> _GroupStepper:
        """The numpy optimizer of param group g (built if its params changed), given the group's
        current hyperparameters."""
        group = self.param_groups[g]
        key = self._group_key(group) if key is None else key
        if type(self.state) is not _State or self.state._owner() is not self:
            # replaced (opt.state = defaultdict(dict) resets torch.optim) or unpickled: start from it
            self.state = _State(self, self.state)
            self._steppers = {}
        stepper = self._steppers.get(key)
        if stepper is None or stepper.stale:
            stepper = self._build_stepper(g, key)
        self._sync(stepper, group)
        return stepper

    def _state_changed(self, param: Any) -> None:
        """self.state[param] was edited: the numpy optimizer holding param is rebuilt from it."""
        for stepper in self._steppers.values():
            if id(param) in stepper.ids:
                stepper.stale = True

    @contextlib.contextmanager
    def _naming(self, g: int) -> Any:
        """Errors of group g's numpy optimizer (which sees one group, its params numbered from 0)
        name the group and param as ``param_groups`` does."""
        try:
            yield
        except (TypeError, ValueError) as exc:
            message = str(exc).replace("(param group 0)", f"(param_groups[{g}])")
            message = re.sub(r"(?<![\w'])params\[(\d+)\]", lambda m: f"param_groups[{g}]['params'][{m[1]}]", message)
            if not message.startswith(self._label):
                message = f"{self._label}: {message}"
            raise type(exc)(message) from None

    def _check_given(self, g: int) -> None:
        # (SPAM with density < 1 draws its update masks over each whole 2-D param)
        masks = getattr(self.numpy_class, "_masks_whole_params", None)
        masked = masks is not None and masks({k: _plain(v) for k, v in self.param_groups[g].items()})
        if not (self.per_tensor or masked):
            return
        reads = ("draws random update masks over each whole 2-D param (density < 1)" if masked else
                 "computes norms or matrix products over each whole param")
        for k, p in enumerate(self.param_groups[g]["params"]):
            known = self._given.get(id(p))
            if known is None or known() is not p:
                raise ValueError(
                    f"{self._label}: param_groups[{g}]['params'][{k}] was not given to the optimizer (its param "
                    f"groups were replaced, as DeepSpeed ZeRO does with flat partitions of many params): "
                    f"{self.name} {reads}, which a partition "
                    "is not. Use an element-wise optimizer there (e.g. AdamW, Lion), or give this optimizer "
                    "the params themselves")

    def _numpy_optimizer(self, g: int, group: dict[str, Any], storage: Mapping[str, Any]) -> OptimizerBase:
        views = [numpy_view(p, f"{self._label}: param_groups[{g}]['params'][{k}]")
                 for k, p in enumerate(group["params"])]
        inner = self.numpy_class([{"params": views, **{k: _plain(group[k]) for k in self._group_keys(group)}}],
                                 **storage)
        for key in self._derived_keys:  # derived by the numpy optimizer when the group had none: kept in it
            group.setdefault(key, inner.param_groups[0][key])
        # Random draws keyed by (seed, param index, step) (SPAM's masks, NoisySGD's noise): the
        # index counts the params of all groups, as in the numpy optimizer over the same groups.
        inner._draw_index_offset = sum(len(self.param_groups[k]["params"]) for k in range(g))
        return inner

    @property
    def _derived_keys(self) -> tuple[str, ...]:
        """Group entries the numpy optimizer derives when a group is made (MARSShampoo's
        lr_1d_factor): kept in the torch group too, so its state_dict resumes them."""
        return getattr(self.numpy_class, "derived_group_keys", ())

    def _group_keys(self, group: Mapping[str, Any]) -> tuple[str, ...]:
        """The entries of a torch group handed to its numpy optimizer."""
        return self._hyper_keys + tuple(k for k in self._derived_keys if k in group)

    def _build_stepper(self, g: int, key: tuple) -> _GroupStepper:
        """A numpy optimizer for group g, carrying over the state its params have (copied from the
        optimizer that held it, which is then dropped: a param is in one numpy optimizer at most)."""
        self._check_given(g)
        group = self.param_groups[g]
        params = list(group["params"])
        with self._naming(g):
            inner = self._numpy_optimizer(g, group, self._storage_options)
            carried = {i: self.state[p] for i, p in enumerate(params) if self.state.get(p)}
            if carried or not self._train_mode:
                inner.load_state_dict(self._numpy_state_dict(inner, carried, self._storage_options, self._train_mode))
        stepper = _GroupStepper(inner, params)
        # A param is in one numpy optimizer at most; one whose params are in no group and have no
        # state (an engine's former partitions) is dropped rather than kept alive.
        in_groups = {id(p) for group in self.param_groups for p in group["params"]}
        for other_key, other in list(self._steppers.items()):
            unused = not other.ids & in_groups and not any(p in self.state for p in other.params)
            if other.ids & stepper.ids or other.stale or unused:
                del self._steppers[other_key]
        self._steppers[key] = stepper
        self._expose(stepper, carried)
        return stepper

    def _sync(self, stepper: _GroupStepper, group: Mapping[str, Any]) -> None:
        """Hand the group's hyperparameters edited since the last step to its numpy optimizer (the
        same object is the same value, unless it holds a tensor, which may be edited in place)."""
        inner_group = stepper.inner.param_groups[0]
        synced, tensor_valued = stepper.synced, stepper.tensor_valued
        for key in self._group_keys(group):
            value = group[key]
            if key in synced and value is synced[key] and key not in tensor_valued:
                continue
            plain = _plain(value)
            if plain != inner_group[key]:
                inner_group[key] = plain
            synced[key] = value
            if plain is not value:
                tensor_valued.add(key)
            else:
                tensor_valued.discard(key)

    def _numpy_state_dict(self, inner: OptimizerBase, entries: Mapping[int, Mapping[str, Any]],
                          storage: Mapping[str, Any] | None, train_mode: Any = True) -> dict[str, Any]:
        """torch-style state entries (tensors, float steps) as the numpy optimizer's state_dict."""
        state = {}
        for i, entry in entries.items():
            converted: dict[str, Any] = {}
            for key, value in entry.items():
                where = f"{self._label}: state of param {i}, {key!r}"
                if isinstance(value, list):  # (LBFGS's history: lists of tensors, None in its al)
                    value = [_numpy_state_value(v, f"{where}[{k}]") for k, v in enumerate(value)]
                else:
                    value = _numpy_state_value(value, where)
                if key == "step":
                    value = _whole_step(value, where)
                converted[key] = value
            # torch's SGD keeps no step: a buffer means it has stepped (LBFGS counts iterations instead)
            if "step" not in converted and self.state_has_step:
                converted["step"] = 1 if converted else 0
            state[i] = converted
        group = inner.param_groups[0]
        out: dict[str, Any] = {"state": state, "param_groups": [
            {**{k: v for k, v in group.items() if k != "params"}, "params": list(range(len(group["params"])))}]}
        if storage:
            out["storage"] = dict(storage)
        if hasattr(inner, "train_mode"):
            out["train_mode"] = train_mode
        return out

    def _expose(self, stepper: _GroupStepper, indices: Iterable[int]) -> None:
        """self.state[p] of each param i of the group in ``indices``: tensors viewing the numpy
        optimizer's state arrays (live), with ``step`` and scalar entries (0-d views too where the
        numpy optimizer keeps them in arrays)."""
        inner = stepper.inner
        for i in indices:
            entry: dict[str, Any] = {}
            if isinstance(inner, PyOptimizer):
                for key, value in inner._state[i].items():
                    entry[key] = tensor_view(value) if isinstance(value, np.ndarray) else torch.tensor(
                        float(value), dtype=_scalar_dtype())
            else:
                steps, scalars = torch.from_numpy(inner._steps), torch.from_numpy(inner._scalars)
                entry["step"] = steps[i]
                for key, value in inner._slots[i].items():
                    entry[key] = tensor_view(value)
                for j, (key, _) in enumerate(inner._spec.scalars):
                    entry[key] = scalars[i, j]
            p = stepper.params[i]
            dict.__setitem__(self.state, p, _StateEntry(self.state, p, entry))

    def _current_steppers(self) -> list[_GroupStepper]:
        return [self._stepper(g) for g, group in enumerate(self.param_groups) if group["params"]]

    # ----- stepping --------------------------------------------------------------------------
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step of every param with a ``.grad`` (params whose grad is None are skipped).
        ``closure`` re-evaluates the model and returns the loss (called with grad enabled)."""
        loss = None
        if closure is None and self.numpy_class.step_requires_loss:
            raise TypeError(f"{self._label}: step needs a closure returning the loss ({self._label} scales its step "
                            "by it): opt.step(closure), closure() computing the loss, calling backward() and "
                            "returning the loss")
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = []
        for g, group in enumerate(self.param_groups):
            params = group["params"]
            if not params:  # (ZeroRedundancyOptimizer and DeepSpeed ZeRO-3 make empty groups)
                continue
            key, grads = [], []
            for k, p in enumerate(params):
                key.append(id(p))
                key.append(p.data_ptr())
                grad = p.grad
                if grad is None:
                    grads.append(None)
                elif (_VIEWED_AS_ITSELF.get(grad.dtype) and grad.is_cpu and grad.layout is torch.strided
                      and not grad.requires_grad and grad.is_contiguous()):
                    grads.append(grad.numpy())  # (the common case, without the checks' costs)
                elif grad.layout is torch.sparse_coo:  # nn.Embedding(sparse=True)
                    grads.append(_row_sparse(grad, f"{self._label}: grad of param_groups[{g}]['params'][{k}]"))
                else:
                    grads.append(numpy_view(grad, f"{self._label}: grad of param_groups[{g}]['params'][{k}]",
                                            read_only=True))
            work.append((g, tuple(key), grads))
        # Every group's numpy optimizer and hyperparameters first, then the steps.
        steppers = [self._stepper(g, key) for g, key, _ in work]
        for stepper, (g, _, _) in zip(steppers, work):
            inner = stepper.inner
            with self._naming(g):  # (checks them: a bad value stops the step before any change)
                if isinstance(inner, NumpyOptimizer):
                    if inner._engine is None or inner._hyper_changed:  # (else checked when last handed over)
                        inner._flat_hypers()
                else:
                    inner._groups_checked()
        self._step_groups(steppers, work, loss)
        return loss

    def _step_groups(self, steppers: list[_GroupStepper], work: list[tuple[int, tuple, list[Any]]],
                     loss: Any = None) -> None:
        """Step each group's numpy optimizer with its grads (``work``: (group index, key, grads));
        ``loss``: the closure's, for the optimizers that step with it."""
        for stepper, (g, _, grads) in zip(steppers, work):
            with self._naming(g):
                if self.numpy_class.step_requires_loss:  # (PolyakSGD, MoMo: the closure's loss)
                    stepper.inner.step(grads, loss=loss.item() if isinstance(loss, torch.Tensor) else loss)
                else:
                    stepper.inner.step(grads)
            self._stepped(stepper, grads)

    def _stepped(self, stepper: _GroupStepper, grads: list[Any]) -> None:
        self._after_step(stepper, grads)
        # written through numpy: tell autograd, as an in-place torch op would (a step between a
        # forward and its backward is then torch's RuntimeError, not silently wrong grads)
        torch._C._increment_version([p for p, grad in zip(stepper.params, grads) if grad is not None])

    def _after_step(self, stepper: _GroupStepper, grads: list[Any]) -> None:
        """Give newly stepped params their state entries (all of them when the numpy optimizer
        reallocated its state); refresh the steps of the Python-written optimizers."""
        inner = stepper.inner
        if isinstance(inner, PyOptimizer):
            for i, grad in enumerate(grads):
                if grad is None:
                    continue
                entry = self.state.get(stepper.params[i])
                if not entry or len(entry) != len(inner._state[i]):
                    self._expose(stepper, [i])
                else:
                    entry["step"].fill_(float(inner._state[i]["step"]))
            return
        # (SPAM's masked path replaces state arrays without an engine: it counts them)
        engine = (inner._engine, getattr(inner, "_arrays_replaced", 0))
        if engine != stepper.engine_seen:
            stepper.engine_seen = engine
            stepper.exposed = {i for i, p in enumerate(stepper.params) if grads[i] is not None or self.state.get(p)}
            self._expose(stepper, stepper.exposed)
            return
        exposed = stepper.exposed
        for i, grad in enumerate(grads):
            if grad is not None and i not in exposed:
                self._expose(stepper, [i])
                exposed.add(i)

    # ----- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """torch's format: ``{"state": {index: {...}}, "param_groups": [...]}``, the state by param
        index with torch's key names; ``step`` and scalar entries as float tensors of torch's
        scalar dtype, the arrays as tensors (references to the live state, as torch returns).
        Non-default storage options add ``"storage"``."""
        out = super().state_dict()
        state = {}
        for index, entry in out["state"].items():
            converted = {}
            for key, value in entry.items():
                # ``step`` and the per-param scalars (not the state arrays of 0-d params): in torch's
                # scalar dtype where a torch twin reads them, else exactly (float64)
                if key in self.scalar_keys and isinstance(value, torch.Tensor):
                    dtype = _scalar_dtype() if key == "step" or self.has_torch_twin else torch.float64
                    value = torch.tensor(float(value), dtype=dtype)
                converted[key] = value
            state[index] = converted
        if self.numpy_class.__name__ in TWINS_WITHOUT_STEP:
            state = {index: {k: v for k, v in entry.items() if k != "step"} for index, entry in state.items()}
            state = {index: entry for index, entry in state.items() if entry}
        out["state"] = state
        if self._storage_options and self._storage_options != StorageOptions().as_dict():
            out["storage"] = dict(self._storage_options)
        if hasattr(self.numpy_class, "train_mode"):
            out["train_mode"] = self._train_mode
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Loads a state_dict of this optimizer or of its torch.optim twin (same format). Every
        entry is checked (keys, shapes, dtypes, hyperparameters) before anything changes."""
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(self, state_dict)
            if result is not None:
                state_dict = result
        label = self._label
        if not isinstance(state_dict, Mapping) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError(f"{label}: not an optimizer state_dict (needs 'state' and 'param_groups')")
        saved_groups = state_dict["param_groups"]
        if not isinstance(saved_groups, (list, tuple)) or len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{label}: loaded state dict has a different number of parameter groups")
        index_to_param: dict[Any, torch.Tensor] = {}
        new_groups = []
        for g, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if not isinstance(saved, Mapping) or not isinstance(saved.get("params"), (list, tuple)):
                raise ValueError(f"{label}: param group {g} of the state dict has no 'params' list")
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"{label}: loaded state dict contains a parameter group that doesn't match "
                                 f"the size of optimizer's group ({len(saved['params'])} params, not "
                                 f"{len(group['params'])})")
            index_to_param.update(zip(saved["params"], group["params"]))
            new_groups.append({**{k: v for k, v in saved.items() if k not in ("params", "param_names")},
                               **{k: group[k] for k in ("params", "param_names") if k in group}})
            # As torch's __setstate__: a checkpoint older than a hyperparameter gets its default
            defaults = _signature_defaults(self.numpy_class)
            for k in self._hyper_keys:
                if k not in new_groups[-1] and k in defaults:
                    new_groups[-1][k] = defaults[k]
            missing = [k for k in self._hyper_keys if k not in new_groups[-1]]
            if missing:
                raise ValueError(f"{label}: param group {g} of the state dict lacks {', '.join(missing)}")
        saved_state = state_dict["state"]
        if not isinstance(saved_state, Mapping):
            raise ValueError(f"{label}: state dict 'state' must be a dict by param index")
        unknown = [k for k in saved_state if k not in index_to_param]
        if unknown:
            raise ValueError(f"{label}: state dict has state for param index {unknown[0]!r}, which no group lists")
        for k, entry in saved_state.items():
            if not isinstance(entry, Mapping):
                raise ValueError(f"{label}: state of param index {k!r} must be a dict")
        storage = state_dict.get("storage")
        if storage is None:
            storage = StorageOptions().as_dict() if self._storage_options else {}
        if not isinstance(storage, Mapping):
            raise TypeError(f"{label}: state dict 'storage' must be a dict of storage options, got {storage!r:.80}")
        train_mode = state_dict.get("train_mode", True)
        entries_of = {id(index_to_param[k]): entry for k, entry in saved_state.items()}

        # Build and load the numpy optimizers first: they check everything; nothing changes before.
        built = []
        for g, group in enumerate(new_groups):
            if not group["params"]:
                continue
            try:
                inner = self._numpy_optimizer(g, group, {**self._storage_options, **storage})
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"{label}: state dict: {exc}") from None
            entries = {i: entries_of[id(p)] for i, p in enumerate(group["params"]) if id(p) in entries_of}
            inner.load_state_dict(self._numpy_state_dict(inner, entries, storage, train_mode))
            built.append((self._group_key(group), _GroupStepper(inner, list(group["params"])), entries))

        for group, new in zip(self.param_groups, new_groups):
            group.clear()
            group.update(new)
        self.state = _State(self)
        self._storage_options = dict(storage)
        self._train_mode = bool(train_mode)
        self._steppers = {}
        for key, stepper, entries in built:
            self._steppers[key] = stepper
            self._expose(stepper, sorted(entries))
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    def __getstate__(self) -> dict[str, Any]:  # pickling, copy.deepcopy: the numpy optimizers are rebuilt
        out = super().__getstate__()
        out.update(_label=self._label, _hyper_keys=self._hyper_keys, _storage_options=self._storage_options,
                   _constructing=False, _steppers={}, _train_mode=self._train_mode)
        return out

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._given = {id(p): weakref.ref(p) for group in self.param_groups for p in group["params"]}

    # ----- pyopt extras ----------------------------------------------------------------------
    @property
    def storage(self) -> dict[str, Any]:
        """The storage options (``state_dtype``, ``master_weights``, ``stochastic_rounding``)."""
        return dict(self._storage_options)

    def memory(self) -> dict[str, int]:
        """Bytes held by the params of the groups and their state, by part (as the numpy classes'
        ``memory()``)."""
        total: dict[str, int] = {}
        for stepper in self._current_steppers():
            for part, nbytes in stepper.inner.memory().items():
                total[part] = total.get(part, 0) + nbytes
        return total


class _ScheduleFreeModes:
    """The schedule-free optimizers' modes: the params hold y while training; ``eval()`` puts the
    average x into them (in place) until ``train()`` puts y back. ``step`` in eval mode raises."""

    def train(self) -> None:
        self._set_mode(True)

    def eval(self) -> None:
        self._set_mode(False)

    def _set_mode(self, train: bool) -> None:
        steppers = self._current_steppers()
        for stepper in steppers:  # eval needs a beta > 0 in every group: checked before any swap
            if not train and stepper.inner._beta(stepper.inner.param_groups[0]) == 0.0:
                stepper.inner.eval()  # (raises its ValueError)
        for stepper in steppers:
            if train:
                stepper.inner.train()
            else:
                stepper.inner.eval()
            torch._C._increment_version(stepper.params)
        self._train_mode = train

    @property
    def train_mode(self) -> bool:
        return self._train_mode


class _HessianUpdates:
    """SophiaG's Hessian estimates (``pyopt.hessian`` computes them from numpy arrays)."""

    def update_hessian(self, estimates: list[torch.Tensor | None]) -> None:
        """Fold a diagonal Hessian estimate per param (tensors in param order, None to skip) into
        the ``hessian`` state: ``h = beta2·h + (1 − beta2)·estimate``."""
        params = [p for group in self.param_groups for p in group["params"]]
        if not isinstance(estimates, (list, tuple)) or len(estimates) != len(params):
            raise ValueError(f"{self._label}: update_hessian takes one estimate (or None) per param, "
                             f"{len(params)} in all")
        views = [None if e is None else numpy_view(e, f"{self._label}: Hessian estimate {i}", read_only=True)
                 for i, e in enumerate(estimates)]
        for i, (p, view) in enumerate(zip(params, views)):  # all checked before any group's update
            if view is not None and view.shape != tuple(p.shape):
                raise ValueError(f"{self._label}: Hessian estimate {i} has shape {view.shape}, its param "
                                 f"{tuple(p.shape)}")
        first = 0
        for g, group in enumerate(self.param_groups):
            count = len(group["params"])
            if count:
                stepper = self._stepper(g)
                mine = views[first:first + count]
                stepper.inner.update_hessian(mine)
                stepper.engine_seen = None  # (the first update allocates the state)
                self._after_step(stepper, mine)
            first += count


class _ClosureSteps:
    """Optimizers that evaluate the model several times per step (LBFGS): ``step(closure)`` with
    torch's closure (it zeroes the grads, runs backward and returns the loss), which the numpy
    optimizer calls through a closure of its own returning ``(loss, [grad views])``. One param
    group, as torch's LBFGS; the state on the first param with torch's keys and types (lists of
    tensors, Python numbers), re-exposed after each step."""

    state_has_step = False

    def __init__(self, params: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(params, *args, **kwargs)  # type: ignore[call-arg]
        for group in [self.defaults, *self.param_groups]:  # as torch's constructor, None is resolved
            if group.get("max_eval") is None:
                group["max_eval"] = group["max_iter"] * 5 // 4

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if self.param_groups:
            raise ValueError(f"{self._label}: {self._label} doesn't support per-parameter options (parameter "
                             "groups): it steps all params as one vector; give them as one group")
        super().add_param_group(param_group)  # type: ignore[misc]

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step (several evaluations of ``closure``); returns the loss of its first call."""
        if closure is None or not callable(closure):
            raise TypeError(f"{self._label}: step needs a closure that zeroes the grads, computes the loss, "
                            "calls backward() and returns the loss: it is evaluated several times per step")
        params = self.param_groups[0]["params"]
        stepper = self._stepper(0)
        from_closure: list[BaseException] = []

        def evaluate() -> tuple[Any, list[np.ndarray | None]]:
            try:
                with torch.enable_grad():
                    loss = closure()
            except BaseException as exc:
                from_closure.append(exc)
                raise
            return loss, [None if p.grad is None else
                          numpy_view(p.grad, f"{self._label}: grad of param_groups[0]['params'][{k}]", read_only=True)
                          for k, p in enumerate(params)]

        try:
            with torch.no_grad():  # (as torch's step: the closure runs with grad enabled)
                return stepper.inner.step(evaluate)
        except (TypeError, ValueError) as exc:
            if from_closure and exc is from_closure[-1]:
                raise
            with self._naming(0):
                raise
        finally:
            # the params were written through numpy: tell autograd, as an in-place torch op would
            torch._C._increment_version(params)
            self._expose(stepper, [0])

    def _expose(self, stepper: _GroupStepper, indices: Iterable[int]) -> None:
        """torch's LBFGS state: arrays as tensors viewing them, lists as lists of tensors, the
        numbers torch keeps in 0-d tensors as 0-d tensors, ints and floats as they are."""
        for i in indices:
            entry = {key: _torch_state_value(value) for key, value in stepper.inner._state[i].items()}
            if entry:
                p = stepper.params[i]
                dict.__setitem__(self.state, p, _StateEntry(self.state, p, entry))


class _GlobalEstimate:
    """Optimizers with a state of the whole optimizer besides the per-param one: the
    learning-rate-free ones (pyopt/lr_free.py) and their distance estimate, one for all param
    groups. The groups' numpy optimizers step together (``lr_free.step_together``: one estimate
    from the sums over all groups, a copy of it in each), and after each step every torch param
    group holds a copy under ``"global_state"`` (where pytorch-optimizer keeps its ``d``): torch's
    state_dict saves it, load_state_dict hands it back."""

    def _numpy_optimizer(self, g: int, group: Mapping[str, Any], storage: Mapping[str, Any]) -> OptimizerBase:
        inner = super()._numpy_optimizer(g, group, storage)  # type: ignore[misc]
        saved = group.get("global_state")
        if saved:
            inner._global = inner._saved_global(saved)
        return inner

    def _numpy_state_dict(self, inner: OptimizerBase, entries: Mapping[int, Mapping[str, Any]],
                          storage: Mapping[str, Any] | None, train_mode: Any = True) -> dict[str, Any]:
        out = super()._numpy_state_dict(inner, entries, storage, train_mode)  # type: ignore[misc]
        if inner.global_state:  # type: ignore[attr-defined]
            out["global_state"] = inner.global_state  # type: ignore[attr-defined]
        return out

    def _step_groups(self, steppers: list[_GroupStepper], work: list[tuple[int, tuple, list[Any]]],
                     loss: Any = None) -> None:
        from .lr_free import step_together

        step_together([s.inner for s in steppers], [grads for _, _, grads in work],
                      lambda k: self._naming(work[k][0]))  # type: ignore[attr-defined]
        for stepper, (g, _, grads) in zip(steppers, work):
            self._stepped(stepper, grads)  # type: ignore[attr-defined]
            self.param_groups[g]["global_state"] = stepper.inner.global_state  # type: ignore[attr-defined]


class _OptimizerWideState:
    """Python-written optimizers whose state_dict has an optimizer-wide ``"global_state"`` that
    is not an estimate shared by the groups (Kron: its random generator and its step and update
    counters; ``optimizer_wide_state`` on the numpy class). After each step every torch param
    group holds its numpy optimizer's copy under ``"global_state"`` (torch's state_dict saves
    it); a numpy optimizer built for a group that has one (after load_state_dict) gets it back
    with the per-param state, so a resumed run draws what the uninterrupted one would have."""

    def _numpy_optimizer(self, g: int, group: Mapping[str, Any], storage: Mapping[str, Any]) -> OptimizerBase:
        inner = super()._numpy_optimizer(g, group, storage)  # type: ignore[misc]
        inner._torch_group_global_state = group.get("global_state")
        return inner

    def _numpy_state_dict(self, inner: OptimizerBase, entries: Mapping[int, Mapping[str, Any]],
                          storage: Mapping[str, Any] | None, train_mode: Any = True) -> dict[str, Any]:
        out = super()._numpy_state_dict(inner, entries, storage, train_mode)  # type: ignore[misc]
        saved = getattr(inner, "_torch_group_global_state", None)
        if saved is not None:
            out["global_state"] = saved
        return out

    def _step_groups(self, steppers: list[_GroupStepper], work: list[tuple[int, tuple, list[Any]]],
                     loss: Any = None) -> None:
        super()._step_groups(steppers, work, loss)  # type: ignore[misc]
        for stepper, (g, _, _) in zip(steppers, work):
            self.param_groups[g]["global_state"] = stepper.inner._state_dict_extras()["global_state"]  # type: ignore[attr-defined]


def _torch_state_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return tensor_view(value)
    if isinstance(value, np.generic):  # (a 0-d tensor in torch)
        return torch.from_numpy(np.array(value))
    if isinstance(value, list):
        return [None if v is None else _torch_state_value(v) for v in value]
    return value


def _numpy_state_value(value: Any, where: str) -> Any:
    """A torch state value as the numpy optimizers take it: 0-d tensors as numbers, others as
    ndarrays (viewing them where they are CPU and contiguous)."""
    if not isinstance(value, torch.Tensor):
        return value
    value = value.detach()
    if value.dim() == 0:
        return value.item()
    if value.dtype in (torch.uint8, torch.bool):  # the codes of an 8-bit state, SPAM's update masks
        return value.cpu().contiguous().numpy()
    return numpy_view(value.cpu().contiguous(), where)


def _hyper_signature(numpy_class: type) -> inspect.Signature:
    sig = inspect.signature(numpy_class.__init__)
    return sig.replace(parameters=[p for name, p in sig.parameters.items() if name not in ("self", "params")])


def _signature_defaults(numpy_class: type) -> dict[str, Any]:
    return {name: p.default for name, p in _hyper_signature(numpy_class).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _whole_step(value: Any, where: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{where} must be a number, got {value!r:.60}")
    if not math.isfinite(value) or value < 0 or value != int(value):
        raise ValueError(f"{where} must be a whole number >= 0, got {value!r}")
    return int(value)


def _check_torch_arguments(label: str, hyper: dict[str, Any], flags: Mapping[str, Any]) -> None:
    """The checks torch.optim makes of tensor hyperparameters and its implementation flags (same
    exception types), before pyopt's own checks of the values."""
    lr = hyper.get("lr")
    if isinstance(lr, torch.Tensor):
        if lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if flags.get("foreach") and not flags.get("capturable"):
            raise ValueError("lr as a Tensor is not supported for capturable=False and foreach=True")
    betas = hyper.get("betas")
    if isinstance(betas, tuple) and any(isinstance(b, torch.Tensor) for b in betas):
        if not all(isinstance(b, torch.Tensor) for b in betas):
            raise ValueError("betas must be either both floats or both Tensors")
        if flags.get("foreach") and not flags.get("capturable"):
            raise ValueError("betas[0] as a Tensor is not supported for capturable=False and foreach=True")
        if any(b.numel() != 1 for b in betas):
            raise ValueError("Tensor betas[0] and betas[1] must be 1-element")
    if flags.get("capturable"):
        raise ValueError(f"{label}: capturable=True is for CUDA graphs; pyopt.torch steps CPU tensors")
    if flags.get("differentiable"):
        raise ValueError(f"{label}: differentiable=True (autograd through the step) is not supported by pyopt")


def _torch_flags(class_name: str) -> dict[str, Any]:
    """torch's implementation flags of the torch.optim class of this name (none if there is none)."""
    twin = getattr(torch.optim, class_name, None)
    if not (isinstance(twin, type) and issubclass(twin, torch.optim.Optimizer)):
        return {}
    params = inspect.signature(twin.__init__).parameters
    return {f: params[f].default for f in IMPLEMENTATION_FLAGS if f in params}


def _make_class(name: str, record: Mapping[str, Any]) -> type:
    numpy_class = python_optimizer(name) or getattr(_numpy_optimizers, record["class_name"])
    flags = _torch_flags(record["class_name"])
    hyper_sig = _hyper_signature(numpy_class)
    flag_params = [inspect.Parameter(f, inspect.Parameter.KEYWORD_ONLY, default=d) for f, d in flags.items()]
    params = [inspect.Parameter("params", inspect.Parameter.POSITIONAL_OR_KEYWORD)] + list(
        hyper_sig.parameters.values())
    ordered = ([p for p in params if p.kind != inspect.Parameter.KEYWORD_ONLY]
               + [p for p in params if p.kind == inspect.Parameter.KEYWORD_ONLY] + flag_params)
    doc = (f"{record['class_name']}: pyopt's ``{name}`` as a ``torch.optim.Optimizer`` (see ``pyopt.torch``).\n\n"
           + (numpy_class.__doc__ or ""))
    mixins = ((_ScheduleFreeModes,) if hasattr(numpy_class, "train_mode") else ()) + (
        (_HessianUpdates,) if hasattr(numpy_class, "update_hessian") else ()) + (
        (_ClosureSteps,) if numpy_class.step_requires_closure else ()) + (
        (_GlobalEstimate,) if hasattr(numpy_class, "global_state") else ()) + (
        (_OptimizerWideState,) if getattr(numpy_class, "optimizer_wide_state", False) else ())
    cls = type(record["class_name"], mixins + (Optimizer,), {
        "name": name, "numpy_class": numpy_class, "implementation_flags": flags,
        "per_tensor": bool(record["per_tensor"]), "__doc__": doc, "__module__": __name__,
        "scalar_keys": frozenset({"step", *(() if issubclass(numpy_class, PyOptimizer) else
                                            (n for n, _ in spec(name).scalars))}),
        "has_torch_twin": isinstance(getattr(torch.optim, record["class_name"], None), type),
        "__signature__": inspect.Signature(ordered),
    })
    return cls


for _name, _record in _core.optimizers().items():
    _cls = _make_class(_name, _record)
    globals()[_cls.__name__] = _cls
    __all__.append(_cls.__name__)
del _name, _record, _cls
