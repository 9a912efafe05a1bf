"""Dtype specs of ``pyopt bench --dtypes``, the bytes a step moves under them, the probe over those
bytes and the peers that exist only for low-precision storage (bitsandbytes, torchao).

A spec is a training precision as ``pyopt tune --precision`` takes it (``storage.parse_precision``),
``PARAM[+master][+STATE]``, the parts after PARAM in any order:

``PARAM``   f32 | f16 | bf16 (also float32 | float16 | bfloat16; float64/f64 alone); grads are in
            the param dtype
``+master`` a float32 master copy of a 16-bit param (``master_weights=True``)
``+STATE``  bf16 | int8 | f32 (the default): ``state_dtype`` of the optimizer
``int8``    alone means ``f32+int8`` (float32 params, 8-bit states: bitsandbytes' default setting)
(stochastic rounding, ``+sr``, is not benchmarked.)

"float32" and "float64" are the plain cases of before (same rows, same peers, same probe).
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any, Callable

import ml_dtypes
import numpy as np

from . import _core
from ._spec import spec
from .storage import parse_precision

BF16 = np.dtype(ml_dtypes.bfloat16)
NUMPY_DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64), "float16": np.dtype(np.float16),
                "bfloat16": BF16}
QUANT_BLOCK = 256     # elements per absmax of an 8-bit state (bitsandbytes' blocksize for optimizers)
MIN_8BIT_SIZE = 4096  # smaller tensors keep float32 states (bitsandbytes' min_8bit_size)
GRAMMAR = "PARAM[+master][+STATE] with PARAM f32|f16|bf16|f64, STATE bf16|int8|f32 (e.g. bf16+master+int8), or int8"


@dataclass(frozen=True)
class DtypeSpec:
    name: str          # canonical text, what the rows show
    param: str         # float32 | float64 | float16 | bfloat16 (grads too)
    master: bool
    state: str         # float32 | bfloat16 | int8

    @property
    def plain(self) -> bool:
        """float32/float64 params and states: the cases the benchmark had before dtype specs."""
        return self.param in ("float32", "float64") and self.state == "float32"

    @property
    def param_dtype(self) -> np.dtype:
        return NUMPY_DTYPES[self.param]

    @property
    def low_precision_param(self) -> bool:
        return self.param in ("float16", "bfloat16")

    def storage_options(self) -> dict[str, Any]:
        """The optimizer's keyword options for this spec (only those that differ from the default)."""
        out: dict[str, Any] = {}
        if self.master:
            out["master_weights"] = True
        if self.state != "float32":
            out["state_dtype"] = self.state
        return out


def parse_dtype_spec(text: str) -> DtypeSpec:
    """'bf16+master+int8' -> DtypeSpec: the grammar of ``--precision`` (storage.parse_precision, long
    dtype names allowed), plus float64 params (with float64 states); ValueError naming the spec."""
    raw = text.strip()
    tokens = raw.split("+")
    if tokens[0] in ("f64", "float64"):
        if tokens[1:] not in ([], ["f32"]):
            raise ValueError(f"bad dtype spec {text!r}: float64 params keep float64 states; use {GRAMMAR}")
        return DtypeSpec("float64", "float64", False, "float32")
    precision = parse_precision(raw, what="bad dtype spec")
    if precision.options.stochastic_rounding:
        raise ValueError(f"bad dtype spec {text!r}: stochastic rounding (sr) is not benchmarked; use {GRAMMAR}")
    param, master, state = precision.param_dtype, precision.options.master_weights, precision.options.state_dtype
    if param == "float32" and state == "float32":
        return DtypeSpec("float32", "float32", False, state)  # f32 is the plain float32 case of before
    return DtypeSpec(str(precision), param, master, state)


# ---------------------------------------------------------------------------------------------
# The bytes one step moves

def int8_slots(name: str) -> list[str]:
    return list(_core.optimizers()[name]["int8_slots"])


def slots_at_defaults(name: str) -> list[str]:
    s = spec(name)
    return [n for n, _ in _core.slots_needed(name, s.flat(s.defaults, name))]


def slot_bytes(name: str, dspec: DtypeSpec, size: int) -> dict[str, int]:
    """Bytes of each state array of one tensor of ``size`` elements (master first if any), as the
    optimizer stores them: float32 (float64 for float64 params), bfloat16 (2 B), or 8-bit codes plus
    one float32 absmax per block of 256 (slots the rule allows, tensors of >= 4096 elements)."""
    compute = 8 if dspec.param == "float64" else 4
    quantizable = set(int8_slots(name)) if dspec.state == "int8" else set()
    out: dict[str, int] = {}
    if dspec.master and dspec.low_precision_param:
        out["master"] = 4 * size
    for slot in slots_at_defaults(name):
        if slot in quantizable and size >= MIN_8BIT_SIZE:
            out[slot] = size + 4 * math.ceil(size / QUANT_BLOCK)
        elif dspec.state == "bfloat16" and compute == 4:
            out[slot] = 2 * size
        else:
            out[slot] = compute * size
    return out


@dataclass(frozen=True)
class StepBytes:
    read_write: int   # params, master, states (codes and absmax): read and written back every step
    read_only: int    # grads

    @property
    def moved(self) -> int:
        """Bytes read plus bytes written per step."""
        return 2 * self.read_write + self.read_only


def step_bytes(name: str, dspec: DtypeSpec, tensors: int, size: int) -> StepBytes:
    """The bytes of one step over ``tensors`` tensors of ``size`` elements. The 16-bit param counts
    as read and written even with a master copy: its cache lines are read before they are written."""
    item = dspec.param_dtype.itemsize
    states = sum(slot_bytes(name, dspec, size).values())
    return StepBytes(tensors * (item * size + states), tensors * item * size)


def probe_layout(nbytes: StepBytes) -> list[tuple[int, int, int]]:
    """(read-write arrays, read-only arrays, float32 elements per array) of the probe calls that move
    ``nbytes``: one call with k read-write arrays and one read-only array the size of the grads
    (k <= 5, the probe's limit), then one read-write array for the rest. Each array's bytes are
    rounded up to whole float32 elements."""
    per_array = math.ceil(nbytes.read_only / 4)
    if per_array == 0:
        return [(1, 0, math.ceil(nbytes.read_write / 4))] if nbytes.read_write else []
    k = max(1, min(5, nbytes.read_write // (4 * per_array)))  # >= 1: an optimizer writes at least its grads' bytes
    rest = nbytes.read_write - 4 * k * per_array
    return [(k, 1, per_array)] + ([(1, 0, math.ceil(rest / 4))] if rest > 0 else [])


def make_probe(nbytes: StepBytes) -> Callable[[], None]:
    """``_core.rmw_probe`` over float32 arrays that together hold ``nbytes`` (see probe_layout)."""
    calls = []
    for rw, ro, n in probe_layout(nbytes):
        calls.append(([np.zeros(n, np.float32) for _ in range(rw)], [np.ones(n, np.float32) for _ in range(ro)]))
    probe = _core.rmw_probe

    def run() -> None:
        for rw, ro in calls:
            probe(rw, ro)
    return run


# ---------------------------------------------------------------------------------------------
# torch tensors over numpy arrays of any of the spec dtypes (shared memory)

def as_torch(torch: Any, a: np.ndarray) -> Any:
    if a.dtype == BF16:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


class Unavailable(Exception):
    """This implementation cannot run this case; str(exc) says why ("n/a" or "unavailable: ...")."""


# ---------------------------------------------------------------------------------------------
# 8-bit peers: bitsandbytes' and torchao's blockwise 8-bit optimizers on CPU, on torch tensors that
# share the caller's params (their own copies) and grads.

BNB_CLASSES = {"adam": "Adam8bit", "adamw": "AdamW8bit", "lion": "Lion8bit"}
TORCHAO_CLASSES = {"adam": "Adam8bit", "adamw": "AdamW8bit"}


def _hyper(name: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """pyopt's defaults for ``keys``; n/a if another default would change the update."""
    defaults = dict(spec(name).defaults)
    for key in ("amsgrad", "maximize", "decoupled_weight_decay", "cautious"):
        if defaults.pop(key, False):
            raise Unavailable(f"unavailable: the 8-bit peers have no {key}")
    extra = set(defaults) - set(keys)
    if extra:
        raise Unavailable(f"unavailable: the 8-bit peers have no {', '.join(sorted(extra))}")
    return {k: defaults[k] for k in keys if k in defaults}


def _torch_params(params: list[np.ndarray], grads: list[np.ndarray]) -> list[Any]:
    try:
        import torch
    except ImportError as exc:
        raise Unavailable(f"unavailable: torch not importable ({exc})") from None
    tensors = [torch.nn.Parameter(as_torch(torch, p)) for p in params]
    for t, g in zip(tensors, grads):
        t.grad = as_torch(torch, g)
    return tensors


def bitsandbytes_8bit(name: str, dspec: DtypeSpec, params: list[np.ndarray], grads: list[np.ndarray]):
    """bitsandbytes' <X>8bit on CPU (blocks of 256, min_8bit_size 4096, as pyopt's int8 states)."""
    if dspec.state != "int8" or name not in BNB_CLASSES:
        raise Unavailable("n/a")
    hyper = _hyper(name, ("lr", "betas", "eps", "weight_decay"))
    return _stepped_peer("bitsandbytes", BNB_CLASSES[name], _torch_params(params, grads), min_8bit_size=MIN_8BIT_SIZE,
                         **hyper)


def torchao_8bit(name: str, dspec: DtypeSpec, params: list[np.ndarray], grads: list[np.ndarray]):
    """torchao's Adam(W)8bit: 8-bit state tensor subclasses, the step compiled by torch.compile."""
    if dspec.state != "int8" or name not in TORCHAO_CLASSES:
        raise Unavailable("n/a")
    hyper = _hyper(name, ("lr", "betas", "eps", "weight_decay"))
    odd = [p.size for p in params if p.size >= MIN_8BIT_SIZE and p.size % QUANT_BLOCK]
    if odd:
        raise Unavailable(f"unavailable: torchao keeps float32 states for tensors whose size is not a multiple of "
                          f"{QUANT_BLOCK} (here {odd[0]}); use e.g. a 1x1048576 case")
    # torch.compile runs in the first step (seconds), not in the timed loop
    return _stepped_peer("torchao", TORCHAO_CLASSES[name], _torch_params(params, grads), block_size=QUANT_BLOCK, **hyper)


def _stepped_peer(package: str, class_name: str, tensors: list, **kwargs: Any):
    """``<package>.optim.<class_name>(tensors, **kwargs)`` after one untimed step (which allocates its
    states), as its step function; Unavailable saying why when the package or the class fails."""
    try:
        importlib.import_module(package)  # (its .optim may be in sys.modules without the package)
        cls = getattr(importlib.import_module(f"{package}.optim"), class_name)
    except Exception as exc:
        raise Unavailable(f"unavailable: {package} not importable ({type(exc).__name__}: {exc})") from None
    try:
        opt = cls(tensors, **kwargs)
        opt.step()
    except Exception as exc:
        raise Unavailable(f"unavailable: {package} {class_name} failed ({type(exc).__name__}: {exc})") from None
    return opt.step
