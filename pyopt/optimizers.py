"""Every optimizer as a class, generated from its record (csrc/include/pyopt/records.def, through
``_core.optimizers()``): class name, signature (torch-style tuples, keyword-only markers),
defaults, docstring and ``lr_range``. Names and defaults follow the reference each optimizer
matches (torch.optim's where torch has it); the update rules live in
csrc/include/pyopt/rules/<rule>.hpp and are checked against their references in
tests/python/test_reference.py. Optimizers with methods of their own (SophiaG's
``update_hessian``, the schedule-free ``eval``/``train``) get them from a small hand-written base
class below; their signature and docstring still come from the record.
"""
from __future__ import annotations

import __future__

from typing import Any, Mapping

import numpy as np

from . import _core
from ._spec import HyperSpec, Param, Spec, rule_optimizers, spec
from .optimizer import GradsLike, Optimizer, ParamsLike, _locked
from .spam import MaskedSPAM
from .storage import StorageOptions

STORAGE_OPTIONS = tuple(StorageOptions().as_dict())  # keyword-only options of every class (pyopt.storage)


class _SophiaG(Optimizer):
    """Call ``update_hessian`` every k steps (k = 10 in the paper) with a diagonal Hessian estimate
    per param (``pyopt.hessian`` has the Gauss-Newton-Bartlett and Hutchinson estimators); until
    then h = 0 and the steps are ±lr."""
    accepts_16bit_params = False  # its Python-side maps are float32/float64 only
    state_dtypes = ("float32",)

    @_locked
    def update_hessian(self, estimates: GradsLike) -> None:
        """Fold a diagonal Hessian estimate into each param's ``hessian`` state:
        ``h = beta2·h + (1 − beta2)·estimate`` (one fused pass over all params).

        ``estimates`` is given like ``step``'s grads (a list in param order with ``None`` to skip,
        a dict by name, or a lone array); each has its param's shape. The official code does this
        every 10 steps with the Gauss-Newton-Bartlett estimate, the square of the gradient of the
        loss on labels sampled from the model (``pyopt.hessian.gnb_estimate``)."""
        if self._engine is None:
            self._rebuild()  # allocates the state (h starts at 0)
        elif self._hyper_changed:
            self._refresh_hypers()
        beta2: list[float] = []
        tensors: list[Any] = []
        index = 0
        for g, group in enumerate(self.param_groups):
            beta2.append(float(group["betas"][1]))
            for _ in group["params"]:
                tensors.append((f"{self._owner_label}: {self._labels[index]} (hessian estimate)", g,
                                self._slots[index]["hessian"]))
                index += 1
        _core.sophia_hessian_update(beta2, tensors, self._grad_list(estimates))


class _ScheduleFree(Optimizer):
    """Schedule-free optimizers keep two iterates: the param array holds y (where gradients are
    taken) while training, and ``eval()`` swaps in the average x = lerp(y, z, 1 − 1/β), in place,
    until ``train()`` swaps y back. Unlike the reference, a new optimizer starts in train mode;
    ``step`` in eval mode raises. The mode is part of ``state_dict``."""
    accepts_16bit_params = False  # its Python-side maps are float32/float64 only
    state_dtypes = ("float32",)

    def __init__(self, params: ParamsLike, **hyper: Any) -> None:
        super().__init__(params, **hyper)
        self._train_mode = True

    @property
    def train_mode(self) -> bool:
        """True while the params hold y (training), False after ``eval()`` (they hold x)."""
        return self._train_mode

    def _beta(self, group: Mapping[str, Any]) -> float:
        """β1 of the AdamW variant, the momentum of the SGD one."""
        return float(group["betas"][0] if "betas" in group else group["momentum"])

    def train(self) -> None:
        """Put y back into the params (no-op in train mode): ``p = lerp(p, z, 1 − β)``."""
        self._swap(True)

    def eval(self) -> None:
        """Put the averaged x into the params for evaluation or saving (no-op in eval mode):
        ``p = lerp(p, z, 1 − 1/β)``."""
        self._swap(False)

    @_locked
    def _swap(self, to_train: bool) -> None:
        if self._train_mode == to_train:
            return
        weights: list[float] = []
        tensors: list[Any] = []
        ends: list[Any] = []
        index = 0
        for g, group in enumerate(self.param_groups):
            beta = float(self._beta(group))
            if not to_train and beta == 0.0:
                raise ValueError(f"{self._owner_label}: eval() needs a momentum / beta1 > 0 (x = lerp(y, z, 1 - 1/beta))")
            weights.append(1.0 - beta if to_train else 1.0 - 1.0 / beta)
            for p in group["params"]:
                z = self._slots[index].get("z")
                if z is not None and self._steps[index] > 0:
                    tensors.append((self._labels[index], g, p))
                    ends.append(z)
                index += 1
        if tensors:
            _core.lerp_inplace(weights, tensors, ends)
        self._train_mode = to_train

    @_locked
    def step(self, grads: GradsLike, **options: Any) -> bool:
        """As ``Optimizer.step``; raises RuntimeError in eval mode."""
        if not self._train_mode:
            raise RuntimeError(f"{self._owner_label}: step() in eval mode (the params hold the average x); "
                               "call opt.train() first")
        return super().step(grads, **options)

    @_locked
    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        out["train_mode"] = self._train_mode
        return out

    @_locked
    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        mode = state_dict.get("train_mode", True) if isinstance(state_dict, Mapping) else True
        if not isinstance(mode, (bool, np.bool_)):
            raise ValueError(f"{self._owner_label}: state_dict 'train_mode' must be a bool, got {mode!r}")
        super().load_state_dict(state_dict)
        self._train_mode = bool(mode)

class _AdEMAMix(Optimizer):
    """``t_alpha_beta3=None`` (the reference's default) is 0: no warmup."""

    _annotations = {"t_alpha_beta3": "float | None"}

    def __init__(self, params: ParamsLike, **hyper: Any) -> None:
        if hyper.get("t_alpha_beta3") is None:
            hyper["t_alpha_beta3"] = 0.0  # the reference's None; 0 would divide by zero there
        super().__init__(params, **hyper)


class _SimplifiedAdEMAMix(Optimizer):
    """``beta1_warmup=None`` (the reference's default) is 0: no warmup."""

    _annotations = {"beta1_warmup": "float | None"}

    def __init__(self, params: ParamsLike, **hyper: Any) -> None:
        if hyper.get("beta1_warmup") is None:
            hyper["beta1_warmup"] = 0.0  # the reference's None
        super().__init__(params, **hyper)


MARS_TYPES = ("adamw", "lion", "shampoo")


class _MARS(Optimizer):
    """``mars_type`` (keyword-only; pytorch-optimizer's): ``'adamw'`` (the default), ``'lion'``
    (``lion=True``, as ``MARSLion``) or ``'shampoo'``: then a ``pyopt.MARSShampoo`` is returned
    instead (matrices take the Newton–Schulz orthogonalized momentum, in numpy), built from the same
    arguments and its own keyword-only ones (``optimize_1d``, ``lr_1d``, ``betas_1d``,
    ``weight_decay_1d``)."""

    _extra_keywords = {"mars_type": ("str", "adamw")}  # (in the generated signature; not a hyperparameter)

    @staticmethod
    def _routed(kwargs: dict[str, Any]) -> str | None:
        """The optimizer that the keyword arguments' mars_type builds instead of MARS ("mars_shampoo",
        with ``kwargs`` made its arguments, in place), or None. Checks mars_type."""
        mars_type = kwargs.get("mars_type", "adamw")
        if not isinstance(mars_type, str):
            raise TypeError(f"MARS: mars_type must be a str, got {mars_type!r}")
        if mars_type not in MARS_TYPES:
            raise ValueError(f"MARS: invalid mars_type: {mars_type!r} (must be one of {', '.join(map(repr, MARS_TYPES))})")
        if mars_type != "shampoo":
            return None
        del kwargs["mars_type"]
        if kwargs.pop("lion", False):
            raise ValueError("MARS: lion=True is mars_type='lion', not mars_type='shampoo'")
        default_storage = StorageOptions().as_dict()
        storage = {k: kwargs.pop(k) for k in STORAGE_OPTIONS if k in kwargs}
        if any(value != default_storage[k] for k, value in storage.items()):
            raise ValueError(f"MARS: mars_type='shampoo' (pyopt.MARSShampoo) has no storage options (its states are "
                             f"its params' dtype), got {storage}")
        return "mars_shampoo"

    @staticmethod
    def _fold(hyper: dict[str, Any]) -> None:
        """mars_type 'adamw' or 'lion' into the record's lion flag (in place)."""
        if hyper.pop("mars_type", "adamw") == "lion":
            hyper["lion"] = True

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls._routed(kwargs) is None:
            return super().__new__(cls)
        from .mars_shampoo import MARSShampoo  # (MARS's positional hyperparameters are its first ones)

        return MARSShampoo(*args, **kwargs)

    def __init__(self, params: ParamsLike, **hyper: Any) -> None:
        self._fold(hyper)
        super().__init__(params, **hyper)


# The hand-written bases of the optimizers that need more than the record says.
_BASES: dict[str, type[Optimizer]] = {"sophia": _SophiaG, "schedulefree_adamw": _ScheduleFree,
                                      "schedulefree_sgd": _ScheduleFree, "ademamix": _AdEMAMix,
                                      "simplified_ademamix": _SimplifiedAdEMAMix, "spam": MaskedSPAM,
                                      "mars": _MARS}

_RANGES = {"number": "not NaN", "finite": "finite", "nonnegative": ">= 0", "nonnegative_finite": ">= 0, finite",
           "positive": "> 0", "greater_than_one": "> 1", "(0,1)": "in (0, 1)", "[0,1)": "in [0, 1)",
           "[0,1]": "in [0, 1]", "(0,1]": "in (0, 1]"}


def _annotation(param: Param) -> str:
    kinds = [{"bool": "bool", "int": "int"}.get(m.kind, "float") for m in param.members]
    return f"tuple[{', '.join(kinds)}]" if param.is_tuple else kinds[0]


def _signature_default(param: Param) -> Any:
    """The default as the signature shows it: integers as ints (the rules keep them as doubles)."""
    values = tuple(m.value for m in param.members)
    return values if param.is_tuple else values[0]


def _range_text(h: HyperSpec) -> str:
    text = _RANGES.get(h.range, "" if h.range == "any" else h.range)
    return f"{text}: {h.range_note}" if text and h.range_note else text


def _describe(param: Param) -> str:
    """``name (type[, keyword-only], default ...[, valid range]): doc`` for the docstring."""
    facts = [_annotation(param)] + (["keyword-only"] if param.keyword_only else [])
    facts.append(f"default {_signature_default(param)!r}")
    ranges = [_range_text(m) for m in param.members]
    if param.is_tuple and len(set(ranges)) == 1 and ranges[0]:
        facts.append(f"each {ranges[0]}")
    elif param.is_tuple:
        facts += [f"{m.name} {r}" for m, r in zip(param.members, ranges) if r]
    elif ranges[0]:
        facts.append(ranges[0])
    docs = "; ".join(m.doc for m in param.members if m.doc)
    return f"{param.name} ({', '.join(facts)})" + (f": {docs}" if docs else "")


def rule_file(rule: str) -> str:
    """Where a rule lives: one file per rule, named after it."""
    return f"csrc/include/pyopt/rules/{rule}.hpp"


def docstring(s: Spec, base: type | None = None) -> str:
    """The class docstring: summary, reference, paper, rule file, hyperparameters with their
    ranges, the tuner's lr range (and the hand-written base's notes)."""
    lines = [f"{s.summary}.", ""]
    if s.alias_of:
        changed = {k: v for k, v in s.defaults.items() if spec(s.alias_of).defaults.get(k) != v}
        pinned = sorted(s.fixed - spec(s.alias_of).fixed)
        what = ", ".join([f"{k}={v!r}" for k, v in changed.items()] + [f"{k} pinned" for k in pinned])
        lines += [f"``{s.alias_of}`` under its own name ({what}).", ""]
    lines += [f"Matches {s.reference}. Paper: {s.paper} ({s.paper_url}).",
              f"Update rule: {rule_file(s.rule)} (the rule ``{s.rule}``).", ""]
    if base is not None and base.__doc__:
        lines += [" ".join(base.__doc__.split()), ""]
    lines.append("Hyperparameters:")
    lines += [f"    {_describe(p)}" for p in s.params]
    lines.append("Storage (keyword-only; see pyopt.storage):")
    record = _core.optimizers()[s.name]
    int8 = record["int8_slots"]
    allowed = getattr(base, "state_dtypes", Optimizer.state_dtypes) if base is not None else Optimizer.state_dtypes
    state_dtypes = [d for d in record["state_dtypes"] if d in allowed]
    lines.append(f"    state_dtype (str, default 'float32'): one of {', '.join(map(repr, state_dtypes))}"
                 + (f"; 'int8' quantizes {', '.join(int8)} of params with >= 4096 elements" if "int8" in state_dtypes
                    else ""))
    lines.append("    master_weights (bool, default False): a float32 master copy of float16/bfloat16 params")
    lines.append("    stochastic_rounding (bool, default False): round 16-bit writes without a master stochastically")
    lines += ["", f"The tuner searches lr in [{s.lr_range[0]:g}, {s.lr_range[1]:g}] (log scale)."]
    return "\n".join(lines)


def make_class(s: Spec, base: type[Optimizer] = Optimizer) -> type[Optimizer]:
    """The class of record ``s``: ``__init__(self, params, <hyperparameters>)`` with the record's
    defaults, torch-style tuples and keyword-only markers, generated as Python source so that
    argument errors read as for any Python function."""
    annotations: dict[str, str] = getattr(base, "_annotations", {})
    parts, keyword_only = [], False
    for p in s.params:
        if p.keyword_only and not keyword_only:
            parts.append("*")
            keyword_only = True
        parts.append(f"{p.name}: {annotations.get(p.name, _annotation(p))} = _defaults[{p.name!r}]")
    if not keyword_only:
        parts.append("*")
    # Keyword-only arguments of the hand-written base that are not hyperparameters (MARS's mars_type).
    extras: dict[str, tuple[str, Any]] = getattr(base, "_extra_keywords", {})
    parts += [f"{name}: {annotation} = _extras[{name!r}]" for name, (annotation, _) in extras.items()]
    parts += ["master_weights: bool = False", "state_dtype: str = 'float32'", "stochastic_rounding: bool = False"]
    forward = ", ".join(f"{name}={name}" for name in [p.name for p in s.params] + list(extras) + list(STORAGE_OPTIONS))
    source = (f"class {s.class_name}(_base):\n"
              f"    def __init__(self, params: ParamsLike, {', '.join(parts)}) -> None:\n"
              f"        super().__init__(params, {forward})\n")
    namespace: dict[str, Any] = {"__name__": __name__, "_base": base,
                                 "_defaults": {p.name: _signature_default(p) for p in s.params},
                                 "_extras": {name: default for name, (_, default) in extras.items()}}
    # Annotations stay strings, as in this module (never evaluated).
    exec(compile(source, f"<record {s.name}>", "exec", flags=__future__.annotations.compiler_flag,
                 dont_inherit=True), namespace)
    cls = namespace[s.class_name]
    cls.name = s.name
    cls.lr_range = s.lr_range
    cls.__doc__ = docstring(s, base if base is not Optimizer else None)
    return cls


CLASSES: dict[str, type[Optimizer]] = {
    name: make_class(spec(name), _BASES.get(name, Optimizer)) for name in rule_optimizers()}
globals().update({cls.__name__: cls for cls in CLASSES.values()})
Sophia = CLASSES["sophia"]  # SophiaG's short name

__all__ = [cls.__name__ for cls in CLASSES.values()] + ["Sophia", "create"]


def create(name: str, params: ParamsLike, **hyper: Any) -> Any:
    """Build an optimizer by name, any of ``pyopt.available()``: ``pyopt.create("adamw", params, lr=3e-4)``."""
    from ._pybase import python_optimizer
    from ._spec import available

    py_class = python_optimizer(name) if isinstance(name, str) else None
    if py_class is not None:
        # (the Python-written optimizers keep states in the params' dtype: the default storage
        # options, as the tuner and from_config pass them, mean nothing to them)
        default_storage = StorageOptions().as_dict()
        storage = {k: hyper.pop(k) for k in STORAGE_OPTIONS if k in hyper}
        if any(value != default_storage[k] for k, value in storage.items()):
            raise ValueError(f"{name} has no storage options (its states are its params' dtype), got {storage}")
        return py_class(params, **hyper)
    if name not in CLASSES:
        raise ValueError(f"unknown optimizer {name!r}; available: {', '.join(available())}")
    router = getattr(CLASSES[name], "_routed", None)  # (MARS: mars_type="shampoo" builds a MARSShampoo)
    if router is not None:
        hyper = dict(hyper)
        routed = router(hyper)
        if routed is not None:
            return create(routed, params, **hyper)
    valid = [*spec(name).defaults, *getattr(CLASSES[name], "_extra_keywords", {}), *STORAGE_OPTIONS]
    unknown = sorted(set(hyper) - set(valid))
    if unknown:
        raise TypeError(f"{name}: unknown hyperparameter {', '.join(map(repr, unknown))}; valid: {', '.join(valid)}")
    return CLASSES[name](params, **hyper)
