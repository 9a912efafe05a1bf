"""How an optimizer keeps its state: the storage options every element-wise optimizer takes.

``state_dtype``
    ``"float32"`` (default), ``"bfloat16"``, or ``"int8"``: bitsandbytes' blockwise dynamic 8-bit
    quantization (blocks of 256 elements with one float32 absmax each, the signed dynamic map for
    first moments, the unsigned one for second moments). Only the slots a rule lists as 8-bit
    capable (``_core.optimizers()[name]["int8_slots"]``) of params with at least 4096 elements are
    8-bit; the others stay float32, as bitsandbytes' ``min_8bit_size``. float64 params keep float64
    states whatever the option says.
``master_weights``
    A float32 master copy of each float16/bfloat16 param, kept as the state entry ``master``: the
    step updates the master (bit for bit as the float32 optimizer would) and writes the param as
    the master rounded to nearest even. The master is the truth: to change such a param from
    outside, change ``opt.state[i]["master"]`` (or call ``zero_state`` and step again).
``stochastic_rounding``
    16-bit writes that have no master (float16/bfloat16 params without master weights, bfloat16
    states) round up or down at random, unbiased, from a counter-based generator keyed by (param
    index, step, element): reproducible and independent of the thread count.

State entries of param i (``opt.state[i]``, ``state_dict``): ``<slot>`` (float32 / float64 /
``ml_dtypes.bfloat16`` of the param's shape, or uint8 codes for an 8-bit slot), ``<slot>_absmax``
(float32, ceil(size / 256), 8-bit slots only), ``master`` (float32, 16-bit params with master
weights).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import ml_dtypes
import numpy as np

from . import _core

__all__ = ["StorageOptions", "Precision", "parse_precision", "STATE_DTYPES", "QUANT_BLOCK", "MIN_8BIT_SIZE",
           "quantize_blockwise", "dequantize_blockwise"]

STATE_DTYPES = ("float32", "bfloat16", "int8")
QUANT_BLOCK = 256
MIN_8BIT_SIZE = 4096
ABSMAX_SUFFIX = "_absmax"
MASTER = "master"
BFLOAT16 = np.dtype(ml_dtypes.bfloat16)


@dataclass(frozen=True)
class StorageOptions:
    master_weights: bool = False
    state_dtype: str = "float32"
    stochastic_rounding: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_SHORT_DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}
_SHORT_STATES = {"f32": "float32", "bf16": "bfloat16", "int8": "int8"}
_LONG_NAMES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}  # also accepted
PARAM_DTYPES = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16), "bfloat16": BFLOAT16}


@dataclass(frozen=True)
class Precision:
    """A training precision: how params are stored and the optimizer's storage options."""
    param_dtype: str = "float32"
    options: StorageOptions = StorageOptions()

    @property
    def dtype(self) -> np.dtype:
        return PARAM_DTYPES[self.param_dtype]

    def __str__(self) -> str:
        short = {v: k for k, v in _SHORT_DTYPES.items()}
        parts = [short[self.param_dtype]]
        if self.options.master_weights:
            parts.append("master")
        if self.options.state_dtype != "float32":
            parts.append({v: k for k, v in _SHORT_STATES.items()}[self.options.state_dtype])
        if self.options.stochastic_rounding:
            parts.append("sr")
        return "+".join(parts)


def parse_precision(text: str, what: str = "precision") -> Precision:
    """``"bf16+master+int8"``: the params' dtype (f32, f16, bf16), then any of ``master`` (float32
    master weights), a state dtype (f32, bf16, int8) and ``sr`` (stochastic rounding). A lone state
    dtype that is not a param dtype (``"int8"``) means float32 params. ValueError naming the part
    (its message starts with ``what`` and the text)."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"{what} {text!r}: expected e.g. 'f32', 'bf16', 'bf16+master+int8'")
    parts = [_LONG_NAMES.get(part, part) for part in text.split("+")]
    if parts[0] in _SHORT_DTYPES:
        param_dtype, rest = _SHORT_DTYPES[parts[0]], parts[1:]
    else:
        param_dtype, rest = "float32", parts
    master, state, stochastic = False, None, False
    for part in rest:
        if part == "master" and not master:
            master = True
        elif part == "sr" and not stochastic:
            stochastic = True
        elif part in _SHORT_STATES and state is None:
            state = _SHORT_STATES[part]
        else:
            raise ValueError(f"{what} {text!r}: unexpected {part!r} (params f32|f16|bf16, then any of master, "
                             "a state dtype f32|bf16|int8, sr)")
    if master and param_dtype == "float32":
        raise ValueError(f"{what} {text!r}: master weights are for f16/bf16 params")
    return Precision(param_dtype, StorageOptions(master, state or "float32", stochastic))


def int8_slots(name: str) -> tuple[str, ...]:
    return tuple(_core.optimizers()[name]["int8_slots"])


def check_options(name: str, who: str, master_weights: Any, state_dtype: Any, stochastic_rounding: Any,
                  state_dtypes: tuple[str, ...] = STATE_DTYPES) -> StorageOptions:
    """The storage options of optimizer ``name``, checked (TypeError / ValueError naming the option)."""
    for option, value in (("master_weights", master_weights), ("stochastic_rounding", stochastic_rounding)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{who}: {option} must be True or False, got {value!r}")
    state_dtypes = tuple(d for d in _core.optimizers()[name]["state_dtypes"] if d in state_dtypes)
    if not isinstance(state_dtype, str):
        raise TypeError(f"{who}: state_dtype must be one of {', '.join(map(repr, state_dtypes))}, got {state_dtype!r}")
    if state_dtype not in STATE_DTYPES:
        raise ValueError(f"{who}: state_dtype must be one of {', '.join(map(repr, STATE_DTYPES))}, got {state_dtype!r}")
    if state_dtype == "int8" and not int8_slots(name):
        supported = [n for n, d in _core.optimizers().items() if d["int8_slots"]]
        raise ValueError(f"{who}: {name} has no 8-bit states (state_dtype='int8'); optimizers that do: "
                         f"{', '.join(supported)}")
    if state_dtype not in state_dtypes:
        raise ValueError(f"{who}: {name} keeps its states as {', '.join(map(repr, state_dtypes))} only, "
                         f"not {state_dtype!r}")
    return StorageOptions(bool(master_weights), state_dtype, bool(stochastic_rounding))


def saved_options(value: Any, name: str, who: str, state_dtypes: tuple[str, ...] = STATE_DTYPES) -> StorageOptions:
    """The ``storage`` entry of a state_dict (a dict of the three options), checked."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{who}: state_dict 'storage' must be a dict of storage options, got {value!r:.80}")
    unknown = sorted(set(value) - set(StorageOptions().as_dict()))
    if unknown:
        raise ValueError(f"{who}: state_dict 'storage' has unknown option(s) {', '.join(map(repr, unknown))}")
    return check_options(name, f"{who}: state_dict 'storage'", **{**StorageOptions().as_dict(), **value},
                         state_dtypes=state_dtypes)


def is_16bit(p: np.ndarray) -> bool:
    return p.dtype.itemsize == 2


def has_master(options: StorageOptions, p: np.ndarray) -> bool:
    return options.master_weights and is_16bit(p)


def is_8bit(options: StorageOptions, name: str, p: np.ndarray, slot: str) -> bool:
    return (options.state_dtype == "int8" and slot in int8_slots(name) and p.size >= MIN_8BIT_SIZE
            and p.dtype != np.float64)


def state_dtype(options: StorageOptions, p: np.ndarray) -> np.dtype:
    """The dtype of a param's (not 8-bit) state arrays."""
    if p.dtype == np.float64:
        return p.dtype
    return BFLOAT16 if options.state_dtype == "bfloat16" else np.dtype(np.float32)


def blocks(size: int) -> int:
    return -(-size // QUANT_BLOCK)


def layout(options: StorageOptions, name: str, p: np.ndarray, slots: tuple[str, ...]) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """Every state entry param ``p`` may hold under these options: name -> (dtype, shape)."""
    out: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
    for slot in slots:
        if is_8bit(options, name, p, slot):
            out[slot] = (np.dtype(np.uint8), p.shape)
            out[slot + ABSMAX_SUFFIX] = (np.dtype(np.float32), (blocks(p.size),))
        else:
            out[slot] = (state_dtype(options, p), p.shape)
    if has_master(options, p):
        out[MASTER] = (np.dtype(np.float32), p.shape)
    return out


def new_state(options: StorageOptions, name: str, p: np.ndarray, slot: str, initial: float) -> dict[str, np.ndarray]:
    """The fresh entries of one slot: the initial value, stored as the options say."""
    if not is_8bit(options, name, p, slot):
        return {slot: np.full(p.shape, initial, state_dtype(options, p))}
    if initial == 0.0:  # bitsandbytes' fresh state: codes 0, absmax 0 (dequantizes to ±0)
        codes, absmax = np.zeros(p.shape, np.uint8), np.zeros(blocks(p.size), np.float32)
    else:
        signed = slot not in _core.optimizers()[name]["nonnegative_slots"]
        codes, absmax = _core.quantize_blockwise(np.full(p.shape, initial, np.float32), signed)
    return {slot: codes, slot + ABSMAX_SUFFIX: absmax}


def new_master(p: np.ndarray) -> np.ndarray:
    return p.astype(np.float32)


def engine_state(entries: Mapping[str, np.ndarray], slot: str) -> Any:
    """A slot as the engine takes it: None, an array, or an 8-bit (codes, absmax) pair."""
    if slot not in entries:
        return None
    absmax = entries.get(slot + ABSMAX_SUFFIX)
    return entries[slot] if absmax is None else (entries[slot], absmax)


def saved_entry(value: Any, dtype: np.dtype, shape: tuple[int, ...], what: str) -> np.ndarray:
    """A state_dict's array for an entry of this dtype and shape, checked and copied: codes must be
    integers in [0, 255] (never rounded from floats), the others floats."""
    arr = value if isinstance(value, np.ndarray) else None
    if arr is None:
        if not isinstance(value, (list, tuple, float, int, np.generic)) or isinstance(value, bool):
            raise TypeError(f"{what} must be a numpy array (or a list of numbers), got {type(value).__name__}")
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{what} is not an array of numbers ({exc})") from None
    if dtype == np.uint8:
        if arr.dtype.kind not in "ui":
            raise TypeError(f"{what} has dtype {arr.dtype}, expected uint8 codes (an 8-bit state)")
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError(f"{what} holds values outside the uint8 codes 0..255")
    elif arr.dtype.kind != "f" and arr.dtype != BFLOAT16:
        raise TypeError(f"{what} has dtype {arr.dtype}, expected a float dtype")
    if arr.shape != shape:
        raise ValueError(f"{what} has shape {arr.shape}, expected {shape}")
    return np.array(arr, dtype=dtype, order="C", copy=True)


def entry_bytes(entries: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Bytes per part of one param's entries: ``master`` and each slot (an 8-bit slot's codes and
    absmax together)."""
    out: dict[str, int] = {}
    for key, value in entries.items():
        if isinstance(value, np.ndarray):
            part = key[: -len(ABSMAX_SUFFIX)] if key.endswith(ABSMAX_SUFFIX) else key
            out[part] = out.get(part, 0) + int(value.nbytes)
    return out


def quantize_blockwise(x: Any, signed: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """bitsandbytes' blockwise dynamic 8-bit quantization of a float32 array (blocks of 256):
    ``(codes uint8 of x's shape, absmax float32 of ceil(x.size / 256))``; ``signed=False`` uses the
    unsigned map (for nonnegative values). Bit-identical to ``bitsandbytes.functional
    .quantize_blockwise(x, blocksize=256)`` on CPU."""
    return _core.quantize_blockwise(x, signed)


def dequantize_blockwise(codes: Any, absmax: Any, signed: bool = True) -> np.ndarray:
    """The float32 values of ``quantize_blockwise``'s output: ``map[code] * absmax[block]``."""
    return _core.dequantize_blockwise(codes, absmax, signed)
