r"""Adam-mini (Zhang et al., 2024, "Adam-mini: Use Fewer Learning Rates To Gain More", ICLR 2025;
official code: https://github.com/zyushun/Adam-mini), as pytorch-optimizer 4.1.0's ``AdamMini``
computes it, in numpy.

Adam-mini is Adam with one second-moment value per *block* of a param instead of one per element:
the running mean of the block's mean g². pytorch-optimizer picks each param's blocks from its
name in the torch model: names containing ``embed``, ``embd``, ``wte``, ``lm_head.weight`` or
``output.weight`` step as plain Adam (one value per element); attention query/key projections
(``q_proj.weight``, ``k_proj.weight``, ``wq.weight``, ``wk.weight``) have one block per head
(``num_embeds**2 // num_heads`` consecutive elements); fused ``attn.attn.weight`` /
``attn.qkv.weight`` ones one block per query group and slot (``num_query_groups *
(num_heads // num_query_groups + 2)`` equal consecutive blocks); every other param (linear and
convolution weights, biases, norms) is one block. Weight decay is decoupled, and off for names
containing ``norm`` or ``ln_f``.

numpy arrays have no names, so here each param group states its blocks with the ``blocks``
option (``pyopt.param_groups`` or a list of groups splits the params):

- ``"tensor"`` (the default): one block per param: pytorch-optimizer's rule for every param it
  does not name (e.g. plain ``Linear`` layers, biases, norms);
- ``"element"``: one value per element, i.e. Adam: its embeddings and output heads;
- an int ``n``: ``n`` equal blocks of consecutive elements (``p.size`` a multiple of ``n``): its
  query/key projections with ``n = num_heads``, its fused attention weights with
  ``n = num_query_groups * (num_heads // num_query_groups + 2)``;
- ``"rows"``: one block per output row (``p.reshape(len(p), -1)``), the partition the official
  code's later versions use for value, attention-output and MLP weights (for a 1-D param: one
  block per element).

Give norm weights and biases a group with ``weight_decay=0.0`` as pytorch-optimizer does by name.
Where pyopt differs from pytorch-optimizer 4.1.0: states are in the param's dtype (pytorch-optimizer
keeps them, and the gradient, in float32 for any param); the step count is per param (pytorch-
optimizer counts per group); no model sharding (one process).
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Mapping

import numpy as np

from ._pyhelpers import add_scaled, betas, flag, number
from ._pybase import PyOptimizer
from .muon import _lerp
from .optimizer import ParamsLike, _float_array

__all__ = ["AdamMini"]

BLOCK_NAMES = ("tensor", "element", "rows")


class AdamMini(PyOptimizer):
    r"""Adam-mini (Zhang et al., 2024; pytorch-optimizer 4.1.0 ``AdamMini``): Adam with one
    second-moment value per block of each param (``blocks``: see the module docstring).

    .. math:: p \leftarrow p(1-\eta\lambda);\quad m \leftarrow \mathrm{lerp}(m, g, 1-\beta_1);\quad
              v_b \leftarrow \mathrm{lerp}(v_b, \mathrm{mean}_{i \in b}\, g_i^2, 1-\beta_2);\quad
              p_i \leftarrow p_i - \frac{\eta}{1-\beta_1^t}\,\frac{m_i}{\sqrt{v_{b(i)}/(1-\beta_2^t)} + \epsilon}

    ``m`` is kept per element; ``v_mean`` holds one ``v_b`` per block (``blocks="element"``: ``v``,
    one per element, updated as Adam's ``β_2 v + (1-β_2) g²``).
    """

    name = "adam_mini"
    lr_range = (1e-5, 1e-1)  # searched by pyopt.tuner
    slots = ("m", "v", "v_mean")
    tuples = frozenset({"betas"})

    def __init__(self, params: ParamsLike, lr: float = 1.0, betas: tuple[float, float] = (0.9, 0.999),
                 weight_decay: float = 0.1, eps: float = 1e-8, blocks: str | int = "tensor", *,
                 maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay, eps=eps, blocks=blocks,
                                      maximize=maximize))

    def _check_hypers(self, group: dict[str, Any], where: str) -> dict[str, Any]:
        out = dict(group)
        out["lr"] = number(where, "lr", group["lr"], 0.0)
        out["betas"] = betas(where, group["betas"], 2, ("[)", "[)"))
        out["weight_decay"] = number(where, "weight_decay", group["weight_decay"], 0.0)
        out["eps"] = number(where, "eps", group["eps"], 0.0)
        out["maximize"] = flag(where, "maximize", group["maximize"])
        blocks = group["blocks"]
        if isinstance(blocks, str):
            if blocks not in BLOCK_NAMES:
                raise ValueError(f"{where}: invalid blocks: {blocks!r} (must be 'tensor', 'element', 'rows' or an int)")
        elif isinstance(blocks, (bool, np.bool_)) or not isinstance(blocks, numbers.Integral):
            raise TypeError(f"{where}: blocks must be 'tensor', 'element', 'rows' or an int, got {blocks!r}")
        elif int(blocks) < 1:
            raise ValueError(f"{where}: invalid blocks: {blocks} (must be >= 1)")
        else:
            blocks = int(blocks)  # that it divides each param's size is checked at each step
        out["blocks"] = blocks
        return out

    @staticmethod
    def _block_count(p: np.ndarray, blocks: str | int) -> int | None:
        """The number of second-moment values of ``p`` (None: one per element, ``v``)."""
        if blocks == "element":
            return None
        if blocks == "tensor":
            return 1
        if blocks == "rows":
            return p.shape[0] if p.ndim else 1
        return int(blocks)

    def _state_shape(self, name: str, p: np.ndarray) -> tuple[int, ...] | None:
        # v_mean's length is the group's block count: checked by _check_step and _restore_state.
        return None if name == "v_mean" else p.shape

    def _check_step(self, p: np.ndarray, g: np.ndarray, state: dict[str, Any], group: Mapping[str, Any],
                    label: str) -> None:
        super()._check_step(p, g, {k: v for k, v in state.items() if k != "v_mean"}, group, label)
        if p.size and isinstance(group["blocks"], int) and p.size % group["blocks"]:
            raise ValueError(f"{label}: blocks={group['blocks']} does not divide its size {p.size}")
        count = self._block_count(p, group["blocks"])
        has = "v" if "v" in state else "v_mean" if "v_mean" in state else None
        if has is not None and (count is None) != (has == "v"):
            raise ValueError(f"{label}: its state has {has!r} but its group now says blocks={group['blocks']!r}")
        mean = state.get("v_mean")
        if mean is not None and (mean.shape != (count,) or mean.dtype != p.dtype or not mean.flags.writeable):
            raise ValueError(f"{label}: state 'v_mean' (shape {mean.shape}) no longer fits its param and "
                             f"blocks={group['blocks']!r}")

    def _restore_state(self, entries: dict[int, Mapping[str, Any]], state_dict: Mapping[str, Any]) -> Callable[[], None]:
        who = self._owner_label
        means = {}
        others: dict[int, Mapping[str, Any]] = {}
        for i, entry in entries.items():
            others[i] = {k: v for k, v in entry.items() if k != "v_mean"}
            if "v_mean" in entry:
                what = f"{who}: state_dict param {i} state 'v_mean'"
                arr = _float_array(entry["v_mean"], what)
                size = self._params[i].size
                if arr.ndim != 1 or (size and (arr.shape[0] < 1 or size % arr.shape[0])):
                    raise ValueError(f"{what} has shape {arr.shape}, expected (blocks,) with blocks dividing {size}")
                if "v" in entry:
                    raise ValueError(f"{who}: state_dict param {i} has both 'v' and 'v_mean'")
                means[i] = np.array(arr, dtype=self._params[i].dtype, copy=True)
        put_others = super()._restore_state(others, state_dict)

        def put_in_place() -> None:
            put_others()
            for i, mean in means.items():
                self._state[i]["v_mean"] = mean
        return put_in_place

    def _update(self, p: np.ndarray, g: np.ndarray, state: dict[str, Any], group: Mapping[str, Any]) -> None:
        count = self._block_count(p, group["blocks"])
        if "m" not in state:
            state["m"] = np.zeros_like(p)
            if count is None:
                state["v"] = np.zeros_like(p)
            else:
                state["v_mean"] = np.zeros(count, p.dtype)
        if not p.size:
            return
        dtype = p.dtype.type
        beta1, beta2 = group["betas"]
        lr, eps, step = group["lr"], group["eps"], state["step"]
        bias_correction1 = 1.0 - beta1 ** step
        bias_correction2_sqrt = math.sqrt(1.0 - beta2 ** step)
        if group["maximize"]:
            g = -g
        m = state["m"]
        with np.errstate(all="ignore"):  # inf and NaN propagate silently, as in torch
            if group["weight_decay"]:
                p *= dtype(1.0 - lr * group["weight_decay"])
            m[...] = _lerp(m, g, 1.0 - beta1)
            if count is None:  # pytorch-optimizer's step_embed: Adam
                v = state["v"]
                v *= dtype(beta2)
                v += dtype(1.0 - beta2) * g * g
                denom = np.sqrt(v) / dtype(bias_correction2_sqrt) + dtype(eps)
                p += dtype(-lr / bias_correction1) * m / denom
                return
            v_mean = state["v_mean"]
            if group["blocks"] == "tensor":  # step_lefts: a sum over the tensor, divided by its size
                mean_square = np.sum(g * g, dtype=p.dtype).reshape(1) / dtype(p.size)
            else:  # step_attn_proj: the mean over each block
                mean_square = np.mean((g * g).reshape(count, -1), axis=1, dtype=p.dtype)
            v_mean[...] = _lerp(v_mean, mean_square, 1.0 - beta2)
            denom = np.sqrt(v_mean) / dtype(bias_correction2_sqrt) + dtype(eps)
            if group["blocks"] == "tensor":
                scale = dtype(1 / bias_correction1) / denom
            else:
                scale = 1 / (denom * dtype(bias_correction1))
            update = (m.reshape(count, -1) * scale[:, None]).reshape(p.shape)
            add_scaled(p, update, -lr)
