r"""Learning-rate-free optimizers: Prodigy, D-Adapt Adam and D-Adapt SGD, in numpy.

They estimate the distance ``d`` to the solution from the optimization so far and step by
``d · lr``, so ``lr`` is a multiplier on the estimated step (1 unless training is unstable). The
estimate needs sums over every param of every group (inner products, norms) at each step, so they
are not element-wise rules of the C++ core: each step makes one numpy pass over the params that
accumulates the sums and the moments, then, once ``d`` is updated, a second pass that updates the
params.

- Prodigy: Mishchenko & Defazio, "Prodigy: An Expeditiously Adaptive Parameter-Free Learner",
  ICML 2024 (https://arxiv.org/abs/2306.06101); official code konstmish/prodigy.
- D-Adapt Adam and SGD: Defazio & Mishchenko, "Learning-Rate-Free Learning by D-Adaptation",
  ICML 2023 (https://arxiv.org/abs/2301.07733); official code facebookresearch/dadaptation (V3).

The steps are pytorch-optimizer 4.1.0's ``Prodigy``, ``DAdaptAdam`` and ``DAdaptSGD`` (which
follow the official code), with these differences:

- One distance estimate for all params, as in both references, whose hyperparameters are those of
  every group: ``lr``, ``betas``, ``beta3``, ``d0``, ``d_coef``, ``growth_rate`` and
  ``bias_correction`` must be the same in every group (pytorch-optimizer reads some of them from
  the first group and some from the last; the official code refuses groups whose lrs differ). A
  step whose groups differ in one of them raises ValueError naming it, before anything changes.
  ``weight_decay``, ``weight_decouple``, ``fixed_decay``, ``eps``, ``safeguard_warmup``,
  ``momentum`` and ``maximize`` are per group. To freeze a group, pass ``None`` as its grads.
- Prodigy's coupled weight decay (``weight_decouple=False``) is the official code's: added to the
  gradient before the moments. pytorch-optimizer 4.1.0 adds it to ``p.grad`` only after the
  update, so there it has no effect (on the update).
- The sums are accumulated in float64 (Python floats, as the official code's ``.item()``), each
  param's reduction computed in the param's dtype; D-Adapt SGD's initial gradient norm is a float64
  one (pytorch-optimizer computes it in float32, which overflows above 3.4e38).
- Gradients are never modified (the references negate and decay ``p.grad`` in place).
- D-Adapt SGD does not keep pytorch-optimizer's ``z`` (it is ``x0 - s``, recomputed each step).

Where the state lives: per param, the arrays (``s``, ``p0``, ``exp_avg``, ``exp_avg_sq`` /
``x0``) and ``step``, in ``opt.state`` as for every pyopt optimizer; the estimate (``d`` and its
accumulators, and the count of steps) is optimizer-wide, in ``opt.global_state`` and in the
``"global_state"`` entry of ``state_dict()`` (plain numbers: ``pyopt.save``/``pyopt.load`` keep it
exactly). pytorch-optimizer keeps copies of it in every param group, and so do pyopt.torch's twins
(``pyopt.torch.Prodigy``...: ``param_groups[g]["global_state"]``, saved by torch's state_dict),
whose per-group numpy optimizers step together (``step_together``).

Cost per step, for n elements in all: two numpy passes over the params and their state, about
20n floating-point operations for Prodigy and D-Adapt Adam (four and three state arrays read and
written) and 10n for D-Adapt SGD (two), a few reductions per param, one scratch array of the
largest param's size, and Python overhead per param (so thousands of tiny params cost more than
their elements). Memory: 4n, 3n and 2n elements of state. (On 1M float32 elements they took about
1.3×, 1.3× and 0.6× pyopt.AdamW's time per step, measured on a busy 2-core machine.)
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

from ._pybase import PyOptimizer, real
from .optimizer import ParamsLike, _locked, _saved_real, _saved_step

__all__ = ["Prodigy", "DAdaptAdam", "DAdaptSGD", "step_together"]


class _DistanceAdapted(PyOptimizer):
    """What the three share: one estimate for all groups (``global_state``), its hyperparameters
    equal in every group, the two-pass step and the checks."""

    shared: ClassVar[tuple[str, ...]] = ()  # hyperparameters of the estimate: the same in every group
    estimate: ClassVar[tuple[str, ...]] = ()  # global_state entries besides "step" (floats)

    def __init__(self, params: ParamsLike, defaults: Mapping[str, Any]) -> None:
        self._global: dict[str, Any] = {}  # empty until the first step
        super().__init__(params, defaults)

    # ----- hyperparameters -----------------------------------------------------------------
    def _check_common(self, group: dict[str, Any], where: str) -> dict[str, Any]:
        """lr, d0, growth_rate, weight_decay and the flags every one of them has."""
        out = dict(group)
        for key in ("lr", "d0", "growth_rate", "weight_decay"):
            out[key] = real(where, key, group[key])
        _require(where, "lr", out["lr"], out["lr"] >= 0, "must be >= 0")
        _require(where, "d0", out["d0"], 0 < out["d0"] < math.inf, "must be > 0 and finite")
        _require(where, "growth_rate", out["growth_rate"], out["growth_rate"] >= 1, "must be >= 1 (inf: no limit)")
        _require(where, "weight_decay", out["weight_decay"], out["weight_decay"] >= 0, "must be >= 0")
        for key in ("weight_decouple", "fixed_decay", "maximize"):
            out[key] = _flag(where, key, group[key])
        return out

    def _check_shared(self, groups: Sequence[Mapping[str, Any]]) -> None:
        for g, group in enumerate(groups[1:], 1):
            self._check_same(groups[0], group, f"{self._owner_label} (param group {g})")

    def _check_same(self, first: Mapping[str, Any], group: Mapping[str, Any], where: str) -> None:
        """``group`` has param group 0's (``first``) hyperparameters of the estimate."""
        for key in self.shared:
            if group[key] != first[key]:
                raise ValueError(
                    f"{where}: {key} is {group[key]!r}, param group 0's is {first[key]!r}; {type(self).__name__} "
                    f"keeps one distance estimate for all params, whose {', '.join(self.shared)} must be the same "
                    "in every group (to freeze a group, pass None as its grads)")

    def _new_group(self, param_group: Mapping[str, Any], where: str) -> Any:
        group = super()._new_group(param_group, where)
        if self.param_groups:
            self._check_same(self._check_hypers({k: self.param_groups[0][k] for k in self.defaults},
                                                f"{self._owner_label} (param group 0)"), group, where)
        return group

    def _groups_checked(self) -> list[dict[str, Any]]:
        hypers = super()._groups_checked()
        self._check_shared(hypers)
        return hypers

    # ----- stepping ------------------------------------------------------------------------
    def step(self, grads: Any) -> None:
        """Update every param in place from its gradient (see ``PyOptimizer.step``: the same
        forms, checks and all-or-nothing rule). The estimate is computed from the params that
        have a gradient (``None`` skips a param)."""
        with self._lock:
            hypers, items = self._prepare(grads)
            if not self._global:
                self._global = {"step": 0, **self._initial_estimate(hypers[0])}
            self._advance(items, hypers[0], self._global)

    def _prepare(self, grads: Any) -> tuple[list[dict[str, Any]], list[tuple[np.ndarray, np.ndarray,
                                                                             dict[str, Any], Mapping[str, Any]]]]:
        """Everything a step checks, and the attached schedules run (put back if their lrs are
        refused); nothing else changes. Returns each group's hyperparameters and the (param,
        gradient, state, its group's hyperparameters) of the params with a gradient."""
        hypers, checked = self._checked_and_scheduled(grads)
        owner = [g for g, group in enumerate(self.param_groups) for _ in group["params"]]
        return hypers, [(self._params[i], g, self._state[i], hypers[owner[i]]) for i, g in checked]

    def _advance(self, items: list[tuple[np.ndarray, np.ndarray, dict[str, Any], Mapping[str, Any]]],
                 hyper: Mapping[str, Any], est: dict[str, Any]) -> None:
        for _, _, state, _ in items:
            state["step"] = state.get("step", 0) + 1
        with np.errstate(all="ignore"):  # inf and NaN propagate silently, as in torch
            self._run(items, hyper, est)

    def _initial_estimate(self, hyper: Mapping[str, Any]) -> dict[str, float]:  # pragma: no cover
        raise NotImplementedError

    def _run(self, items: list[tuple[np.ndarray, np.ndarray, dict[str, Any], Mapping[str, Any]]],
             hyper: Mapping[str, Any], est: dict[str, Any]) -> None:  # pragma: no cover
        """One step: ``items`` are (param, gradient, its state, its group's hyperparameters) of the
        params with a gradient; ``hyper`` the shared hyperparameters; ``est`` the global state."""
        raise NotImplementedError

    def _new_state(self, p: np.ndarray, state: dict[str, Any]) -> None:
        for name in self.slots:
            if name not in state:
                state[name] = p.copy() if name in ("p0", "x0") else np.zeros_like(p)

    # ----- state ---------------------------------------------------------------------------
    @property
    def global_state(self) -> dict[str, Any]:
        """The estimate shared by all params (a copy): ``step`` (steps taken), ``d`` and the
        accumulators; empty before the first step."""
        return dict(self._global)

    def _state_dict_extras(self) -> dict[str, Any]:
        return {"global_state": dict(self._global)} if self._global else {}

    def _restore_state(self, entries: dict[int, Mapping[str, Any]],
                       state_dict: Mapping[str, Any]) -> Callable[[], None]:
        put_per_param = super()._restore_state(entries, state_dict)
        restored = self._saved_global(state_dict.get("global_state"))

        def put_in_place() -> None:
            put_per_param()
            self._global = restored
        return put_in_place

    def _saved_global(self, saved: Any) -> dict[str, Any]:
        where = f"{self._owner_label}: state_dict 'global_state'"
        if saved is None or (isinstance(saved, Mapping) and not saved):
            return {}
        if not isinstance(saved, Mapping):
            raise TypeError(f"{where} must be a dict, got {type(saved).__name__}")
        expected = ("step", *self.estimate)
        if set(saved) != set(expected):
            raise ValueError(f"{where} has the entries {sorted(saved)}; {self.name} keeps {', '.join(expected)}")
        out: dict[str, Any] = {"step": _saved_step(saved["step"], where)}
        for key in self.estimate:
            value = saved[key]
            if isinstance(value, np.ndarray) and value.size == 1:
                value = value.reshape(())[()]
            out[key] = _saved_real(value, f"{where}[{key!r}]")
        return out

    @_locked
    def zero_state(self) -> None:
        """Forget all state, the estimate included (it restarts from ``d0``); hyperparameters are kept."""
        super().zero_state()
        self._global = {}


class Prodigy(_DistanceAdapted):
    r"""Prodigy (Mishchenko & Defazio, 2024; pytorch-optimizer 4.1.0's ``Prodigy``, konstmish/prodigy):
    Adam whose step ``d·lr`` adapts ``d``, an estimate of the distance to the solution. Leave
    ``lr`` at 1 unless training is unstable; ``d_coef`` scales the estimate.

    .. math:: m \leftarrow \beta_1 m + d(1-\beta_1) g;\quad v \leftarrow \beta_2 v + d^2(1-\beta_2) g^2;\quad
              r \leftarrow \beta_3 r + \tfrac{d}{d_0} d_{lr}\, g\cdot(p_0 - p);\quad
              s \leftarrow \beta_3 s + \tfrac{d}{d_0} d_{lr}\, g;

    .. math:: \hat d = d_{coef}\, r / \lVert s\rVert_1;\quad d_{\max} \leftarrow \max(d_{\max}, \hat d);\quad
              d \leftarrow \min(d_{\max}, d\cdot\text{growth\_rate});\quad
              p \leftarrow p - d_{lr}\, m / (\sqrt{v} + d\,\epsilon)

    with ``d_lr = d·lr`` (divided by Adam's bias correction when ``bias_correction``), ``β3``
    ``sqrt(β2)`` when ``None``, the sums over all params, ``d`` and ``d_max`` starting at ``d0``
    (while ``d`` is ``d0``, it first becomes ``max(d, d̂)``), moments and sums taken before the
    update (which takes the ``d_lr`` of the step's start, and the new ``d`` in ``d·eps``). ``eps=None``
    steps by ``atan2(m, sqrt(v))``. ``safeguard_warmup`` takes ``d`` for ``d_lr`` in ``s`` (for
    lr warmups); ``weight_decouple`` decays ``p`` by ``d_lr·weight_decay`` (``fixed_decay``: by
    ``weight_decay``), else the decay is added to the gradient. One estimate for all groups: see
    the module docstring, which also says where the state lives.
    """

    name = "prodigy"
    lr_range = (0.3, 3.0)  # searched by pyopt.tuner (a multiplier on the estimated step)
    slots = ("s", "p0", "exp_avg", "exp_avg_sq")
    tuples = frozenset({"betas"})
    shared = ("lr", "betas", "beta3", "d0", "d_coef", "growth_rate", "bias_correction")
    estimate = ("d", "d_max", "d_numerator")

    def __init__(self, params: ParamsLike, lr: float = 1.0, betas: tuple[float, float] = (0.9, 0.999),
                 beta3: float | None = None, d0: float = 1e-6, d_coef: float = 1.0, growth_rate: float = math.inf,
                 weight_decay: float = 0.0, weight_decouple: bool = True, fixed_decay: bool = False,
                 bias_correction: bool = False, safeguard_warmup: bool = False, eps: float | None = 1e-8, *,
                 maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, beta3=beta3, d0=d0, d_coef=d_coef, growth_rate=growth_rate,
                                      weight_decay=weight_decay, weight_decouple=weight_decouple,
                                      fixed_decay=fixed_decay, bias_correction=bias_correction,
                                      safeguard_warmup=safeguard_warmup, eps=eps, maximize=maximize))

    def _check_hypers(self, group: dict[str, Any], where: str) -> dict[str, Any]:
        out = self._check_common(group, where)
        out["betas"] = _betas(where, group["betas"])
        if group["beta3"] is not None:
            out["beta3"] = real(where, "beta3", group["beta3"])
            _require(where, "beta3", out["beta3"], 0 <= out["beta3"] <= 1, "must be in [0, 1] or None")
        out["d_coef"] = real(where, "d_coef", group["d_coef"])
        _require(where, "d_coef", out["d_coef"], 0 < out["d_coef"] < math.inf, "must be > 0 and finite")
        if group["eps"] is not None:
            out["eps"] = real(where, "eps", group["eps"])
            _require(where, "eps", out["eps"], out["eps"] >= 0, "must be >= 0 or None")
        for key in ("bias_correction", "safeguard_warmup"):
            out[key] = _flag(where, key, group[key])
        return out

    def _initial_estimate(self, hyper: Mapping[str, Any]) -> dict[str, float]:
        return {"d": hyper["d0"], "d_max": hyper["d0"], "d_numerator": 0.0}

    def _run(self, items: list[tuple[np.ndarray, np.ndarray, dict[str, Any], Mapping[str, Any]]],
             hyper: Mapping[str, Any], est: dict[str, Any]) -> None:
        beta1, beta2 = hyper["betas"]
        beta3 = hyper["beta3"] if hyper["beta3"] is not None else math.sqrt(beta2)
        est["step"] += 1
        k = est["step"]
        bias_correction = ((1.0 - math.pow(beta1, k)) / math.sqrt(1.0 - math.pow(beta2, k))
                           if hyper["bias_correction"] else 1.0)
        d, d0 = est["d"], hyper["d0"]
        d_lr = d * hyper["lr"] / bias_correction
        d_numerator = est["d_numerator"] * beta3
        d_denom = 0.0
        scratch = _Scratch()
        for p, g, state, group in items:
            self._new_state(p, state)
            g = _effective_grad(p, g, group, coupled_decay=not group["weight_decouple"])
            s, p0, exp_avg, exp_avg_sq = state["s"], state["p0"], state["exp_avg"], state["exp_avg_sq"]
            t = scratch.like(p)
            np.subtract(p0, p, out=t)
            d_numerator += (d / d0) * d_lr * float(np.dot(g.ravel(), t.ravel()))
            exp_avg *= beta1
            exp_avg += (d * (1.0 - beta1)) * g
            exp_avg_sq *= beta2
            np.multiply(g, g, out=t)
            t *= d * d * (1.0 - beta2)
            exp_avg_sq += t
            s *= beta3
            s += ((d / d0) * (d if group["safeguard_warmup"] else d_lr)) * g
            d_denom += float(np.abs(s, out=t).sum())
        est["d_numerator"] = d_numerator
        if d_denom == 0:
            return  # no gradient yet: nothing moves
        d_hat = _divide(hyper["d_coef"] * d_numerator, d_denom)
        if d == d0:
            d = max(d, d_hat)
        d_max = max(est["d_max"], d_hat)
        est["d"], est["d_max"] = min(d_max, d * hyper["growth_rate"]), d_max
        d = est["d"]
        for p, g, state, group in items:
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            _decoupled_decay(p, group, d_lr)
            t = scratch.like(p)
            np.sqrt(exp_avg_sq, out=t)
            if group["eps"] is not None:
                t += d * group["eps"]
                np.divide(exp_avg, t, out=t)
            else:
                np.arctan2(exp_avg, t, out=t)
            t *= -d_lr
            p += t


class DAdaptAdam(_DistanceAdapted):
    r"""D-Adapt Adam (Defazio & Mishchenko, 2023; pytorch-optimizer 4.1.0's ``DAdaptAdam``,
    facebookresearch/dadaptation V3): Adam whose step ``d·lr`` adapts ``d``, a lower bound on the
    distance to the solution. Leave ``lr`` at 1 unless training is unstable.

    .. math:: r \leftarrow \sqrt{\beta_2}\, r + (1-\sqrt{\beta_2})\, d_{lr} \sum g\cdot\frac{s}{\sqrt v+\epsilon};\quad
              m \leftarrow \beta_1 m + d_{lr}(1-\beta_1) g;\quad v \leftarrow \beta_2 v + (1-\beta_2) g^2;\quad
              s \leftarrow \sqrt{\beta_2}\, s + d_{lr}(1-\sqrt{\beta_2})\, g;

    .. math:: \hat d = \frac{r}{(1-\sqrt{\beta_2})\lVert s\rVert_1};\quad
              d \leftarrow \max\!\big(d, \min(\hat d, d\cdot\text{growth\_rate})\big);\quad
              p \leftarrow p - m / (\sqrt v + \epsilon)

    with ``d_lr = d·lr`` (divided by Adam's bias correction when ``bias_correction``), the sums
    over all params, ``d`` starting at ``d0``. ``weight_decouple`` decays ``p`` by
    ``d_lr·weight_decay`` (``fixed_decay``: by ``weight_decay``), else the decay is added to the
    gradient. One estimate for all groups: see the module docstring.
    """

    name = "dadapt_adam"
    lr_range = (0.3, 3.0)
    slots = ("s", "exp_avg", "exp_avg_sq")
    tuples = frozenset({"betas"})
    shared = ("lr", "betas", "d0", "growth_rate", "bias_correction")
    estimate = ("d", "numerator_weighted")

    def __init__(self, params: ParamsLike, lr: float = 1.0, betas: tuple[float, float] = (0.9, 0.999),
                 d0: float = 1e-6, growth_rate: float = math.inf, weight_decay: float = 0.0,
                 weight_decouple: bool = False, fixed_decay: bool = False, bias_correction: bool = False,
                 eps: float = 1e-8, *, maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, d0=d0, growth_rate=growth_rate, weight_decay=weight_decay,
                                      weight_decouple=weight_decouple, fixed_decay=fixed_decay,
                                      bias_correction=bias_correction, eps=eps, maximize=maximize))

    def _check_hypers(self, group: dict[str, Any], where: str) -> dict[str, Any]:
        out = self._check_common(group, where)
        out["betas"] = _betas(where, group["betas"])
        out["eps"] = real(where, "eps", group["eps"])
        _require(where, "eps", out["eps"], out["eps"] >= 0, "must be >= 0")
        out["bias_correction"] = _flag(where, "bias_correction", group["bias_correction"])
        return out

    def _initial_estimate(self, hyper: Mapping[str, Any]) -> dict[str, float]:
        return {"d": hyper["d0"], "numerator_weighted": 0.0}

    def _run(self, items: list[tuple[np.ndarray, np.ndarray, dict[str, Any], Mapping[str, Any]]],
             hyper: Mapping[str, Any], est: dict[str, Any]) -> None:
        beta1, beta2 = hyper["betas"]
        beta2_sq = math.sqrt(beta2)
        lr = hyper["lr"]
        d = est["d"]
        est["step"] += 1
        k = est["step"]
        d_lr = d * lr
        if hyper["bias_correction"]:
            d_lr /= (1.0 - beta1**k) / math.sqrt(1.0 - beta2**k)
        sk_l1 = 0.0
        numerator = 0.0
        scratch = _Scratch()
        for p, g, state, group in items:
            self._new_state(p, state)
            g = _effective_grad(p, g, group, coupled_decay=not group["weight_decouple"])
            s, exp_avg, exp_avg_sq = state["s"], state["exp_avg"], state["exp_avg_sq"]
            t = scratch.like(p)
            np.sqrt(exp_avg_sq, out=t)
            t += group["eps"]
            np.divide(s, t, out=t)
            numerator += d_lr * float(np.dot(g.ravel(), t.ravel()))
            exp_avg *= beta1
            exp_avg += (d_lr * (1.0 - beta1)) * g
            exp_avg_sq *= beta2
            np.multiply(g, g, out=t)
            t *= 1.0 - beta2
            exp_avg_sq += t
            s *= beta2_sq
            s += (d_lr * (1.0 - beta2_sq)) * g
            sk_l1 += float(np.abs(s, out=t).sum())
        if sk_l1 == 0:
            return  # no gradient yet: nothing moves
        weighted = _lerp(est["numerator_weighted"], numerator, 1.0 - beta2_sq)
        est["numerator_weighted"] = weighted
        if lr > 0.0:
            d_hat = _divide(weighted, (1.0 - beta2_sq) * sk_l1)
            est["d"] = max(d, min(d_hat, d * hyper["growth_rate"]))
        for p, g, state, group in items:
            t = scratch.like(p)
            np.sqrt(state["exp_avg_sq"], out=t)
            t += group["eps"]
            _decoupled_decay(p, group, d_lr)
            np.divide(state["exp_avg"], t, out=t)
            p -= t


class DAdaptSGD(_DistanceAdapted):
    r"""D-Adapt SGD (Defazio & Mishchenko, 2023; pytorch-optimizer 4.1.0's ``DAdaptSGD``,
    facebookresearch/dadaptation V3): dual averaging with momentum, stepped by ``d·lr/‖g₀‖``, ``d``
    a lower bound on the distance to the solution and ``g₀`` the first gradient (of all params).
    Leave ``lr`` at 1 unless training is unstable.

    .. math:: r \leftarrow r + d_{lr}\, g\cdot s;\quad s \leftarrow s + d_{lr}\, g;\quad
              d \leftarrow \max\!\big(d, \min(2r/\lVert s\rVert_2, d\cdot\text{growth\_rate})\big);\quad
              p \leftarrow \mathrm{lerp}(p, x_0 - s, 1 - \text{momentum})

    with ``d_lr = d·lr/‖g₀‖``, the sums over all params, ``d`` starting at ``d0``, ``x0`` each
    param's value at its first step. ``weight_decouple`` decays ``p`` by ``d_lr·weight_decay``
    (``fixed_decay``: by ``weight_decay``), else the decay is added to the gradient. Until a
    gradient is non-zero, steps change nothing. One estimate for all groups: see the module
    docstring.
    """

    name = "dadapt_sgd"
    lr_range = (0.3, 3.0)
    slots = ("s", "x0")
    shared = ("lr", "d0", "growth_rate")
    estimate = ("d", "numerator_weighted", "g0_norm")

    def __init__(self, params: ParamsLike, lr: float = 1.0, momentum: float = 0.9, d0: float = 1e-6,
                 growth_rate: float = math.inf, weight_decay: float = 0.0, weight_decouple: bool = False,
                 fixed_decay: bool = False, *, maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, d0=d0, growth_rate=growth_rate,
                                      weight_decay=weight_decay, weight_decouple=weight_decouple,
                                      fixed_decay=fixed_decay, maximize=maximize))

    def _check_hypers(self, group: dict[str, Any], where: str) -> dict[str, Any]:
        out = self._check_common(group, where)
        out["momentum"] = real(where, "momentum", group["momentum"])
        _require(where, "momentum", out["momentum"], 0 <= out["momentum"] < 1, "must be in [0, 1)")
        return out

    def _initial_estimate(self, hyper: Mapping[str, Any]) -> dict[str, float]:
        return {"d": hyper["d0"], "numerator_weighted": 0.0, "g0_norm": 0.0}

    def _run(self, items: list[tuple[np.ndarray, np.ndarray, dict[str, Any], Mapping[str, Any]]],
             hyper: Mapping[str, Any], est: dict[str, Any]) -> None:
        if est["step"] == 0:  # (until a step has run: the first non-zero gradient)
            total = 0.0
            for _, g, _, _ in items:
                flat = g.ravel().astype(np.float64)
                total += float(np.dot(flat, flat))
            est["g0_norm"] = math.sqrt(total)
        g0_norm = est["g0_norm"]
        if g0_norm == 0:
            return  # no gradient yet: nothing moves
        lr = hyper["lr"]
        d = est["d"]
        d_lr = d * lr / g0_norm
        numerator = est["numerator_weighted"]
        sk_sq = 0.0
        scratch = _Scratch()
        for p, g, state, group in items:
            self._new_state(p, state)
            _decoupled_decay(p, group, d_lr)
            g = _effective_grad(p, g, group, coupled_decay=not group["weight_decouple"])
            s = state["s"]
            numerator += d_lr * float(np.dot(g.ravel(), s.ravel()))
            s += d_lr * g
            t = scratch.like(p)
            sk_sq += float(np.square(s, out=t).sum())
        est["numerator_weighted"] = numerator
        if lr > 0.0:
            d_hat = _divide(2.0 * numerator, math.sqrt(sk_sq))
            est["d"] = max(d, min(d_hat, d * hyper["growth_rate"]))
        est["step"] += 1
        for p, g, state, group in items:
            t = scratch.like(p)
            np.subtract(state["x0"], state["s"], out=t)  # z
            _lerp_into(p, t, 1.0 - group["momentum"])


def step_together(optimizers: Sequence[_DistanceAdapted], grads: Sequence[Any],
                  naming: Callable[[int], Any] = lambda k: contextlib.nullcontext()) -> None:
    """One step of several optimizers of one class as if their param groups were those of one
    optimizer: one estimate from the sums over all of them, a copy of it left in each (pyopt.torch
    steps its param groups' numpy optimizers so). ``naming(k)``: a context manager around the
    checks of optimizer k (to rename its errors). All are checked before any changes; they may
    have no attached schedules."""
    if len({type(opt) for opt in optimizers}) > 1:
        raise TypeError(f"step_together: optimizers of one class, got {sorted({type(o).__name__ for o in optimizers})}")
    if not optimizers:
        return
    with contextlib.ExitStack() as locks:
        for opt in optimizers:
            locks.enter_context(opt._lock)
            if opt._schedules:
                raise ValueError(f"{opt._owner_label}: step_together runs no attached schedules")
        hypers: list[dict[str, Any]] = []
        items: list[tuple[np.ndarray, np.ndarray, dict[str, Any], Mapping[str, Any]]] = []
        for k, (opt, g) in enumerate(zip(optimizers, grads)):
            with naming(k):
                opt_hypers, opt_items = opt._prepare(g)
            hypers += opt_hypers
            items += opt_items
        first = optimizers[0]
        first._check_shared(hypers)
        est = next((dict(opt._global) for opt in optimizers if opt._global), None)
        if est is None:
            est = {"step": 0, **first._initial_estimate(hypers[0])}
        first._advance(items, hypers[0], est)
        for opt in optimizers:
            opt._global = dict(est)


# ----- the pieces they share ------------------------------------------------------------------
class _Scratch:
    """One scratch buffer per dtype, as large as the largest param so far (its views serve each
    param in turn)."""

    def __init__(self) -> None:
        self._buffers: dict[np.dtype, np.ndarray] = {}

    def like(self, p: np.ndarray) -> np.ndarray:
        buf = self._buffers.get(p.dtype)
        if buf is None or buf.size < p.size:
            buf = self._buffers[p.dtype] = np.empty(p.size, p.dtype)
        return buf[: p.size].reshape(p.shape)


def _effective_grad(p: np.ndarray, g: np.ndarray, group: Mapping[str, Any], coupled_decay: bool) -> np.ndarray:
    """The gradient the step uses: negated when maximizing, plus ``weight_decay · p`` for coupled
    decay (a new array then; the caller's gradient is never written)."""
    if group["maximize"]:
        g = -g
    if coupled_decay and group["weight_decay"] > 0.0:
        g = g + group["weight_decay"] * p
    return g


def _decoupled_decay(p: np.ndarray, group: Mapping[str, Any], d_lr: float) -> None:
    weight_decay = group["weight_decay"]
    if weight_decay != 0.0 and group["weight_decouple"]:
        p *= 1.0 - weight_decay * (1.0 if group["fixed_decay"] else d_lr)


def _divide(numerator: float, denominator: float) -> float:
    """IEEE division of Python floats (x/0 is ±inf or NaN, as torch's tensors give, not an error)."""
    with np.errstate(all="ignore"):
        return float(np.float64(numerator) / np.float64(denominator))


def _lerp(start: float, end: float, weight: float) -> float:
    """torch.lerp's formula on numbers."""
    if abs(weight) < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1.0 - weight)


def _lerp_into(p: np.ndarray, end: np.ndarray, weight: float) -> None:
    """p = torch.lerp(p, end, weight) (torch's formula), in place; ``end`` is scratch, overwritten."""
    w = p.dtype.type(weight)
    if abs(w) < 0.5:  # p + w (end - p)
        end -= p
        end *= w
        p += end
    else:  # end - (end - p)(1 - w)
        p -= end
        p *= p.dtype.type(1) - w
        p += end


def _require(where: str, key: str, value: Any, ok: bool, rule: str) -> None:
    if not ok:
        raise ValueError(f"{where}: invalid {key}: {value} ({rule})")


def _flag(where: str, key: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where}: {key} must be a bool, got {value!r}")
    return bool(value)


def _betas(where: str, value: Any) -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{where}: betas must be a pair of floats (beta1, beta2), got {value!r}")
    out = (real(where, "betas[0]", value[0]), real(where, "betas[1]", value[1]))
    for k, beta in enumerate(out):
        _require(where, f"betas[{k}]", beta, 0 <= beta < 1, "must be in [0, 1)")
    return out
