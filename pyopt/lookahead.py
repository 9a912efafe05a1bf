"""Lookahead (Zhang et al., 2019) around any pyopt optimizer: ``pyopt.Lookahead(inner, k=5, alpha=0.5)``.

    opt = Lookahead(pyopt.AdamW(params, lr=1e-3), k=5, alpha=0.5)
    opt.step(grads)

The semantics are pytorch-optimizer 4.1.0's ``Lookahead`` with its default
``pullback_momentum="none"`` (the inner optimizer's state is left alone):

- the slow weights are copies of the params taken when the Lookahead is built (for a param group
  added later, when it is added);
- ``step(grads)`` runs ``inner.step(grads)``, then counts the step in every param group; when a
  group's count reaches ``k`` it is reset to 0 and each of that group's params that got a
  gradient this step (not ``None``) becomes ``p = lerp(p, slow, 1 - alpha)``, i.e.
  ``slow + alpha·(p − slow)`` rounded as torch's ``p.lerp_(slow, 1 - alpha)``, and then
  ``slow = p``. The interpolation is one fused C++ call (``_core.ema_update``).

One difference: pytorch-optimizer requires ``0 <= alpha < 1``; here ``alpha = 1`` is accepted too
(the params are left as the inner optimizer made them).
"""
from __future__ import annotations

import numbers
import threading
from typing import Any, Mapping

import numpy as np

from . import _core
from .optimizer import GradsLike, Optimizer, _float_array, _locked, _state_index, _unit_interval

__all__ = ["Lookahead"]

STATE_DICT_FORMAT = 1


def _check_k(who: str, k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"{who}: k must be an int, got {k!r}")
    if int(k) < 1:
        raise ValueError(f"{who}: k must be >= 1, got {k}")
    return int(k)


class Lookahead:
    """Wraps a pyopt optimizer: every ``k`` steps the params move back toward slow weights,
    ``p = slow + alpha·(p − slow)``, and the slow weights take the result.

    ``inner``: a ``pyopt.Optimizer``. ``param_groups`` are the inner's (edit lrs there or here,
    schedules attach to ``inner``). ``state_dict()`` is the inner's plus a ``"lookahead"`` entry
    (``k``, ``alpha``, the per-group step counters and the slow weights), which ``pyopt.save`` /
    ``pyopt.load`` carry too. Thread safety: ``step``, ``add_param_group``, ``state_dict`` and
    ``load_state_dict`` hold a per-Lookahead lock (and the inner optimizer's), so concurrent calls
    run one after the other.
    """

    def __init__(self, inner: Optimizer, k: int = 5, alpha: float = 0.5) -> None:
        who = "Lookahead"
        if not isinstance(inner, Optimizer):
            raise TypeError(f"{who}: inner must be a pyopt.Optimizer, got {type(inner).__name__}")
        self.k = _check_k(who, k)
        self.alpha = _unit_interval(alpha, "alpha", who)
        self.inner = inner
        self._slow: list[np.ndarray] = []
        self._counters: list[int] = []
        self._lock = threading.RLock()  # step / add_param_group / (load_)state_dict run one at a time
        self._sync_groups()

    # ----- groups ----------------------------------------------------------------------------
    @property
    def param_groups(self) -> list[Any]:
        """The inner optimizer's param groups."""
        return self.inner.param_groups

    @property
    def slow_params(self) -> list[np.ndarray]:
        """The slow weights (live arrays), in the order of the inner optimizer's params."""
        return list(self._slow)

    @property
    def counters(self) -> list[int]:
        """Steps since each param group's last synchronisation (0 ≤ count < k)."""
        return list(self._counters)

    def _sync_groups(self) -> None:
        # Param groups the inner optimizer gained (through us or directly) get slow copies now.
        params = self.inner._params
        for p in params[len(self._slow):]:
            self._slow.append(p.copy())
        self._counters.extend(0 for _ in self.inner.param_groups[len(self._counters):])

    @_locked
    def add_param_group(self, param_group: Mapping[str, Any]) -> None:
        """Add a param group to the inner optimizer; its slow weights are copies of its params now."""
        self.inner.add_param_group(param_group)
        self._sync_groups()

    # ----- stepping ------------------------------------------------------------------------
    @_locked
    def step(self, grads: GradsLike) -> None:
        """``inner.step(grads)``, then the slow/fast interpolation for the groups whose count reached k."""
        self._sync_groups()
        grad_list = self.inner._grad_list(grads)
        self.inner.step(grads)
        fast, slow = [], []
        index = 0
        for g, group in enumerate(self.inner.param_groups):
            count = len(group["params"])
            self._counters[g] += 1
            if self._counters[g] >= self.k:
                self._counters[g] = 0
                for i in range(index, index + count):
                    if i < len(grad_list) and grad_list[i] is not None:
                        fast.append(self.inner._params[i])
                        slow.append(self._slow[i])
            index += count
        if fast:
            # p <- lerp(p, slow, 1 - alpha), torch's rounding; then slow <- p
            _core.ema_update(fast, slow, self.alpha)
            for p, s in zip(fast, slow):
                np.copyto(s, p)

    # ----- checkpoints ---------------------------------------------------------------------
    @_locked
    def state_dict(self) -> dict[str, Any]:
        """The inner optimizer's state_dict plus ``"lookahead"``: k, alpha, counters, slow weights (copies)."""
        self._sync_groups()
        out = self.inner.state_dict()
        out["lookahead"] = {
            "format": STATE_DICT_FORMAT,
            "k": self.k,
            "alpha": self.alpha,
            "counters": list(self._counters),
            "slow": {i: s.copy() for i, s in enumerate(self._slow)},
        }
        return out

    @_locked
    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a Lookahead ``state_dict`` (k, alpha, counters, slow weights and the inner's
        state). Everything is checked before anything changes."""
        who = "Lookahead.load_state_dict"
        self._sync_groups()
        if not isinstance(state_dict, Mapping) or not isinstance(state_dict.get("lookahead"), Mapping):
            raise ValueError(f"{who}: not a Lookahead state_dict (no 'lookahead' entry)")
        la = state_dict["lookahead"]
        missing = [key for key in ("k", "alpha", "counters", "slow") if key not in la]
        if missing:
            raise ValueError(f"{who}: 'lookahead' entry lacks {missing}")
        unknown = sorted(map(repr, set(la) - {"format", "k", "alpha", "counters", "slow"}))
        if unknown:
            raise ValueError(f"{who}: 'lookahead' entry has unknown key(s) {', '.join(unknown)}")
        fmt = la.get("format", STATE_DICT_FORMAT)
        if isinstance(fmt, bool) or not isinstance(fmt, (int, np.integer)) or int(fmt) != STATE_DICT_FORMAT:
            raise ValueError(f"{who}: unknown 'lookahead' format {fmt!r} (this pyopt reads format {STATE_DICT_FORMAT})")
        k = _check_k(who, la["k"])
        alpha = _unit_interval(la["alpha"], "alpha", who)
        counters = la["counters"]
        if not isinstance(counters, (list, tuple)) or len(counters) != len(self._counters):
            raise ValueError(
                f"{who}: 'counters' must be a list of {len(self._counters)} ints (one per param group), got {counters!r}"
            )
        for c in counters:
            if isinstance(c, bool) or not isinstance(c, numbers.Integral) or not 0 <= int(c) < k:
                raise ValueError(f"{who}: counters must be ints in [0, k={k}), got {list(counters)!r}")
        saved = la["slow"]
        if not isinstance(saved, Mapping):
            raise TypeError(f"{who}: 'slow' must be a dict param index -> array")
        by_index = {}
        for key, value in saved.items():
            i = _state_index(key, len(self._slow), who)
            if i in by_index:
                raise ValueError(f"{who}: 'slow' holds the slow weight of param {i} twice")
            by_index[i] = value
        if sorted(by_index) != list(range(len(self._slow))):
            raise ValueError(
                f"{who}: slow weights for params {sorted(by_index)}, the optimizer has {len(self._slow)} params"
            )
        new_slow = []
        for i, current in enumerate(self._slow):
            arr = _float_array(by_index[i], f"{who}: slow weight {i}")
            if arr.shape != current.shape:
                raise ValueError(f"{who}: slow weight {i} has shape {arr.shape}, its param has {current.shape}")
            new_slow.append(np.array(arr, dtype=current.dtype, order="C", copy=True))
        self.inner.load_state_dict(state_dict)  # checks its part whole before changing anything
        self.k, self.alpha = k, alpha
        self._counters = [int(c) for c in counters]
        for s, v in zip(self._slow, new_slow):
            np.copyto(s, v)

    def __repr__(self) -> str:
        return f"Lookahead(k={self.k}, alpha={self.alpha}, inner={self.inner!r})"
