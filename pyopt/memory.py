"""The bytes an optimizer's training step holds: params, grads, master weights and each state slot.

Which slots an optimizer keeps comes from its record (``_core.slots_needed`` for the given
hyperparameters), which of them may be 8-bit from the record's ``int8_slots``; this module only
adds up bytes by the storage rules of the optimizers' ``master_weights`` / ``state_dtype`` options.
"""
from __future__ import annotations

import inspect
import numbers
from typing import Any, Sequence

import ml_dtypes
import numpy as np

from . import _core, optimizers
from ._pybase import python_optimizer
from ._spec import record, spec
from .storage import MIN_8BIT_SIZE, QUANT_BLOCK, STATE_DTYPES, check_options

__all__ = ["memory_estimate"]


_F16, _BF16 = np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
PARAM_DTYPES = (_F32, _F64, _F16, _BF16)
_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "f16": "float16", "half": "float16",
            "fp32": "float32", "f32": "float32", "fp64": "float64", "f64": "float64"}


def memory_estimate(name: str, n_params: int | Sequence[int], *, param_dtype: Any = "float32",
                    grad_dtype: Any = None, state_dtype: Any = "float32", master_weights: bool = False,
                    stochastic_rounding: bool = False, **hyper: Any) -> dict[str, int]:
    """Bytes per part of optimizer ``name`` training ``n_params`` parameters: one tensor's size,
    or a sequence of tensor sizes (8-bit states are per tensor: blocks of 256 elements, each with a
    float32 absmax, and tensors under 4096 elements keep float32 states, as bitsandbytes does).

    Returns ``{"params", "grads", "master", <one key per state slot>, "total"}``: the slots are
    those the optimizer keeps with these hyperparameters (``amsgrad=True`` adds
    ``max_exp_avg_sq``); ``master`` is the float32 copy ``master_weights=True`` keeps of float16 /
    bfloat16 params (0 otherwise); ``total`` is the sum of all parts. ``grad_dtype`` defaults to
    the param dtype (float32 is the other choice). A float64 param keeps float64 states whatever
    ``state_dtype`` says.
    ``opt.memory()`` reports the same bytes of a live optimizer (without grads).

    The accounting of mixed-precision Adam (float16 params and grads, float32 master weights and
    moments: 2 + 2 + 4 + 4 + 4 = 16 bytes per parameter):

    >>> est = memory_estimate("adam", 10**9, param_dtype="float16", master_weights=True)
    >>> est["total"] / 10**9
    16.0
    >>> {k: v // 10**9 for k, v in est.items()}
    {'params': 2, 'grads': 2, 'master': 4, 'exp_avg': 4, 'exp_avg_sq': 4, 'total': 16}

    With bfloat16 states 12 bytes (8 without the master copy); with 8-bit states
    1 + 4/256 bytes per moment, 10.03 bytes with the master copy, 6.03 without it:

    >>> memory_estimate("adam", 10**9, param_dtype="bfloat16", state_dtype="int8")["total"] / 10**9
    6.03125
    """
    where = "memory_estimate"
    if not isinstance(name, str):
        raise TypeError(f"{where}: name must be an optimizer name (str), got {name!r}")
    try:
        rec = record(name)
    except ValueError as exc:
        raise ValueError(f"{where}: name: {exc}") from None
    cls = python_optimizer(name) or getattr(optimizers, rec.class_name)
    sizes = _sizes(n_params, where)
    param = _dtype(param_dtype, "param_dtype", PARAM_DTYPES, where)
    grad = param if grad_dtype is None else _dtype(grad_dtype, "grad_dtype", PARAM_DTYPES, where)
    if grad not in (param, _F32):
        raise ValueError(f"{where}: grad_dtype must be the param dtype ({param.name}) or float32, got {grad.name}")
    if param.itemsize == 2 and not cls.accepts_16bit_params:
        raise ValueError(f"{where}: param_dtype {param.name}: {name} takes float32 or float64 params only")
    states = _state_dtype(state_dtype, where)
    check_options(name, where, master_weights, states, stochastic_rounding,
                  state_dtypes=getattr(cls, "state_dtypes", STATE_DTYPES))
    router = getattr(cls, "_routed", None)  # (MARS: mars_type="shampoo" is a MARSShampoo)
    if router is not None:
        hyper = dict(hyper)
        routed = router(hyper)
        if routed is not None:
            return memory_estimate(routed, n_params, param_dtype=param_dtype, grad_dtype=grad_dtype,
                                   state_dtype=state_dtype, master_weights=master_weights,
                                   stochastic_rounding=stochastic_rounding, **hyper)
        cls._fold(hyper)
    masked = getattr(cls, "_masks_whole_params", None)  # (SPAM with density < 1)
    if masked is not None and rec.rule is not None and masked({**spec(name).defaults, **hyper}):
        raise ValueError(f"{where}: {name} with density < 1 keeps moments only for the masked entries of its "
                         "2-D params, which sizes alone do not tell; opt.memory() gives a live optimizer's bytes")
    int8_slots = frozenset(_core.optimizers()[name]["int8_slots"])
    if rec.rule is None:
        slots = _python_slots(name, grad != param or bool(master_weights), hyper, where)
    else:
        slots = dict.fromkeys(_rule_slots(name, hyper, where), 1)

    has_master = bool(master_weights) and param.itemsize == 2
    out = {"params": sum(sizes) * param.itemsize, "grads": sum(sizes) * grad.itemsize,
           "master": sum(sizes) * _F32.itemsize if has_master else 0}
    for slot, vectors in slots.items():
        out[slot] = vectors * sum(_slot_bytes(n, states if slot in int8_slots or states != "int8" else "float32", param)
                                  for n in sizes)
    out["total"] = sum(out.values())
    return out


def _slot_bytes(n: int, state_dtype: str, param: np.dtype) -> int:
    if param == _F64:  # float64 params keep float64 states whatever state_dtype says
        return n * 8
    if state_dtype == "bfloat16":
        return n * 2
    if state_dtype == "int8" and n >= MIN_8BIT_SIZE:
        return _int8_bytes(n)
    return n * 4


def _int8_bytes(n: int) -> int:
    """uint8 codes plus one float32 absmax per block of 256 (the last block may be partial)."""
    return n + 4 * -(-n // QUANT_BLOCK)


def _rule_slots(name: str, hyper: dict[str, Any], where: str) -> list[str]:
    """The state slots the C++ rule keeps with these hyperparameters (defaults fill the rest)."""
    s = spec(name)
    defaults = s.defaults
    unknown = sorted(set(hyper) - set(defaults))
    if unknown:
        raise TypeError(f"{where}: unknown hyperparameter {', '.join(map(repr, unknown))} for {name}; "
                        f"valid: {', '.join(defaults)}")
    flat = s.flat({**defaults, **hyper}, where)
    s.validate(flat, where)
    return [slot for slot, _ in _core.slots_needed(name, flat)]


def _python_slots(name: str, storage_options: bool, hyper: dict[str, Any], where: str) -> dict[str, int]:
    """Each state of an optimizer written in Python, with the vectors of the params' size it holds.
    Muon keeps its momentum buffer in the param's dtype and has no storage options; LBFGS keeps
    ``d`` and ``prev_flat_grad`` and two vectors per curvature pair (``history_size`` once its
    history is full); Adafactor's and CAME's states are factored by each matrix's shape, which
    sizes do not tell. AdamMini's one value per block (``blocks="element"``: its ``v`` per element)
    and NorMuon's one per row are a few values per tensor, not counted."""
    if storage_options:
        raise ValueError(f"{where}: {name} is written in Python and keeps float32 (float64) states in its params' "
                         "dtype: grads of the param dtype, state_dtype='float32', no master_weights")
    if name in ("adafactor", "sm3", "came"):
        raise ValueError(f"{where}: {name}'s state is factored by each tensor's shape (one value per row "
                         "and per column), so tensor sizes cannot give its bytes")
    if name in ("soap", "shampoo", "kron"):
        raise ValueError(f"{where}: {name} keeps one matrix per dimension of each param (n_d x n_d), so tensor "
                         "sizes cannot give its bytes; build it and call its memory()")
    if name == "mars_shampoo":
        raise ValueError(f"{where}: {name} keeps exp_avg_sq (and max_exp_avg_sq) only for params of fewer than two "
                         "dimensions, which tensor sizes do not tell; build it and call its memory()")
    cls = python_optimizer(name)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "params"}
    unknown = sorted(set(hyper) - accepted)
    if unknown:
        raise TypeError(f"{where}: unknown hyperparameter {', '.join(map(repr, unknown))} for {name}; "
                        f"valid: {', '.join(sorted(accepted))}")
    try:  # its own checks of the hyperparameters' values
        opt = cls([np.zeros((1, 1), np.float32)], **hyper)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{where}: {exc}") from None
    if name == "lbfgs":
        history = opt.param_groups[0]["history_size"]
        return {"d": 1, "prev_flat_grad": 1, "old_dirs": history, "old_stps": history}
    if name == "adam_mini":
        return {"m": 1, "v": 1} if opt.param_groups[0]["blocks"] == "element" else {"m": 1}
    if name == "normuon":
        return {"momentum_buffer": 1}
    return dict.fromkeys(getattr(cls, "param_slots", cls.slots), 1)  # (a group's scalars: no vectors)


def _sizes(n_params: Any, where: str) -> list[int]:
    if isinstance(n_params, (str, bytes)) or not isinstance(n_params, (numbers.Integral, Sequence, np.ndarray)):
        raise TypeError(f"{where}: n_params must be an int (one tensor's size) or a sequence of tensor sizes, "
                        f"got {n_params!r}{_int_hint(n_params)}")
    if isinstance(n_params, numbers.Integral):
        items = [n_params]
    else:
        items = list(n_params.ravel()) if isinstance(n_params, np.ndarray) else list(n_params)
    out = []
    for n in items:
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral):
            raise TypeError(f"{where}: n_params must hold integer tensor sizes, got {n!r} "
                            f"({type(n).__name__}){_int_hint(n)}")
        if n < 0:
            raise ValueError(f"{where}: n_params must be >= 0, got {n}")
        out.append(int(n))
    return out


def _int_hint(n: Any) -> str:
    return f"; write {int(n)} for {n!r}" if isinstance(n, float) and n.is_integer() else ""


def _dtype(value: Any, key: str, allowed: tuple[np.dtype, ...], where: str) -> np.dtype:
    names = ", ".join(d.name for d in allowed)
    if isinstance(value, str):
        value = _ALIASES.get(value.lower(), value)
    elif not isinstance(value, (np.dtype, type)):
        raise TypeError(f"{where}: {key} must be a dtype or its name ({names}), got {value!r}")
    try:
        dtype = np.dtype(value)
    except TypeError:
        raise ValueError(f"{where}: unknown {key} {value!r}; supported: {names}") from None
    if dtype not in allowed:
        raise ValueError(f"{where}: {key} {dtype.name} is not supported; supported: {names}")
    return dtype


def _state_dtype(value: Any, where: str) -> str:
    """'float32' | 'bfloat16' | 'int8' (as the optimizers' state_dtype option), from a name or dtype."""
    allowed = ", ".join(repr(s) for s in STATE_DTYPES)
    if isinstance(value, str):
        value = _ALIASES.get(value.lower(), value)
    elif not isinstance(value, (np.dtype, type)):
        raise TypeError(f"{where}: state_dtype must be one of {allowed} (or that dtype), got {value!r}")
    try:
        dtype_name = np.dtype(value).name
    except TypeError:
        raise ValueError(f"{where}: unknown state_dtype {value!r}; supported: {allowed}") from None
    if dtype_name not in STATE_DTYPES:
        raise ValueError(f"{where}: state_dtype {dtype_name} is not supported; supported: {allowed}")
    return dtype_name
