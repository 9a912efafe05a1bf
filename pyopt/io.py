"""Checkpoints: ``pyopt.save(opt, path)`` / ``pyopt.load(path, params)`` as ``.npz``, no pickle."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import numpy as np

from ._spec import TUPLES
from .optimizer import ParamsLike, _as_param_list

_META = "__pyopt_meta__"
_LOOKAHEAD = "lookahead_slow"


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
    """Read a checkpoint written by ``save`` back into a state_dict."""
    with np.load(os.fspath(path), allow_pickle=False) as data:
        if _META not in data.files:
            raise ValueError(f"{os.fspath(path)}: not a pyopt checkpoint (no {_META} entry)")
        meta = json.loads(str(data[_META]))
        state: dict[int, dict[str, Any]] = {int(i): dict(entry) for i, entry in meta["state"].items()}
        slow: dict[int, np.ndarray] = {}
        for key in data.files:
            if key == _META:
                continue
            if key.startswith(_LOOKAHEAD + "/"):
                slow[int(key.split("/", 1)[1])] = data[key]
                continue
            _, i, slot = key.split("/", 2)
            state.setdefault(int(i), {})[slot] = data[key]
    out = {**meta, "state": state}
    if "lookahead" in meta:
        out["lookahead"] = {**meta["lookahead"], "slow": slow}
    return out


def load(path: str | os.PathLike[str], params: ParamsLike) -> Any:
    """Rebuild the optimizer saved at ``path`` over ``params`` and restore its state (a
    ``Lookahead`` around it, with its k, alpha, counters and slow weights, if one was saved).

    ``params`` may be the same list / dict / param groups the optimizer was built with, or a flat
    list (or dict) of all params: they are split into the saved param groups in order.
    """
    from ._pybase import python_optimizer
    from .optimizers import create

    sd = load_state_dict(path)
    groups_meta = sd["param_groups"]
    if isinstance(params, (list, tuple)) and params and all(isinstance(g, dict) and "params" in g for g in params):
        groups = [dict(g) for g in params]
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
                group.setdefault(key, tuple(value) if key in TUPLES else value)
    py_class = python_optimizer(sd["optimizer"])  # an optimizer written in Python (Muon)
    if py_class is not None:
        opt: Any = py_class(groups)  # type: ignore[call-arg]
    else:
        opt = create(sd["optimizer"], groups)
    if "lookahead" in sd:
        from .lookahead import Lookahead

        wrapped = Lookahead(opt, k=sd["lookahead"]["k"], alpha=sd["lookahead"]["alpha"])
        wrapped.load_state_dict(sd)
        return wrapped
    opt.load_state_dict(sd)
    return opt
