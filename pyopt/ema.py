"""Exponential moving average of weights (``pyopt.EMA``), one fused C++ call per update.

    ema = EMA(params, decay=0.999)
    for batch in data:
        opt.step(grads)
        ema.update()                      # average <- average + (1 - decay) * (param - average)
    with ema.average_parameters():       # evaluate with the averaged weights
        evaluate(params)

The update is ``average.lerp_(param, 1 - decay)`` in torch's rounding (as
``torch.optim.swa_utils.get_ema_multi_avg_fn`` and timm's ModelEmaV3 do it): bit for bit on CPUs
with FMA (the avx2 / avx512 ISA paths), within an ulp on the baseline path.
"""
from __future__ import annotations

import contextlib
import numbers
import threading
from typing import Any, Iterator, Mapping, Sequence, Union

import numpy as np

from . import _core
from .optimizer import _as_param_list, _check_no_overlap, _float_array, _locked, _unit_interval

__all__ = ["EMA"]

ParamsLike = Union[np.ndarray, Sequence[np.ndarray], Mapping[str, np.ndarray]]

STATE_DICT_FORMAT = 1


class EMA:
    """An exponential moving average of ``params`` (an array, a list of arrays or a dict name → array).

    The averages start as copies of the params (same dtypes). ``update()`` does, for every param,
    ``average = average + (1 - d) * (param - average)`` with ``d = decay``, or with ``warmup=True``
    ``d = min(decay, (1 + t) / (10 + t))`` where ``t = num_updates`` before this update (0 for the
    first), the ``num_updates`` rule of TensorFlow's ExponentialMovingAverage and timm's ModelEma:
    early averages follow the params closely instead of staying near the initial weights.

    ``averages`` is a list of arrays, or a dict when the params were given as a dict.

    Thread safety: ``update``, ``swap``, ``copy_to``, ``state_dict`` and ``load_state_dict`` hold
    a per-EMA lock, so concurrent calls run one after the other.
    """

    def __init__(self, params: ParamsLike, decay: float = 0.999, *, warmup: bool = False) -> None:
        who = "EMA"
        plist, names = _as_param_list(params, who)
        if not plist:
            raise ValueError(f"{who}: got an empty parameter list")
        labels = [f"params[{n!r}]" for n in names] if names is not None else [f"params[{i}]" for i in range(len(plist))]
        for p, label in zip(plist, labels):
            _core.check_param(p, f"{who}: {label}")
        _check_no_overlap(plist, labels, who)
        if not isinstance(warmup, bool):
            raise TypeError(f"{who}: warmup must be a bool, got {warmup!r}")
        self.decay = _unit_interval(decay, "decay", who)
        self.warmup = warmup
        self.num_updates = 0
        self._params: list[np.ndarray] = list(plist)
        self._names = names
        self._labels = labels
        self._averages: list[np.ndarray] = [p.copy() for p in plist]
        self._lock = threading.RLock()  # update / swap / copy_to / (load_)state_dict run one at a time

    # ----- views ---------------------------------------------------------------------------
    @property
    def averages(self) -> list[np.ndarray] | dict[str, np.ndarray]:
        """The live average arrays: a list in the params' order, or a dict keyed like the params."""
        if self._names is not None:
            return dict(zip(self._names, self._averages))
        return list(self._averages)

    @property
    def params(self) -> list[np.ndarray] | dict[str, np.ndarray]:
        """The tracked params (the arrays themselves), in the form they were given."""
        if self._names is not None:
            return dict(zip(self._names, self._params))
        return list(self._params)

    def current_decay(self) -> float:
        """The decay the next ``update()`` will use."""
        if not self.warmup:
            return self.decay
        t = self.num_updates
        return min(self.decay, (1.0 + t) / (10.0 + t))

    # ----- updating ------------------------------------------------------------------------
    @_locked
    def update(self) -> None:
        """Move every average toward its param: one fused, multithreaded C++ call."""
        _core.ema_update(self._averages, self._params, self.current_decay())
        self.num_updates += 1

    def _targets(self, params: ParamsLike | None, who: str) -> list[np.ndarray]:
        if params is None:
            return self._params
        plist, names = _as_param_list(params, who)
        if names is not None:
            if self._names is None:
                raise TypeError(f"{who}: params given as a dict, but the EMA's params were not named")
            if set(names) != set(self._names):
                raise ValueError(f"{who}: params are named {sorted(names)}, the EMA has {sorted(self._names)}")
            by_name = dict(zip(names, plist))
            plist = [by_name[n] for n in self._names]
        if len(plist) != len(self._averages):
            raise ValueError(f"{who}: got {len(plist)} params, the EMA has {len(self._averages)}")
        for p, avg, label in zip(plist, self._averages, self._labels):
            _core.check_param(p, f"{who}: {label}")
            if p.shape != avg.shape or p.dtype != avg.dtype:
                raise ValueError(
                    f"{who}: {label} is {p.dtype}{list(p.shape)}, its average is {avg.dtype}{list(avg.shape)}"
                )
        return plist

    @_locked
    def copy_to(self, params: ParamsLike | None = None) -> None:
        """Write the averages into ``params`` (default: the tracked params). Checked whole first."""
        for p, avg in zip(self._targets(params, "EMA.copy_to"), self._averages):
            np.copyto(p, avg)

    @_locked
    def swap(self) -> None:
        """Exchange the contents of the params and the averages (call again to swap back)."""
        for p, avg in zip(self._params, self._averages):
            tmp = p.copy()
            np.copyto(p, avg)
            np.copyto(avg, tmp)

    @contextlib.contextmanager
    def average_parameters(self) -> Iterator[None]:
        """Inside the block the params hold the averages; on exit (even on an exception) they get
        back the values they had on entry. The averages are not changed."""
        backup = [p.copy() for p in self._params]
        try:
            for p, avg in zip(self._params, self._averages):
                np.copyto(p, avg)
            yield
        finally:
            for p, b in zip(self._params, backup):
                np.copyto(p, b)

    # ----- checkpoints ---------------------------------------------------------------------
    @_locked
    def state_dict(self) -> dict[str, Any]:
        """``decay``, ``warmup``, ``num_updates`` and copies of the averages (list or dict)."""
        avgs: Any = [a.copy() for a in self._averages]
        if self._names is not None:
            avgs = dict(zip(self._names, avgs))
        return {"format": STATE_DICT_FORMAT, "decay": self.decay, "warmup": self.warmup,
                "num_updates": self.num_updates, "averages": avgs}

    @_locked
    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a ``state_dict``. Everything is checked before anything changes."""
        who = "EMA.load_state_dict"
        if not isinstance(state_dict, Mapping) or "averages" not in state_dict or "num_updates" not in state_dict:
            raise ValueError(f"{who}: not an EMA state_dict (needs 'averages' and 'num_updates')")
        unknown = sorted(map(repr, set(state_dict) - {"format", "decay", "warmup", "num_updates", "averages"}))
        if unknown:
            raise ValueError(f"{who}: state_dict has unknown key(s) {', '.join(unknown)}")
        fmt = state_dict.get("format", STATE_DICT_FORMAT)
        if isinstance(fmt, bool) or not isinstance(fmt, (int, np.integer)) or int(fmt) != STATE_DICT_FORMAT:
            raise ValueError(f"{who}: unknown state_dict format {fmt!r} (this pyopt reads format {STATE_DICT_FORMAT})")
        decay = _unit_interval(state_dict.get("decay", self.decay), "decay", who)
        warmup = state_dict.get("warmup", self.warmup)
        if not isinstance(warmup, (bool, np.bool_)):
            raise TypeError(f"{who}: warmup must be a bool, got {warmup!r}")
        n = state_dict["num_updates"]
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 0 <= int(n) < 2**63:
            raise ValueError(f"{who}: num_updates must be an int in [0, 2**63), got {n!r}")
        saved = state_dict["averages"]
        if isinstance(saved, Mapping):
            if self._names is None:
                raise ValueError(f"{who}: the state_dict's averages are named, the EMA's params are not")
            if set(saved) != set(self._names):
                raise ValueError(f"{who}: averages are named {sorted(saved)}, the EMA has {sorted(self._names)}")
            values = [saved[n] for n in self._names]
        elif isinstance(saved, (list, tuple)):
            if self._names is not None:
                raise ValueError(f"{who}: the EMA's params are named; the state_dict's averages must be a dict")
            values = list(saved)
        else:
            raise TypeError(f"{who}: 'averages' must be a list or a dict, got {type(saved).__name__}")
        if len(values) != len(self._averages):
            raise ValueError(f"{who}: the state_dict has {len(values)} averages, the EMA has {len(self._averages)}")
        new = []
        for v, avg, label in zip(values, self._averages, self._labels):
            arr = _float_array(v, f"{who}: average of {label}")
            if arr.shape != avg.shape:
                raise ValueError(f"{who}: average of {label} has shape {arr.shape}, its param has {avg.shape}")
            new.append(np.array(arr, dtype=avg.dtype, order="C", copy=True))
        for avg, v in zip(self._averages, new):
            np.copyto(avg, v)
        self.decay = decay
        self.warmup = bool(warmup)
        self.num_updates = int(n)

    def __repr__(self) -> str:
        return (f"EMA(decay={self.decay}, warmup={self.warmup}, num_updates={self.num_updates}, "
                f"tensors={len(self._averages)})")
