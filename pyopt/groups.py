"""Param groups in one line: weight decay for the weight matrices, none for biases and norms."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

__all__ = ["param_groups", "default_no_decay"]

NoDecay = Callable[[Optional[str], np.ndarray], bool]


def default_no_decay(name: str | None, p: np.ndarray) -> bool:
    """True for params that usually skip weight decay: 0-d/1-d arrays (biases, norm scales and
    shifts) and params whose name ends in ``bias``."""
    return np.ndim(p) <= 1 or (name is not None and name.rsplit(".", 1)[-1].endswith("bias"))


def param_groups(params: Union[Mapping[str, np.ndarray], Sequence[np.ndarray]], weight_decay: float = 1e-2,
                 no_decay: NoDecay = default_no_decay, **hyper: Any) -> list[dict[str, Any]]:
    """Split ``params`` into a decayed and a non-decayed param group::

        opt = pyopt.AdamW(pyopt.param_groups(model_params, weight_decay=1e-2), lr=1e-3)

    ``params``: a dict name → array (groups keep the names, so dict grads still work) or a list
    of arrays (``no_decay`` is then called with ``name=None``, so only shape rules apply).
    ``no_decay(name, p)`` returns True for params to exclude (default: ``p.ndim <= 1`` or a name
    ending in ``bias``). Returns ``[{"params": decayed, "weight_decay": weight_decay, **hyper},
    {"params": rest, "weight_decay": 0.0, **hyper}]``, leaving out a group that would be empty.
    """
    who = "param_groups"
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float, np.floating)):
        raise TypeError(f"{who}: weight_decay must be a number, got {weight_decay!r}")
    if not callable(no_decay):
        raise TypeError(f"{who}: no_decay must be a callable (name, param) -> bool, got {no_decay!r}")
    if "params" in hyper:
        raise TypeError(f"{who}: 'params' is the first argument, not a hyperparameter")
    if isinstance(params, Mapping):
        items: list[tuple[str | None, Any]] = list(params.items())
        bad = [n for n, _ in items if not isinstance(n, str)]
        if bad:
            raise TypeError(f"{who}: param names must be strings, got {bad[0]!r}")
    elif isinstance(params, np.ndarray):
        items = [(None, params)]
    elif isinstance(params, (list, tuple)):
        items = [(None, p) for p in params]
    else:
        raise TypeError(f"{who}: params must be a dict name -> array or a list of arrays, got {type(params).__name__}")
    if not items:
        raise ValueError(f"{who}: params is empty")
    decay: list[tuple[str | None, np.ndarray]] = []
    rest: list[tuple[str | None, np.ndarray]] = []
    for i, (name, p) in enumerate(items):
        if not isinstance(p, np.ndarray):
            label = f"params[{name!r}]" if name is not None else f"params[{i}]"
            raise TypeError(f"{who}: {label} must be a numpy array, got {type(p).__name__}")
        (rest if no_decay(name, p) else decay).append((name, p))
    named = isinstance(params, Mapping)
    out = []
    for members, wd in ((decay, weight_decay), (rest, 0.0)):
        if members:
            ps: Any = {n: p for n, p in members} if named else [p for _, p in members]
            out.append({"params": ps, "weight_decay": float(wd), **hyper})
    return out
