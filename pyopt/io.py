"""Checkpoints: ``pyopt.save(opt, path)`` / ``pyopt.load(path, params)`` as ``.npz``, no pickle.

The format is the C++ API's too (csrc/include/pyopt/checkpoint.hpp): ``state/<i>/<name>`` arrays and
a JSON ``__pyopt_meta__`` holding the rest of the state_dict. Arrays are stored as the optimizer
holds them, bit for bit: float32/float64 states, float16 as ``<f2``, 8-bit states as their uint8
codes (``<slot>``) and float32 scales (``<slot>_absmax``), float32 master copies (``master``).
numpy has no bfloat16 dtype (an ``ml_dtypes.bfloat16`` array would be saved as raw ``|V2``), so a
bfloat16 array is stored as its 16-bit words (``<u2``, what ``np.load`` returns) and its entry name
is listed in the meta's ``"array_dtypes": {"state/0/exp_avg": "bfloat16"}`` (only when there is
one); ``load_state_dict`` gives it back as ``ml_dtypes.bfloat16``. The state_dict's ``storage``
options (master_weights, state_dtype, stochastic_rounding) travel in the meta; the optimizer's
``load_state_dict`` takes them over."""
from __future__ import annotations

import io
import json
import math
import os
import struct
import tempfile
import zipfile
import zlib
from typing import Any

import numpy as np

from ._spec import TUPLES
from .optimizer import STATE_DICT_FORMAT, ParamsLike, _as_param_list

_META = "__pyopt_meta__"
_LOOKAHEAD = "lookahead_slow"
_ARRAY_DTYPES = "array_dtypes"  # meta key: entry name -> the dtype its stored bits stand for
_LOCAL_HEADER = struct.Struct(zipfile.structFileHeader)  # a zip entry's local file header


def save(opt: Any, path: str | os.PathLike[str]) -> None:
    """Write the optimizer's state_dict to ``path`` (.npz). The file is replaced atomically, so an
    interrupted save never leaves a truncated checkpoint behind. ``opt`` is a pyopt optimizer or a
    ``Lookahead`` around one (its slow weights are saved too)."""
    sd = opt.state_dict()
    arrays: dict[str, np.ndarray] = {}
    if "lookahead" in sd:
        lookahead = dict(sd["lookahead"])
        for i, value in lookahead.pop("slow").items():
            arrays[f"{_LOOKAHEAD}/{i}"] = value
        sd = {**sd, "lookahead": lookahead}
    state_meta: dict[str, dict[str, Any]] = {}
    for i, entry in sd["state"].items():
        plain = {}
        for key, value in entry.items():
            if isinstance(value, np.ndarray):
                arrays[f"state/{i}/{key}"] = value
            else:
                plain[key] = value
        state_meta[str(i)] = plain
    meta = {**sd, "state": state_meta}
    array_dtypes = {}
    for key, value in arrays.items():
        if _is_bfloat16(value.dtype):
            arrays[key] = value.view(np.uint16)
            array_dtypes[key] = "bfloat16"
        elif value.dtype.kind == "V":
            raise TypeError(f"pyopt.save: array {key!r} has dtype {value.dtype}, which a checkpoint cannot hold")
    if array_dtypes:
        meta[_ARRAY_DTYPES] = array_dtypes
    arrays[_META] = np.array(json.dumps(meta))
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".pyopt-", suffix=".npz.tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by ``save`` back into a state_dict.

    The file is read defensively, whatever it holds: a missing file raises FileNotFoundError;
    anything else that is not a well-formed pyopt checkpoint (truncated, corrupt, random bytes, a
    plain ``.npy``, a pickled or compressed ``.npz``, entries that overlap or claim more bytes than
    the file has, a malformed ``__pyopt_meta__``) raises ValueError naming the file and the problem.
    Nothing is allocated beyond what the file's own size bounds."""
    name = os.fspath(path)
    arrays, meta = _read_npz(name)
    try:
        return _assemble(meta, arrays)
    except _Malformed as exc:
        raise ValueError(f"{name}: not a pyopt checkpoint: {exc}") from None


class _Malformed(Exception):
    """What is wrong with a checkpoint file (turned into ValueError naming the file)."""


def _read_npz(name: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with open(name, "rb") as f:  # FileNotFoundError / PermissionError stay as they are
        try:
            return _read_entries(f)
        except _Malformed as exc:
            raise ValueError(f"{name}: not a pyopt checkpoint: {exc}") from None


def _read_entries(f: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    size = os.fstat(f.fileno()).st_size
    try:
        infos = zipfile.ZipFile(f).infolist()
    except Exception as exc:  # BadZipFile, struct.error, EOFError, ... on whatever the file holds
        raise _Malformed(f"not a .npz (zip) file ({type(exc).__name__}: {exc})") from None
    # Each entry's local header + data must lie inside the file without overlapping another: a
    # crafted zip cannot make us read (or allocate) more than the file's size.
    spans = []
    seen: set[str] = set()
    for info in infos:
        if info.filename in seen:
            raise _Malformed(f"entry {info.filename!r} appears twice")
        seen.add(info.filename)
        if not info.filename.endswith(".npy"):
            raise _Malformed(f"entry {info.filename!r} is not a .npy array")
        if info.flag_bits & 0x1:
            raise _Malformed(f"entry {info.filename!r} is encrypted")
        if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
            raise _Malformed(f"entry {info.filename!r} is compressed (pyopt.save writes stored entries)")
        if info.header_offset < 0:
            raise _Malformed(f"entry {info.filename!r} has a negative offset")
        f.seek(info.header_offset)
        header = f.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
            raise _Malformed(f"entry {info.filename!r} has no valid local header")
        name_length, extra_length = _LOCAL_HEADER.unpack(header)[-2:]
        data_start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
        data_end = data_start + info.file_size
        if data_end > size:
            raise _Malformed(f"entry {info.filename!r} ({info.file_size} bytes) runs past the end of the file "
                             f"({size} bytes; truncated?)")
        spans.append((info.header_offset, data_end, data_start, info))
    spans.sort(key=lambda s: s[0])
    for (_, end, _, a), (start, _, _, b) in zip(spans, spans[1:]):
        if start < end:
            raise _Malformed(f"entries {a.filename!r} and {b.filename!r} overlap")
    arrays: dict[str, np.ndarray] = {}
    for _, _, data_start, info in spans:
        f.seek(data_start)
        arrays[info.filename[: -len(".npy")]] = _read_npy(f, info)
    meta_array = arrays.pop(_META, None)
    if meta_array is None:
        raise _Malformed(f"no {_META} entry")
    if meta_array.shape != () or meta_array.dtype.kind != "U":
        raise _Malformed(f"{_META} is not a JSON string")
    try:
        meta = json.loads(str(meta_array[()]))
    except (ValueError, RecursionError) as exc:
        raise _Malformed(f"{_META} is not valid JSON ({exc})") from None
    return arrays, meta


def _read_npy(f: Any, info: zipfile.ZipInfo) -> np.ndarray:
    """One stored .npy entry (``f`` at its first byte), without pickle. The header's shape must
    account for exactly the entry's bytes before the array is allocated (np.load allocates the
    declared shape first); the data is read straight into the array and its CRC checked."""
    entry, size = info.filename, info.file_size
    prefix = f.read(min(size, 12))
    magic_ok = prefix[:6] == b"\x93NUMPY" and len(prefix) >= 10
    version = (prefix[6], prefix[7]) if magic_ok else None
    if version == (1, 0):
        header_end = 10 + struct.unpack("<H", prefix[8:10])[0]
    elif version == (2, 0) and len(prefix) == 12:
        header_end = 12 + struct.unpack("<I", prefix[8:12])[0]
    else:
        raise _Malformed(f"entry {entry!r} is not a .npy array (version 1.0 or 2.0)")
    if header_end > size:
        raise _Malformed(f"entry {entry!r}: its .npy header runs past the entry")
    header = prefix + f.read(header_end - len(prefix))
    try:
        fp = io.BytesIO(header)
        np.lib.format.read_magic(fp)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(fp)
    except Exception as exc:
        raise _Malformed(f"entry {entry!r} is not a valid .npy array ({exc})") from None
    if dtype.hasobject:
        raise _Malformed(f"entry {entry!r} holds Python objects (pickled data), which pyopt never writes")
    if dtype.kind == "V":
        raise _Malformed(f"entry {entry!r} holds raw {dtype.str} records (pyopt stores bfloat16 as uint16 bits "
                         f"named in {_ARRAY_DTYPES!r})")
    if any(n < 0 for n in shape):
        raise _Malformed(f"entry {entry!r} has a negative dimension in shape {shape}")
    count = math.prod(shape)
    if count * dtype.itemsize != size - header_end:
        raise _Malformed(f"entry {entry!r}: shape {shape} of {dtype} needs {count * dtype.itemsize} bytes, "
                         f"the entry has {size - header_end}")
    flat = np.empty(count, dtype)
    crc = zlib.crc32(header)
    if flat.nbytes:
        raw = flat.view(np.uint8)
        if f.readinto(raw) != raw.size:
            raise _Malformed(f"entry {entry!r} is truncated")
        crc = zlib.crc32(raw, crc)
    if crc != info.CRC:
        raise _Malformed(f"entry {entry!r} is corrupt (CRC mismatch)")
    if fortran:
        return flat.reshape(shape[::-1]).transpose()
    return flat.reshape(shape)


def _index(key: Any, what: str) -> int:
    """A param index written as a decimal string (JSON keys, entry names)."""
    if not isinstance(key, str) or not key.isascii() or not key.isdigit() or (len(key) > 1 and key[0] == "0"):
        raise _Malformed(f"{what} {key!r} is not a param index")
    return int(key)


def _assemble(meta: Any, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The state_dict from the JSON meta and the array entries; the frame is checked here, the
    values by the optimizer's load_state_dict."""
    if not isinstance(meta, dict):
        raise _Malformed(f"{_META} must be a JSON object, got {type(meta).__name__}")
    fmt = meta.get("format")
    if type(fmt) is not int or fmt != STATE_DICT_FORMAT:
        raise _Malformed(f"unknown checkpoint format {fmt!r} (this pyopt reads format {STATE_DICT_FORMAT})")
    for key, kind in (("optimizer", str), ("state", dict), ("param_groups", list)):
        if not isinstance(meta.get(key), kind):
            raise _Malformed(f"{_META} needs {key!r} as a JSON {'string' if kind is str else kind.__name__}, "
                             f"got {meta.get(key)!r:.80}")
    for i, group in enumerate(meta["param_groups"]):
        if not isinstance(group, dict) or not isinstance(group.get("params"), list):
            raise _Malformed(f"param group {i} must be an object with a 'params' list")
        names = group.get("param_names")
        if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)
                                  or len(names) != len(group["params"])):
            raise _Malformed(f"param group {i}: 'param_names' must be a list of strings, one per param")
    meta = dict(meta)
    _restore_dtypes(meta.pop(_ARRAY_DTYPES, {}), arrays)
    state: dict[int, dict[str, Any]] = {}
    for key, entry in meta["state"].items():
        if not isinstance(entry, dict):
            raise _Malformed(f"state of param {key!r} must be a JSON object")
        state[_index(key, "state key")] = dict(entry)
    slow: dict[int, np.ndarray] = {}
    for key, value in arrays.items():
        if key.startswith(_LOOKAHEAD + "/"):
            slow[_index(key.split("/", 1)[1], "entry")] = value
            continue
        parts = key.split("/", 2)
        if len(parts) != 3 or parts[0] != "state" or not parts[2]:
            raise _Malformed(f"unexpected entry {key!r}")
        entry_state = state.setdefault(_index(parts[1], f"entry {key!r}: index"), {})
        if parts[2] in entry_state:
            raise _Malformed(f"state {parts[2]!r} of param {parts[1]} is saved twice")
        entry_state[parts[2]] = value
    out = {**meta, "state": state}
    if "lookahead" in meta:
        if not isinstance(meta["lookahead"], dict):
            raise _Malformed("'lookahead' must be a JSON object")
        out["lookahead"] = {**meta["lookahead"], "slow": slow}
    elif slow:
        raise _Malformed("Lookahead slow weights without a 'lookahead' entry")
    return out


def _is_bfloat16(dtype: np.dtype) -> bool:
    return dtype.kind == "V" and dtype.name == "bfloat16"


def _restore_dtypes(array_dtypes: Any, arrays: dict[str, np.ndarray]) -> None:
    """Views the uint16 entries the meta names as bfloat16 (see the module docstring)."""
    if not isinstance(array_dtypes, dict):
        raise _Malformed(f"{_ARRAY_DTYPES!r} must be a JSON object, got {array_dtypes!r:.80}")
    for key, dtype in array_dtypes.items():
        if dtype != "bfloat16":
            raise _Malformed(f"{_ARRAY_DTYPES!r}: entry {key!r} has dtype {dtype!r:.40} (only 'bfloat16' is known)")
        if key not in arrays:
            raise _Malformed(f"{_ARRAY_DTYPES!r} names entry {key!r}, which the file lacks")
        if arrays[key].dtype != np.dtype("<u2"):
            raise _Malformed(f"entry {key!r} is bfloat16 stored as {arrays[key].dtype.str} "
                             "(bfloat16 arrays are stored as their <u2 bits)")
    if array_dtypes:
        import ml_dtypes

        for key in array_dtypes:
            arrays[key] = arrays[key].view(ml_dtypes.bfloat16)


def load(path: str | os.PathLike[str], params: ParamsLike, *, optimizer: Any = None) -> Any:
    """Rebuild the optimizer saved at ``path`` over ``params`` and restore its state (a
    ``Lookahead`` around it, with its k, alpha, counters and slow weights, if one was saved).

    ``params`` may be the same list / dict / param groups the optimizer was built with, or a flat
    list (or dict) of all params: they are split into the saved param groups in order.

    ``optimizer`` (a name as ``pyopt.create`` takes it, or an optimizer class): the optimizer the
    checkpoint must hold; a checkpoint of another one raises ValueError instead of being built.
    Names are compared as ``pyopt.create`` resolves them, exactly: ``"adam"`` does not accept an
    ``"amsgrad"`` or ``"adamw"`` checkpoint. A missing file raises FileNotFoundError; a file that
    is not a valid checkpoint, or whose contents do not fit ``params``, ValueError naming it.
    """
    from ._pybase import python_optimizer
    from .optimizers import create

    name = os.fspath(path)
    expected = None if optimizer is None else _canonical_name(optimizer)
    sd = load_state_dict(path)
    saved_name = sd["optimizer"]
    if expected is not None and saved_name != expected:
        raise ValueError(f"{name}: the checkpoint holds a {saved_name!r} optimizer, not {expected!r}")
    groups_meta = sd["param_groups"]
    if isinstance(params, (list, tuple)) and params and all(isinstance(g, dict) and "params" in g for g in params):
        groups = [dict(g) for g in params]
        if len(groups) != len(groups_meta):
            raise ValueError(f"{name}: the checkpoint has {len(groups_meta)} param groups, got {len(groups)}")
    else:
        plist, names = _as_param_list(params, "pyopt.load")
        if names is not None and any("param_names" in g for g in groups_meta):
            saved_names = [n for g in groups_meta for n in g.get("param_names", [])]
            if sorted(saved_names) != sorted(names):
                raise ValueError(f"pyopt.load: params are named {names}, the checkpoint has {saved_names}")
            by_name = dict(zip(names, plist))
            groups = [{"params": {n: by_name[n] for n in g["param_names"]}} for g in groups_meta]
        else:
            total = sum(len(g["params"]) for g in groups_meta)
            if len(plist) != total:
                raise ValueError(f"pyopt.load: the checkpoint holds {total} params, got {len(plist)}")
            groups, start = [], 0
            for g in groups_meta:
                groups.append({"params": plist[start : start + len(g["params"])]})
                start += len(g["params"])
    for group, saved in zip(groups, groups_meta):
        for key, value in saved.items():
            if key not in ("params", "param_names"):
                group.setdefault(key, tuple(value) if key in TUPLES and isinstance(value, list) else value)
    try:
        py_class = python_optimizer(saved_name)  # an optimizer written in Python (Muon, Adafactor, LBFGS)
        if py_class is not None:
            opt: Any = py_class(groups)  # type: ignore[call-arg]
        else:
            opt = create(saved_name, groups)  # load_state_dict takes the saved storage options
        if "lookahead" in sd:
            from .lookahead import Lookahead

            wrapped = Lookahead(opt, k=sd["lookahead"].get("k"), alpha=sd["lookahead"].get("alpha"))
            wrapped.load_state_dict(sd)
            return wrapped
        opt.load_state_dict(sd)
        return opt
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: cannot restore this checkpoint: {exc}") from exc


def _canonical_name(optimizer: Any) -> str:
    """The state_dict name of the optimizer ``pyopt.create(optimizer, ...)`` (or the class) builds."""
    from ._pybase import PyOptimizer, python_optimizer
    from ._spec import available
    from .optimizer import Optimizer
    from .optimizers import CLASSES

    if isinstance(optimizer, type) and issubclass(optimizer, (Optimizer, PyOptimizer)) and optimizer.name:
        return optimizer.name
    if not isinstance(optimizer, str):
        raise TypeError(f"pyopt.load: optimizer must be a name or an optimizer class, got {optimizer!r}")
    if optimizer in CLASSES:
        return CLASSES[optimizer].name
    py_class = python_optimizer(optimizer)
    if py_class is None:
        raise ValueError(f"pyopt.load: unknown optimizer {optimizer!r}; available: "
                         f"{', '.join(available())}")
    return py_class.name
