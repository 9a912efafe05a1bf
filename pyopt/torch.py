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

Optimizers whose step reads whole tensors (LAMB, LARS, StableAdamW, NovoGrad, Muon, Adafactor:
``per_tensor`` in their record) refuse params that were not given to them, as happens when an
engine such as DeepSpeed ZeRO replaces ``param_groups`` with flat partitions of many params: a
norm over such a partition is not the norm of any param. The element-wise ones step such
partitions exactly as they would step the params one by one.

This module imports torch; ``import pyopt`` does not.
"""
from __future__ import annotations

import inspect
import math
import weakref
from collections import defaultdict
from typing import Any, Callable, ClassVar, Iterable, Mapping

import ml_dtypes
import numpy as np
import torch

from . import _core
from . import optimizers as _numpy_optimizers
from ._pybase import PyOptimizer, python_optimizer
from .optimizer import OptimizerBase
from .storage import StorageOptions

__all__ = ["Optimizer"]  # and one class per optimizer, added below

STORAGE_OPTIONS = tuple(StorageOptions().as_dict())
IMPLEMENTATION_FLAGS = ("foreach", "fused", "capturable", "differentiable")
_BF16 = np.dtype(ml_dtypes.bfloat16)
_TENSOR_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


class UnsupportedTensorError(TypeError, RuntimeError):
    """A tensor pyopt cannot step (complex, sparse, an integer dtype). A TypeError, and also the
    RuntimeError torch.optim raises for complex params where it does not take them."""


_VIEWED_AS_ITSELF = {torch.float32: True, torch.float64: True, torch.float16: True, torch.bfloat16: False}


def numpy_view(t: torch.Tensor, what: str) -> np.ndarray:
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
        raise ValueError(f"{what} is not contiguous (strides {tuple(t.stride())}); pyopt.torch updates "
                         "params in place and needs contiguous tensors (make the param contiguous once, "
                         "before creating the optimizer)")
    t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(_BF16)
    return t.numpy()


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


class Optimizer(torch.optim.Optimizer):
    """Base class of the ``pyopt.torch`` optimizers (see the module docstring). A subclass names
    its pyopt optimizer (``name``); the work is done by the numpy class of that optimizer, kept
    over ndarray views of the tensors and rebuilt when the set of params changes."""

    name: ClassVar[str]
    numpy_class: ClassVar[type]
    implementation_flags: ClassVar[dict[str, Any]] = {}  # torch's flags the twin takes, with torch's defaults
    per_tensor: ClassVar[bool] = False

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
        self._storage_options = {k: hyper.pop(k) for k in STORAGE_OPTIONS if k in hyper}
        _check_torch_arguments(label, hyper, flags)
        self._hyper_keys = tuple(hyper)
        self._label = label
        self._inner: OptimizerBase | None = None
        self._inner_key: tuple | None = None
        self._synced: list[dict[str, Any]] = []
        self._given: dict[int, weakref.ref] = {}  # id -> param given to the constructor or add_param_group
        self._constructing = True
        super().__init__(params, {**hyper, **flags})
        self._constructing = False
        self._rebuild()  # checks every param and hyperparameter now, not at the first step

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
            self._rebuild()
        except BaseException:
            del self.param_groups[before:]
            self._rebuild()
            raise

    def _key(self) -> tuple:
        """What identifies the params the numpy optimizer views: each group's size, each param's
        identity and memory."""
        key: list[int] = []
        for group in self.param_groups:
            key.append(len(group["params"]))
            for p in group["params"]:
                key.append(id(p))
                key.append(p.data_ptr())
        return tuple(key)

    def _rebuild(self) -> None:
        """A numpy optimizer over the current param groups, carrying over the state of every param
        that has some; the tensors' state entries then view its arrays."""
        if self.per_tensor:
            for g, group in enumerate(self.param_groups):
                for k, p in enumerate(group["params"]):
                    known = self._given.get(id(p))
                    if known is None or known() is not p:
                        raise ValueError(
                            f"{self._label}: param_groups[{g}]['params'][{k}] was not given to the optimizer "
                            f"(its param groups were replaced, as DeepSpeed ZeRO does with flat partitions of "
                            f"many params): {self.name} computes norms or matrix products over each whole param, "
                            "which a partition is not. Use an element-wise optimizer there (e.g. AdamW, Lion), "
                            "or give this optimizer the params themselves")
        groups = []
        for g, group in enumerate(self.param_groups):
            views = [numpy_view(p, f"{self._label}: param_groups[{g}]['params'][{k}]")
                     for k, p in enumerate(group["params"])]
            groups.append({"params": views, **{k: _plain(group[k]) for k in self._hyper_keys}})
        inner = self.numpy_class(groups, **self._storage_options)
        params = [p for group in self.param_groups for p in group["params"]]
        carried = {i: self.state[p] for i, p in enumerate(params) if self.state.get(p)}
        train_mode = getattr(self._inner, "train_mode", True)  # schedule-free: the mode carries over
        if carried or not train_mode:
            inner.load_state_dict(self._numpy_state_dict(inner, carried, self._storage_options, train_mode))
        self.state = defaultdict(dict)  # (the state of params no longer in the groups goes)
        self._inner = inner
        self._inner_key = self._key()
        self._sync_all()
        self._engine_seen = None
        self._expose(inner, params, [i for i in carried])

    def _numpy_state_dict(self, inner: OptimizerBase, entries: Mapping[int, Mapping[str, Any]],
                          storage: Mapping[str, Any] | None, train_mode: Any = True) -> dict[str, Any]:
        """torch-style state entries (tensors, float steps) as the numpy optimizer's state_dict."""
        state = {}
        for i, entry in entries.items():
            converted: dict[str, Any] = {}
            for key, value in entry.items():
                where = f"{self._label}: state of param {i}, {key!r}"
                if isinstance(value, torch.Tensor):
                    value = value.detach()
                    if value.dim() == 0:
                        value = value.item()
                    elif value.dtype == torch.uint8:  # the codes of an 8-bit state
                        value = value.cpu().contiguous().numpy()
                    else:
                        value = numpy_view(value.cpu().contiguous(), where)
                if key == "step":
                    value = _whole_step(value, where)
                converted[key] = value
            if "step" not in converted:  # torch's SGD keeps no step: a buffer means it has stepped
                converted["step"] = 1 if converted else 0
            state[i] = converted
        groups, index = [], 0
        for group in inner.param_groups:
            count = len(group["params"])
            groups.append({**{k: v for k, v in group.items() if k != "params"},
                           "params": list(range(index, index + count))})
            index += count
        out: dict[str, Any] = {"state": state, "param_groups": groups}
        if storage:
            out["storage"] = dict(storage)
        if hasattr(inner, "train_mode"):
            out["train_mode"] = train_mode
        return out

    def _expose(self, inner: OptimizerBase, params: list[torch.Tensor], indices: Iterable[int]) -> None:
        """self.state[p] of each param i in ``indices``: tensors viewing the numpy optimizer's state
        arrays (live), with ``step`` and scalar entries (engine-backed: 0-d views too)."""
        for i in indices:
            p = params[i]
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
            self.state[p] = entry

    # ----- stepping --------------------------------------------------------------------------
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step of every param with a ``.grad`` (params whose grad is None are skipped).
        ``closure`` re-evaluates the model and returns the loss (called with grad enabled)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params, grads, key = [], [], []
        for g, group in enumerate(self.param_groups):
            key.append(len(group["params"]))
            for k, p in enumerate(group["params"]):
                params.append(p)
                key.append(id(p))
                key.append(p.data_ptr())
                grad = p.grad
                if grad is None:
                    grads.append(None)
                elif (_VIEWED_AS_ITSELF.get(grad.dtype) and grad.is_cpu and grad.layout is torch.strided
                      and not grad.requires_grad and grad.is_contiguous()):
                    grads.append(grad.numpy())  # (the common case, without the checks' costs)
                else:
                    grads.append(numpy_view(grad, f"{self._label}: grad of param_groups[{g}]['params'][{k}]"))
        inner = self._current(tuple(key))
        inner.step(grads)
        self._after_step(inner, params, grads)
        return loss

    def _sync_all(self) -> None:
        """Mark every group's hyperparameters as handed to the numpy optimizer (just built from them)."""
        self._synced = [{k: group[k] for k in self._hyper_keys} for group in self.param_groups]
        self._tensor_valued = {(g, k) for g, group in enumerate(self.param_groups) for k in self._hyper_keys
                               if _plain(group[k]) is not group[k]}

    def _current(self, key: tuple | None = None) -> OptimizerBase:
        """The numpy optimizer, rebuilt if the params changed, with the groups' current hyperparameters."""
        if self._inner_key != (self._key() if key is None else key):
            self._rebuild()
        inner = self._inner
        for g, group in enumerate(self.param_groups):  # hyperparameters edited since the last step
            synced = self._synced[g]
            for key in self._hyper_keys:
                value = group[key]
                # The same object is the same value, unless it holds a tensor (edited in place).
                if value is synced[key] and (g, key) not in self._tensor_valued:
                    continue
                plain = _plain(value)
                if plain != inner.param_groups[g][key]:
                    inner.param_groups[g][key] = plain
                synced[key] = value
                if plain is not value:
                    self._tensor_valued.add((g, key))
                else:
                    self._tensor_valued.discard((g, key))
        return inner

    def _after_step(self, inner: OptimizerBase, params: list[torch.Tensor], grads: list[Any]) -> None:
        """Give newly stepped params their state entries (all of them when the numpy optimizer
        reallocated its state); refresh the steps of the Python-written optimizers."""
        if isinstance(inner, PyOptimizer):
            for i, p in enumerate(params):
                if grads[i] is None:
                    continue
                entry = self.state.get(p)
                if not entry or len(entry) != len(inner._state[i]):
                    self._expose(inner, params, [i])
                else:
                    entry["step"].fill_(float(inner._state[i]["step"]))
            return
        engine = inner._engine
        if engine is not self._engine_seen:
            self._engine_seen = engine
            self._exposed = {i for i, p in enumerate(params) if grads[i] is not None or self.state.get(p)}
            self._expose(inner, params, self._exposed)
            return
        exposed = self._exposed
        for i, grad in enumerate(grads):
            if grad is not None and i not in exposed:
                self._expose(inner, params, [i])
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
                if isinstance(value, torch.Tensor) and value.dim() == 0:
                    value = torch.tensor(float(value), dtype=_scalar_dtype())
                converted[key] = value
            state[index] = converted
        if self.implementation_flags and self.numpy_class.__name__ == "SGD":  # torch's SGD keeps no step
            state = {index: {k: v for k, v in entry.items() if k != "step"} for index, entry in state.items()}
            state = {index: entry for index, entry in state.items() if entry}
        out["state"] = state
        if self._storage_options != StorageOptions().as_dict():
            out["storage"] = dict(self._storage_options)
        if hasattr(self._inner, "train_mode"):
            out["train_mode"] = self._current().train_mode
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
        saved_state = state_dict["state"]
        if not isinstance(saved_state, Mapping):
            raise ValueError(f"{label}: state dict 'state' must be a dict by param index")
        unknown = [k for k in saved_state if k not in index_to_param]
        if unknown:
            raise ValueError(f"{label}: state dict has state for param index {unknown[0]!r}, which no group lists")
        for g, group in enumerate(new_groups):
            missing = [k for k in self._hyper_keys if k not in group]
            if missing:
                raise ValueError(f"{label}: param group {g} of the state dict lacks {', '.join(missing)}")
        storage = state_dict.get("storage")
        if storage is None:
            storage = StorageOptions().as_dict() if self._storage_options else {}
        if not isinstance(storage, Mapping):
            raise TypeError(f"{label}: state dict 'storage' must be a dict of storage options, got {storage!r:.80}")

        # Build and load the numpy optimizer first: it checks everything; nothing here changes before.
        groups = [{"params": [numpy_view(p, f"{label}: param_groups[{g}]['params'][{k}]")
                              for k, p in enumerate(group["params"])],
                   **{key: _plain(group[key]) for key in self._hyper_keys}} for g, group in enumerate(new_groups)]
        try:
            inner = self.numpy_class(groups, **{**self._storage_options, **storage})
        except TypeError as exc:
            raise TypeError(f"{label}: state dict: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"{label}: state dict: {exc}") from None
        params = [p for group in new_groups for p in group["params"]]
        position = {id(p): i for i, p in enumerate(params)}
        entries = {position[id(index_to_param[k])]: v for k, v in saved_state.items()}
        for i, entry in entries.items():
            if not isinstance(entry, Mapping):
                raise ValueError(f"{label}: state of param {i} must be a dict")
        inner.load_state_dict(self._numpy_state_dict(inner, entries, storage, state_dict.get("train_mode", True)))

        for group, new in zip(self.param_groups, new_groups):
            group.clear()
            group.update(new)
        self.state = defaultdict(dict)
        self._storage_options = dict(storage)
        self._inner = inner
        self._inner_key = self._key()
        self._sync_all()
        self._engine_seen = None
        self._expose(inner, params, sorted(entries))
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    def __getstate__(self) -> dict[str, Any]:  # pickling, copy.deepcopy: the numpy optimizer is rebuilt
        out = super().__getstate__()
        out.update(_label=self._label, _hyper_keys=self._hyper_keys, _storage_options=self._storage_options,
                   _constructing=False, _inner=None, _inner_key=None, _synced=[], _tensor_valued=set())
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
        """Bytes held, by part, as the numpy classes' ``memory()``."""
        return self._inner.memory()


class _ScheduleFreeModes:
    """The schedule-free optimizers' modes: the params hold y while training; ``eval()`` puts the
    average x into them (in place) until ``train()`` puts y back. ``step`` in eval mode raises."""

    def train(self) -> None:
        self._current().train()

    def eval(self) -> None:
        self._current().eval()

    @property
    def train_mode(self) -> bool:
        return self._current().train_mode


class _HessianUpdates:
    """SophiaG's Hessian estimates (``pyopt.hessian`` computes them from numpy arrays)."""

    def update_hessian(self, estimates: list[torch.Tensor | None]) -> None:
        """Fold a diagonal Hessian estimate per param (tensors in param order, None to skip) into
        the ``hessian`` state: ``h = beta2·h + (1 − beta2)·estimate``."""
        inner = self._current()
        params = [p for group in self.param_groups for p in group["params"]]
        if not isinstance(estimates, (list, tuple)) or len(estimates) != len(params):
            raise ValueError(f"{self._label}: update_hessian takes one estimate (or None) per param, "
                             f"{len(params)} in all")
        views = [None if e is None else numpy_view(e, f"{self._label}: Hessian estimate {i}")
                 for i, e in enumerate(estimates)]
        inner.update_hessian(views)
        self._engine_seen = None  # (the first update allocates the state)
        self._after_step(inner, params, views)


def _hyper_signature(numpy_class: type) -> inspect.Signature:
    sig = inspect.signature(numpy_class.__init__)
    return sig.replace(parameters=[p for name, p in sig.parameters.items() if name not in ("self", "params")])


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
        (_HessianUpdates,) if hasattr(numpy_class, "update_hessian") else ())
    cls = type(record["class_name"], mixins + (Optimizer,), {
        "name": name, "numpy_class": numpy_class, "implementation_flags": flags,
        "per_tensor": bool(record["per_tensor"]), "__doc__": doc, "__module__": __name__,
        "__signature__": inspect.Signature(ordered),
    })
    return cls


for _name, _record in _core.optimizers().items():
    _cls = _make_class(_name, _record)
    globals()[_cls.__name__] = _cls
    __all__.append(_cls.__name__)
del _name, _record, _cls
