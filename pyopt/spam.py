"""SPAM's random sparse update masks (``density < 1``): the base class of ``pyopt.SPAM``.

SPAM (Huang et al., 2025, "SPAM: Spike-Aware Adam with Momentum Reset for Stable LLM Training",
https://arxiv.org/abs/2501.06842), as pytorch-optimizer 4.1.0's ``SPAM`` computes it. The update
rule (Adam with spike clipping, momentum resets every ``update_proj_gap`` steps and a cosine
warmup after each) is the C++ rule csrc/include/pyopt/rules/spam.hpp. With ``density = 1`` (the
default) every step is that rule's, through the engine, unchanged. With ``density < 1`` each 2-D
param updates only the entries of a random boolean mask:

- the first mask (drawn at the param's first step) selects exactly ``int(density · size)``
  entries (the reference's ``torch.randperm``); at every step t ≥ 2 with t ≡ 0 (mod
  ``update_proj_gap``) (the reference resamples after step t − 1, before the momentum reset of
  step t) a new mask keeps each entry with probability ``density`` (``torch.rand_like < density``);
- the moments are kept for the masked entries only: 1-D arrays ``exp_avg`` / ``exp_avg_sq`` in the
  mask's row-major order, zeroed at each resample (the reference carries the moments of entries
  in both masks over, then zeroes them at once in the same step's reset);
- a step gathers the masked entries of the param and the gradient, runs the C++ rule on them
  (``pyopt._core.apply``) and scatters them back: the other entries get neither the step nor the
  weight decay, their gradients are ignored;
- 1-D params (and params of any other rank) are dense, as in the reference.

The state of a masked param holds ``mask`` (bool, the param's shape), ``exp_avg``, ``exp_avg_sq``
and ``step``; ``state_dict`` / ``load_state_dict`` (and ``pyopt.save`` / ``pyopt.load``) keep them.

Randomness: each mask is drawn from a numpy ``Generator`` seeded with ``(seed, param index,
step)`` (``seed``: a group hyperparameter, 0 by default), so it is a function of the checkpointed
state: a resumed run draws the masks the uninterrupted run would have, without a generator state
to save. The index counts the params of all groups, in pyopt.torch too (which builds one numpy
optimizer per group and gives each the offset of its first param).

How pyopt differs: steps are counted per param, as in the rule (the reference counts
``step()`` calls; the same when every param has a gradient at every step); density is a group
hyperparameter, read at each mask draw (the reference's is optimizer-wide); the masks come from
numpy, not torch (tests/python/test_spam_density.py replays pyopt's into the reference). With
``density < 1`` the storage options (16-bit params or states, 8-bit states, master weights),
``clip_norm`` / ``clip_value`` / ``skip_nonfinite`` and RowSparse gradients are refused
(ValueError / TypeError before anything changes), and a param keeps the state layout of its
first step: moving a group's density between 1 and < 1 after its 2-D params stepped is a
ValueError (``zero_state()`` starts afresh).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from . import _core, sparse, storage
from .optimizer import (
    Optimizer,
    ParamsLike,
    _check_disjoint,
    _locked,
    _saved_step,
    _state_array,
)
from .sparse import RowSparse

MASKED_STATE = ("mask", "exp_avg", "exp_avg_sq")


class MaskedSPAM(Optimizer):
    """``density < 1`` draws a random update mask for each 2-D param (see pyopt/spam.py): only
    the masked entries are updated, and only they keep moments. ``seed`` (keyword-only) seeds the
    masks; each is a function of (seed, param index, step), so resumed runs draw the same ones.
    With density < 1 the storage options and clip_norm / clip_value / skip_nonfinite are refused."""

    _draw_index_offset = 0  # added to the param index of the masks' key (pyopt.torch: earlier groups' params)

    def __init__(self, params: ParamsLike, **hyper: Any) -> None:
        self._has_masks = False  # some param's state holds a mask (its layout is the masked one)
        # Bumped whenever state arrays are replaced (new masks): pyopt.torch re-exposes its views.
        self._arrays_replaced = 0
        super().__init__(params, **hyper)
        if any(group["density"] < 1 for group in self.param_groups):
            self._refuse_storage(self._storage, "")

    @staticmethod
    def _masks_whole_params(group: Mapping[str, Any]) -> bool:
        """Whether a group's 2-D params are masked (pyopt.torch then refuses flat partitions)."""
        density = group.get("density", 1.0)
        return isinstance(density, (int, float)) and density < 1

    # ----- hyperparameters ---------------------------------------------------------------------
    def _checked_flat(self, group: Mapping[str, Any], where: str) -> list[float]:
        """The C++ rule steps whichever entries it is given: it gets density 1, checked here."""
        values = self._spec.flat(group, where)
        at = self._hyper_index("density")
        density = values[at]
        if not 0.0 < density <= 1.0:
            raise ValueError(f"{where}: invalid density: {density} (must be in (0, 1])")
        values[at] = 1.0
        self._spec.validate(values, where)
        return values

    def _hyper_index(self, name: str) -> int:
        return [h[0] for h in self._spec.hyper].index(name)

    def _refuse_storage(self, options: storage.StorageOptions, where: str) -> None:
        if options != storage.StorageOptions():
            raise ValueError(f"{self._owner_label}{where}: density < 1 keeps the moments of the masked entries in "
                             f"the params' dtype: the storage options {options.as_dict()} (8-bit or 16-bit states, "
                             "master weights) do not combine with it")

    # ----- stepping ----------------------------------------------------------------------------
    def _update(self, grads: Any, plain: bool, clip_norm: float, clip_value: float, skip_nonfinite: bool) -> bool:
        if not self._has_masks and all(group["density"] == 1 for group in self.param_groups):
            return super()._update(grads, plain, clip_norm, clip_value, skip_nonfinite)
        return self._masked_step(self._grad_list(grads), plain)

    def _masked_step(self, grad_list: Sequence[Any], plain: bool) -> bool:
        """A step with some masked param: every param through ``_core.apply``, the masked ones on
        their gathered entries. Everything is checked before anything changes."""
        who = self._owner_label
        flats = self._flat_hypers()
        self._check_groups_unedited()
        if not plain:
            raise ValueError(f"{who}: clip_norm, clip_value and skip_nonfinite do not combine with density < 1; "
                             "clip the gradients before the step")
        self._refuse_storage(self._storage, "")
        if len(grad_list) != len(self._params):
            raise ValueError(f"{who}: expected {len(self._params)} gradients (one per param), got {len(grad_list)}")
        owner = [g for g, group in enumerate(self.param_groups) for _ in group["params"]]
        work = []
        arrays = []  # (array, label, written by the step)
        for i, (p, g) in enumerate(zip(self._params, grad_list)):
            if g is None:
                continue
            label = f"{who}: {self._labels[i]}"
            if isinstance(g, RowSparse):
                raise sparse.refuse(self.name, f"{label}'s gradient")
            if p.dtype not in (np.float32, np.float64):
                raise ValueError(f"{label}: density < 1 takes float32 / float64 params, got {p.dtype}")
            _core.check_param(p, label)
            grad = _checked_grad(g, p, label)
            group = self.param_groups[owner[i]]
            masked = p.ndim == 2 and group["density"] < 1
            self._check_layout(p, self._slots[i], masked, label)
            work.append((i, grad, masked))
            arrays.append((p, self._labels[i], True))
            arrays.append((grad, f"the gradient of {self._labels[i]}", False))
            arrays.extend((v, f"{self._labels[i]} state {k!r}", True) for k, v in self._slots[i].items())
        _check_disjoint(arrays, who)

        for i, grad, masked in work:
            p, entries, flat = self._params[i], self._slots[i], flats[owner[i]]
            self._steps[i] += 1
            step = int(self._steps[i])
            needed = _core.slots_needed(self.name, flat)
            if not masked:
                for slot, initial in needed:
                    if slot not in entries:
                        entries.update(storage.new_state(self._storage, self.name, p, slot, initial))
                _core.apply(self.name, p, grad, [entries[s] for s, _ in needed], step, flat, self._scalars[i])
                continue
            group = self.param_groups[owner[i]]
            gap = int(group["update_proj_gap"])
            if "mask" not in entries or (step >= 2 and step % gap == 0):
                draw = self._draw_initial_mask if "mask" not in entries else self._draw_mask
                mask = draw(int(group["seed"]), self._draw_index_offset + i, step, p.shape, float(group["density"]))
                count = int(np.count_nonzero(mask))
                entries.update(mask=mask, **{s: np.full(count, initial, p.dtype) for s, initial in needed})
                self._has_masks = True
                self._arrays_replaced += 1
            mask = entries["mask"]
            if entries["exp_avg"].size:
                block = p[mask]
                _core.apply(self.name, block, grad[mask], [entries[s] for s, _ in needed], step, flat,
                            self._scalars[i])
                p[mask] = block
        self._engine = None  # (a later step with density 1 everywhere builds it over the current arrays)
        return True

    def _check_layout(self, p: np.ndarray, entries: Mapping[str, np.ndarray], masked: bool, label: str) -> None:
        """The param's state (if any) has the layout its group's density calls for."""
        if not entries:
            return
        if ("mask" in entries) != masked:
            now = "< 1" if masked else "1"
            raise ValueError(f"{label}: its state was made with density {'1' if masked else '< 1'}, but its group's "
                             f"density is now {now} (the state's layout differs: compact moments of the masked "
                             "entries or full ones); zero_state() starts afresh")
        if not masked:
            for name, value in entries.items():
                if value.shape != p.shape or value.dtype != p.dtype or not value.flags.c_contiguous \
                        or not value.flags.writeable:
                    raise ValueError(f"{label}: state {name!r} ({value.dtype} {value.shape}) no longer fits its param")
            return
        mask = entries["mask"]
        if set(entries) != set(MASKED_STATE) or mask.dtype != np.bool_ or mask.shape != p.shape:
            raise ValueError(f"{label}: its state must hold a bool 'mask' of the param's shape {p.shape}, "
                             f"'exp_avg' and 'exp_avg_sq', got {sorted(entries)}")
        count = int(np.count_nonzero(mask))
        for name in MASKED_STATE[1:]:
            value = entries[name]
            if value.shape != (count,) or value.dtype != p.dtype or not value.flags.c_contiguous \
                    or not value.flags.writeable:
                raise ValueError(f"{label}: state {name!r} ({value.dtype} {value.shape}) no longer fits its mask "
                                 f"(expected {p.dtype} ({count},): one entry per masked entry)")

    # ----- the masks ---------------------------------------------------------------------------
    def _draw_initial_mask(self, seed: int, index: int, step: int, shape: tuple[int, ...],
                           density: float) -> np.ndarray:
        """Exactly int(density · size) entries, uniformly (the reference's randperm)."""
        size = math.prod(shape)
        mask = np.zeros(size, np.bool_)
        mask[_generator(seed, index, step).permutation(size)[: int(density * size)]] = True
        return mask.reshape(shape)

    def _draw_mask(self, seed: int, index: int, step: int, shape: tuple[int, ...], density: float) -> np.ndarray:
        """Each entry with probability density (the reference's rand_like(p) < density)."""
        return _generator(seed, index, step).random(shape) < density

    # ----- state -------------------------------------------------------------------------------
    def _restore_state(self, entries: dict[int, Mapping[str, Any]], state_dict: Mapping[str, Any]) -> Callable[[], None]:
        """Masked params' entries (2-D params of groups whose saved density is < 1) are checked
        here, the others by ``Optimizer._restore_state``."""
        who = self._owner_label
        saved_groups = state_dict["param_groups"]
        density = [float(saved.get("density", group["density"]))
                   for saved, group in zip(saved_groups, self.param_groups) for _ in group["params"]]
        if any(d < 1 for d in density):
            saved = state_dict.get("storage")
            if saved is not None:
                self._refuse_storage(storage.saved_options(saved, self.name, who, self.state_dtypes),
                                     " (state_dict)")
        dense: dict[int, Mapping[str, Any]] = {}
        masked: dict[int, dict[str, np.ndarray]] = {}
        for i, entry in entries.items():
            p = self._params[i]
            where = f"{who}: state_dict param {i}"
            if p.ndim == 2 and density[i] < 1 and set(entry) - {"step"}:
                masked[i] = _saved_masked_state(entry, p, where)
                entry = {k: v for k, v in entry.items() if k == "step"}
            elif "mask" in entry:
                raise ValueError(f"{where} has a 'mask', but its param is not masked (density 1, or not 2-D)")
            dense[i] = entry
        put_dense_in_place = super()._restore_state(dense, state_dict)

        def put_in_place() -> None:
            put_dense_in_place()
            for i, slots in masked.items():
                self._slots[i] = slots
            self._has_masks = bool(masked)
            self._arrays_replaced += 1
        return put_in_place

    @_locked
    def zero_state(self) -> None:
        super().zero_state()
        self._has_masks = False
        self._arrays_replaced += 1


def _generator(seed: int, index: int, step: int) -> np.random.Generator:
    return np.random.default_rng((seed, index, step))


def _checked_grad(g: Any, p: np.ndarray, label: str) -> np.ndarray:
    """A gradient as the engine takes it: any real dtype, the param's shape, in the param's dtype."""
    arr = g if isinstance(g, np.ndarray) else np.asarray(g)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{label}: gradient dtype {arr.dtype} is not a real number type")
    if arr.shape != p.shape:
        raise ValueError(f"{label}: gradient shape {arr.shape} does not match param shape {p.shape}")
    return arr.astype(p.dtype, copy=False)


def _saved_masked_state(entry: Mapping[str, Any], p: np.ndarray, where: str) -> dict[str, np.ndarray]:
    """A masked param's checkpointed mask and compact moments, checked and copied."""
    unknown = sorted(set(entry) - {"step", *MASKED_STATE})
    if unknown:
        raise ValueError(f"{where} has unknown state {', '.join(map(repr, unknown))} for a masked param "
                         f"(density < 1); it holds {', '.join(MASKED_STATE)}")
    missing = [k for k in MASKED_STATE if k not in entry]
    if missing:
        raise ValueError(f"{where}: the state of a masked param (density < 1) lacks {', '.join(map(repr, missing))}")
    value = entry["mask"]
    mask = value if isinstance(value, np.ndarray) else np.asarray(value)
    if mask.dtype != np.bool_:
        raise TypeError(f"{where} state 'mask' must be a bool array, got dtype {mask.dtype}")
    if mask.shape != p.shape:
        raise ValueError(f"{where} state 'mask' has shape {mask.shape}, expected the param's {p.shape}")
    count = int(np.count_nonzero(mask))
    out = {"mask": np.array(mask, dtype=np.bool_, order="C", copy=True)}
    for name in MASKED_STATE[1:]:
        out[name] = _state_array(entry[name], (count,), p.dtype, f"{where} state {name!r}")
    if "step" in entry:
        _saved_step(entry["step"], where)
    return out
