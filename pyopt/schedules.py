r"""Learning-rate schedules: small composable pieces (optax style) that also drive an optimizer.

Every schedule is a plain callable, ``lr = sched(step)`` with ``step`` counted from 0, and pure:
calling it never changes anything. Values are *multipliers* by default (each schedule's peak or
start value ``lr`` defaults to 1.0), or learning rates if you pass ``lr=3e-4`` (``max_lr`` for
one-cycle).

Attaching: ``sched.attach(opt)`` makes ``opt.step(...)`` set every param group's lr from the
schedule *before* the update runs, then advance the schedule, so step ``k`` (from 0) of the
optimizer uses ``sched(k)`` — the sequence torch gives with ``scheduler.step()`` after each
``optimizer.step()``. Two modes:

- ``mode="scale"`` (default, torch's convention): group ``g`` gets ``base_lr[g] * sched(k)``,
  where ``base_lr[g]`` is the group's lr when the schedule was attached. Build the schedule with
  its default ``lr=1.0`` so that its values are factors.
- ``mode="set"``: every group gets ``sched(k)`` itself (an absolute lr, optax's convention).

A schedule attached to an optimizer is saved with it: ``opt.state_dict()`` (and so
``pyopt.save``) holds each attached schedule's state (its step count, base lrs, plateau counters)
under ``"schedules"``. After ``opt.load_state_dict(sd)`` or ``pyopt.load(...)``, attach schedules
built with the same arguments, in the same order; each picks up its saved state, and the lr
sequence continues where it stopped.

``ReduceLROnPlateau`` is the exception to the per-step rule: it changes the groups' lrs only when
you call ``sched.step(metric)`` (once per epoch, say), as torch's does.
"""
from __future__ import annotations

import bisect
import math
import numbers
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from .optimizer import Optimizer

__all__ = [
    "Schedule", "ReduceLROnPlateau", "constant", "step_decay", "multistep", "exponential", "linear",
    "cosine", "warmup_linear", "one_cycle", "wsd", "join", "reduce_on_plateau",
]


# ----- argument checks ---------------------------------------------------------------------
def _real(who: str, name: str, value: Any, *, low: float | None = None, high: float | None = None,
          low_open: bool = False, high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{who}: {name} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{who}: {name} must be finite, got {v}")
    if low is not None and (v < low or (low_open and v == low)):
        raise ValueError(f"{who}: {name} must be {'>' if low_open else '>='} {low}, got {v}")
    if high is not None and (v > high or (high_open and v == high)):
        raise ValueError(f"{who}: {name} must be {'<' if high_open else '<='} {high}, got {v}")
    return v


def _int(who: str, name: str, value: Any, *, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{who}: {name} must be an int, got {value!r}")
    v = int(value)
    if v < low:
        raise ValueError(f"{who}: {name} must be >= {low}, got {v}")
    return v


def _choice(who: str, name: str, value: Any, options: Sequence[str]) -> str:
    if value not in options:
        raise ValueError(f"{who}: {name} must be one of {', '.join(map(repr, options))}, got {value!r}")
    return str(value)


# Keys a schedule's state_dict holds (ReduceLROnPlateau's add its counters and lr).
_SCHEDULE_KEYS = frozenset({"kind", "count", "mode", "base_lrs"})
_PLATEAU_KEYS = frozenset({"best", "num_bad_epochs", "cooldown_counter", "last_epoch", "lr"})


def check_saved_schedule(state: Any, who: str) -> None:
    """A schedule state as ``Schedule.state_dict`` writes it (any kind): TypeError / ValueError
    otherwise. Used for the states a checkpoint holds before their schedules are attached."""
    if not isinstance(state, Mapping) or "kind" not in state or "count" not in state:
        raise ValueError(f"{who}: not a schedule state (needs 'kind' and 'count'): {state!r:.80}")
    if not isinstance(state["kind"], str):
        raise TypeError(f"{who}: saved kind must be a string, got {state['kind']!r}")
    allowed = _SCHEDULE_KEYS | (_PLATEAU_KEYS if state["kind"] == ReduceLROnPlateau.kind else frozenset())
    unknown = sorted(map(repr, set(state) - allowed))
    if unknown:
        raise ValueError(f"{who}: saved schedule state has unknown key(s) {', '.join(unknown)}")
    _int(who, "saved count", state["count"])
    _choice(who, "saved mode", state.get("mode", "scale"), ("scale", "set"))
    bases = state.get("base_lrs")
    if bases is not None and (not isinstance(bases, (list, tuple))
                              or any(isinstance(b, bool) or not isinstance(b, numbers.Real) for b in bases)):
        raise ValueError(f"{who}: saved base_lrs must be a list of numbers, got {bases!r}")


# ----- the base class ----------------------------------------------------------------------
class Schedule:
    """A learning-rate schedule: ``sched(step) -> float``, attachable to an optimizer.

    Subclasses implement ``value(step)`` for an int ``step >= 0``. The state that travels with an
    optimizer checkpoint is ``count`` (optimizer steps taken under this schedule), ``mode`` and
    the groups' ``base_lrs``.
    """

    kind: str = "schedule"

    def __init__(self) -> None:
        self.count = 0
        self.mode = "scale"
        self.base_lrs: list[float] | None = None
        self._opt: Optimizer | None = None

    def value(self, step: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, step: int) -> float:
        step = _int(f"{self.kind} schedule", "step", step)
        return float(self.value(step))

    def __repr__(self) -> str:
        return f"<pyopt schedule {self.kind}, count={self.count}>"

    # ----- optimizer hook ----------------------------------------------------------------
    def attach(self, opt: "Optimizer", mode: str = "scale") -> "Schedule":
        """Drive ``opt``'s param groups' lr from this schedule (see the module docstring).

        Returns the schedule. If ``opt`` was just restored from a checkpoint holding schedule
        states not yet claimed, this schedule takes the next one (and its step count).
        """
        who = f"{self.kind}.attach"
        mode = _choice(who, "mode", mode, ("scale", "set"))
        if self._opt is not None:
            raise ValueError(f"{who}: this schedule is already attached to an optimizer; detach() it first")
        if not hasattr(opt, "_schedules"):
            raise TypeError(f"{who}: opt must be a pyopt optimizer, got {type(opt).__name__}")
        self.mode = mode
        self.base_lrs = [float(g["lr"]) for g in opt.param_groups]
        opt._attach_schedule(self)
        self._opt = opt
        return self

    def detach(self) -> None:
        """Stop driving the optimizer; group lrs keep their last values."""
        if self._opt is not None:
            self._opt._schedules.remove(self)
            self._opt = None

    def _before_step(self, opt: "Optimizer") -> None:
        v = self.value(self.count)
        groups = opt.param_groups
        bases = self.base_lrs
        if bases is None or len(bases) != len(groups):  # a group was added after attaching
            bases = (bases or []) + [float(g["lr"]) for g in groups[len(bases or []):]]
            self.base_lrs = bases
        for group, base in zip(groups, bases):
            lr = v if self.mode == "set" else base * v
            if group["lr"] != lr:
                group["lr"] = lr
        self.count += 1

    # ----- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The schedule's progress as JSON-able values (not its arguments)."""
        return {"kind": self.kind, "count": self.count, "mode": self.mode, "base_lrs": self.base_lrs}

    def _check_state(self, state: Any) -> None:
        who = f"{self.kind} schedule"
        check_saved_schedule(state, who)
        if state["kind"] != self.kind:
            raise ValueError(f"{who}: the saved schedule state is for a {state['kind']!r} schedule")

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore progress saved by ``state_dict``."""
        self._check_state(state)
        self.count = int(state["count"])
        self.mode = str(state.get("mode", "scale"))
        bases = state.get("base_lrs")
        self.base_lrs = None if bases is None else [float(b) for b in bases]


class _Fn(Schedule):
    def __init__(self, kind: str, fn: Callable[[int], float]) -> None:
        super().__init__()
        self.kind = kind
        self._fn = fn

    def value(self, step: int) -> float:
        return self._fn(step)


# ----- primitives --------------------------------------------------------------------------
def constant(lr: float = 1.0) -> Schedule:
    r"""``lr`` at every step: :math:`\eta_t = \eta`."""
    lr = _real("constant", "lr", lr)
    return _Fn("constant", lambda t: lr)


def step_decay(step_size: int, gamma: float = 0.1, lr: float = 1.0) -> Schedule:
    r"""Decay by ``gamma`` every ``step_size`` steps (torch StepLR):
    :math:`\eta_t = \eta\,\gamma^{\lfloor t / s \rfloor}`."""
    who = "step_decay"
    step_size = _int(who, "step_size", step_size, low=1)
    gamma = _real(who, "gamma", gamma, low=0.0)
    lr = _real(who, "lr", lr)
    return _Fn("step_decay", lambda t: lr * gamma ** (t // step_size))


def multistep(milestones: Sequence[int], gamma: float = 0.1, lr: float = 1.0) -> Schedule:
    r"""Decay by ``gamma`` at each milestone (torch MultiStepLR):
    :math:`\eta_t = \eta\,\gamma^{\#\{m_i \le t\}}` (a milestone given twice counts twice)."""
    who = "multistep"
    if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Sequence):
        raise TypeError(f"{who}: milestones must be a list of ints, got {milestones!r}")
    ms = sorted(_int(who, "milestones[i]", m) for m in milestones)
    gamma = _real(who, "gamma", gamma, low=0.0)
    lr = _real(who, "lr", lr)
    return _Fn("multistep", lambda t: lr * gamma ** bisect.bisect_right(ms, t))


def exponential(gamma: float, lr: float = 1.0) -> Schedule:
    r"""Decay by ``gamma`` every step (torch ExponentialLR): :math:`\eta_t = \eta\,\gamma^t`."""
    gamma = _real("exponential", "gamma", gamma, low=0.0)
    lr = _real("exponential", "lr", lr)
    return _Fn("exponential", lambda t: lr * gamma**t)


def linear(start: float, end: float, steps: int) -> Schedule:
    r"""From ``start`` to ``end`` in ``steps`` steps, then ``end`` (optax.linear_schedule):
    :math:`\eta_t = s + (e - s)\min(t, n)/n`."""
    who = "linear"
    start = _real(who, "start", start)
    end = _real(who, "end", end)
    steps = _int(who, "steps", steps)
    if steps == 0:
        return _Fn("linear", lambda t: end)
    return _Fn("linear", lambda t: start + (end - start) * min(t, steps) / steps)


def _cosine_piece(start: float, end: float, steps: int) -> Callable[[int], float]:
    if steps == 0:
        return lambda t: end
    return lambda t: end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * min(t, steps) / steps))


def join(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    r"""Run ``schedules[0]`` until ``boundaries[0]``, then ``schedules[1]`` from its own step 0,
    and so on (optax.join_schedules): with :math:`b_{i-1} \le t < b_i`, :math:`\eta_t = f_i(t - b_{i-1})`."""
    who = "join"
    if not schedules or len(boundaries) != len(schedules) - 1:
        raise ValueError(f"{who}: needs n schedules and n-1 boundaries, got {len(schedules)} and {len(boundaries)}")
    for s in schedules:
        if not isinstance(s, Schedule) or isinstance(s, ReduceLROnPlateau):
            raise TypeError(f"{who}: schedules must be step schedules, got {s!r}")
    bs = [_int(who, "boundaries[i]", b) for b in boundaries]
    if any(b1 < b0 for b0, b1 in zip(bs, bs[1:])):
        raise ValueError(f"{who}: boundaries must not decrease, got {bs}")
    parts = list(schedules)

    def fn(t: int) -> float:
        i = bisect.bisect_right(bs, t)
        return parts[i].value(t - (bs[i - 1] if i else 0))

    return _Fn("join", fn)


# ----- composites --------------------------------------------------------------------------
def cosine(total_steps: int, lr: float = 1.0, warmup_steps: int = 0, warmup_start: float = 0.0,
           floor: float = 0.0) -> Schedule:
    r"""Optional linear warmup, then cosine decay to ``floor`` (optax.warmup_cosine_decay_schedule;
    without warmup, torch CosineAnnealingLR with ``T_max=total_steps``, ``eta_min=floor``).

    With :math:`W` = ``warmup_steps`` and :math:`T` = ``total_steps`` (warmup included):
    :math:`\eta_t = \eta_0 + (\eta - \eta_0)\,t/W` for :math:`t < W`;
    :math:`\eta_t = \eta_{min} + \tfrac12(\eta - \eta_{min})(1 + \cos(\pi\,\tfrac{t - W}{T - W}))`
    for :math:`W \le t \le T`; :math:`\eta_{min}` afterwards (torch would rise again past ``T``).
    """
    who = "cosine"
    total_steps = _int(who, "total_steps", total_steps, low=1)
    lr = _real(who, "lr", lr)
    warmup_steps = _int(who, "warmup_steps", warmup_steps)
    if warmup_steps >= total_steps:
        raise ValueError(f"{who}: warmup_steps ({warmup_steps}) must be < total_steps ({total_steps})")
    warmup_start = _real(who, "warmup_start", warmup_start)
    floor = _real(who, "floor", floor)
    warm = linear(warmup_start, lr, warmup_steps)
    decay = _cosine_piece(lr, floor, total_steps - warmup_steps)
    return _Fn(who, lambda t: warm.value(t) if t < warmup_steps else decay(t - warmup_steps))


def warmup_linear(total_steps: int, warmup_steps: int, lr: float = 1.0, warmup_start: float = 0.0,
                  end: float = 0.0) -> Schedule:
    r"""Linear warmup from ``warmup_start`` to ``lr`` over ``warmup_steps``, then linear decay to
    ``end`` at ``total_steps`` (warmup included), then ``end`` (transformers'
    get_linear_schedule_with_warmup when ``warmup_start = end = 0``):
    :math:`\eta_t = \eta_0 + (\eta - \eta_0)\,t/W` for :math:`t < W`, else
    :math:`\eta + (\eta_{end} - \eta)\min(t - W, T - W)/(T - W)`."""
    who = "warmup_linear"
    total_steps = _int(who, "total_steps", total_steps, low=1)
    warmup_steps = _int(who, "warmup_steps", warmup_steps)
    if warmup_steps >= total_steps:
        raise ValueError(f"{who}: warmup_steps ({warmup_steps}) must be < total_steps ({total_steps})")
    lr = _real(who, "lr", lr)
    warmup_start = _real(who, "warmup_start", warmup_start)
    end = _real(who, "end", end)
    warm = linear(warmup_start, lr, warmup_steps)
    decay = linear(lr, end, total_steps - warmup_steps)
    return _Fn(who, lambda t: warm.value(t) if t < warmup_steps else decay.value(t - warmup_steps))


def one_cycle(total_steps: int, max_lr: float = 1.0, pct_start: float = 0.3, anneal: str = "cos",
              div_factor: float = 25.0, final_div_factor: float = 1e4, three_phase: bool = False) -> Schedule:
    r"""The 1cycle policy (Smith & Topin, 2017) with torch OneCycleLR's arithmetic.

    Starts at :math:`\eta_0 = \eta_{max}/d`, anneals up to :math:`\eta_{max}` at step
    :math:`pT - 1`, then down to :math:`\eta_0/f` at step :math:`T - 1` (``three_phase``: down to
    :math:`\eta_0` at :math:`2pT - 2`, then to :math:`\eta_0/f` at :math:`T - 1`). A phase from
    :math:`a` to :math:`b` over steps :math:`[s, e]` gives, with :math:`x = (t - s)/(e - s)`,
    ``cos``: :math:`b + \tfrac12(a - b)(1 + \cos\pi x)`; ``linear``: :math:`a + (b - a)x`.
    After step :math:`T - 1` the value stays :math:`\eta_0/f` (torch raises instead). Momentum is
    not cycled (torch's ``cycle_momentum=False``).
    """
    who = "one_cycle"
    total_steps = _int(who, "total_steps", total_steps, low=2)
    max_lr = _real(who, "max_lr", max_lr)
    pct_start = _real(who, "pct_start", pct_start, low=0.0, high=1.0, low_open=True, high_open=True)
    anneal = _choice(who, "anneal", anneal, ("cos", "linear"))
    div_factor = _real(who, "div_factor", div_factor, low=0.0, low_open=True)
    final_div_factor = _real(who, "final_div_factor", final_div_factor, low=0.0, low_open=True)
    if not isinstance(three_phase, bool):
        raise TypeError(f"{who}: three_phase must be a bool, got {three_phase!r}")
    initial = max_lr / div_factor
    minimum = initial / final_div_factor
    up_end = float(pct_start * total_steps) - 1
    if three_phase:
        phases = [(up_end, initial, max_lr), (float(2 * pct_start * total_steps) - 2, max_lr, initial),
                  (total_steps - 1, initial, minimum)]
    else:
        phases = [(up_end, initial, max_lr), (total_steps - 1, max_lr, minimum)]
    starts = [0.0] + [e for e, _, _ in phases[:-1]]
    if any(e <= s for (e, _, _), s in zip(phases, starts)):
        raise ValueError(f"{who}: pct_start={pct_start} with total_steps={total_steps} leaves a phase with no steps")

    def fn(t: int) -> float:
        t = min(t, total_steps - 1)
        start = 0.0
        for i, (end_step, a, b) in enumerate(phases):
            if t <= end_step or i == len(phases) - 1:
                x = (t - start) / (end_step - start)
                if anneal == "cos":
                    return b + (a - b) / 2.0 * (math.cos(math.pi * x) + 1)
                return (b - a) * x + a
            start = end_step
        raise AssertionError  # pragma: no cover

    return _Fn(who, fn)


def wsd(total_steps: int, lr: float = 1.0, warmup_steps: int = 0, decay_fraction: float = 0.1,
        floor: float = 0.0, warmup_start: float = 0.0, decay: str = "linear") -> Schedule:
    r"""Warmup-stable-decay ("trapezoidal"; Hu et al. 2024, MiniCPM): linear warmup over
    ``warmup_steps`` from ``warmup_start`` to ``lr``, constant ``lr``, then a decay to ``floor`` over
    the last :math:`D = \mathrm{round}(\text{decay\_fraction}\cdot T)` steps, then ``floor``.

    With :math:`x = (t - (T - D))/D` in the decay: ``linear``: :math:`\eta + (\eta_{min} - \eta)x`;
    ``cosine``: :math:`\eta_{min} + \tfrac12(\eta - \eta_{min})(1 + \cos\pi x)`;
    ``sqrt``: :math:`\eta + (\eta_{min} - \eta)\sqrt{x}` (the "1 - sqrt" cooldown).
    """
    who = "wsd"
    total_steps = _int(who, "total_steps", total_steps, low=1)
    lr = _real(who, "lr", lr)
    warmup_steps = _int(who, "warmup_steps", warmup_steps)
    decay_fraction = _real(who, "decay_fraction", decay_fraction, low=0.0, high=1.0)
    floor = _real(who, "floor", floor)
    warmup_start = _real(who, "warmup_start", warmup_start)
    decay = _choice(who, "decay", decay, ("linear", "cosine", "sqrt"))
    decay_steps = int(round(decay_fraction * total_steps))
    stable_end = total_steps - decay_steps
    if warmup_steps > stable_end:
        raise ValueError(f"{who}: warmup_steps ({warmup_steps}) + decay steps ({decay_steps}) exceed "
                         f"total_steps ({total_steps})")
    warm = linear(warmup_start, lr, warmup_steps)

    def fn(t: int) -> float:
        if t < warmup_steps:
            return warm.value(t)
        if t < stable_end:
            return lr
        if t >= total_steps:
            return floor
        x = (t - stable_end) / decay_steps
        if decay == "cosine":
            return floor + (lr - floor) * 0.5 * (1.0 + math.cos(math.pi * x))
        if decay == "sqrt":
            return lr + (floor - lr) * math.sqrt(x)
        return lr + (floor - lr) * x

    return _Fn(who, fn)


# ----- reduce on plateau -------------------------------------------------------------------
class ReduceLROnPlateau(Schedule):
    r"""Cut the lr by ``factor`` when a metric stops improving (torch ReduceLROnPlateau).

    Advanced by ``sched.step(metric)``, not by optimizer steps. A metric :math:`a` improves on the
    best :math:`b` when (``mode``/``threshold_mode``) min/rel: :math:`a < b(1-\theta)`; min/abs:
    :math:`a < b - \theta`; max/rel: :math:`a > b(1+\theta)`; max/abs: :math:`a > b + \theta`.
    After more than ``patience`` calls without improvement, each lr becomes
    :math:`\max(\eta f, \eta_{min})` (kept unchanged if that moves it by ``eps`` or less), and
    ``cooldown`` calls follow during which bad calls are not counted.

    ``sched(step)`` (the step is ignored) is the schedule's own current value, starting at ``lr``;
    attached (``sched.attach(opt)``; ``mode`` is irrelevant), the reductions act on each param
    group's lr directly, with ``min_lr`` a float or one value per group.
    """

    kind = "reduce_on_plateau"

    def __init__(self, mode: str = "min", factor: float = 0.1, patience: int = 10, threshold: float = 1e-4,
                 threshold_mode: str = "rel", cooldown: int = 0, min_lr: float | Sequence[float] = 0.0,
                 eps: float = 1e-8, lr: float = 1.0) -> None:
        super().__init__()
        who = "reduce_on_plateau"
        self.metric_mode = _choice(who, "mode", mode, ("min", "max"))
        self.factor = _real(who, "factor", factor, low=0.0, high=1.0, high_open=True)
        self.patience = _int(who, "patience", patience)
        self.threshold = _real(who, "threshold", threshold, low=0.0)
        self.threshold_mode = _choice(who, "threshold_mode", threshold_mode, ("rel", "abs"))
        self.cooldown = _int(who, "cooldown", cooldown)
        if isinstance(min_lr, (list, tuple)):
            self.min_lrs: float | list[float] = [_real(who, "min_lr[i]", m, low=0.0) for m in min_lr]
        else:
            self.min_lrs = _real(who, "min_lr", min_lr, low=0.0)
        self.eps = _real(who, "eps", eps, low=0.0)
        self.lr = _real(who, "lr", lr)
        self.best = math.inf if self.metric_mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0

    def value(self, step: int) -> float:
        return self.lr

    def attach(self, opt: "Optimizer", mode: str = "scale") -> "Schedule":
        super().attach(opt, mode)
        if isinstance(self.min_lrs, list) and len(self.min_lrs) != len(opt.param_groups):
            self.detach()
            raise ValueError(f"reduce_on_plateau.attach: min_lr has {len(self.min_lrs)} values, "
                             f"the optimizer has {len(opt.param_groups)} param groups")
        return self

    def _before_step(self, opt: "Optimizer") -> None:
        self.count += 1

    def _better(self, a: float) -> bool:
        b, th = self.best, self.threshold
        if self.metric_mode == "min":
            return a < (b * (1.0 - th) if self.threshold_mode == "rel" else b - th)
        return a > (b * (th + 1.0) if self.threshold_mode == "rel" else b + th)

    def _reduce(self, old: float, min_lr: float) -> float:
        new = max(old * self.factor, min_lr)
        return new if old - new > self.eps else old

    def step(self, metric: float) -> None:
        """Record one value of the monitored metric (e.g. the validation loss after an epoch)."""
        if isinstance(metric, bool) or not isinstance(metric, numbers.Real):
            try:
                metric = float(metric)  # numpy scalars, 0-d arrays
            except (TypeError, ValueError):
                raise TypeError(f"reduce_on_plateau.step: metric must be a number, got {metric!r}") from None
        current = float(metric)
        self.last_epoch += 1
        if self._better(current):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            mins = self.min_lrs
            self.lr = self._reduce(self.lr, mins[0] if isinstance(mins, list) else mins)
            if self._opt is not None:
                for i, group in enumerate(self._opt.param_groups):
                    m = mins[i] if isinstance(mins, list) else mins
                    new = self._reduce(float(group["lr"]), m)
                    if new != group["lr"]:
                        group["lr"] = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        out.update(best=self.best, num_bad_epochs=self.num_bad_epochs, cooldown_counter=self.cooldown_counter,
                   last_epoch=self.last_epoch, lr=self.lr)
        return out

    def _check_state(self, state: Any) -> None:
        super()._check_state(state)
        who = "reduce_on_plateau schedule"
        for key in ("num_bad_epochs", "cooldown_counter", "last_epoch"):
            if key not in state:
                raise ValueError(f"{who}: saved state lacks {key!r}")
            _int(who, f"saved {key}", state[key])
        for key in ("best", "lr"):
            v = state.get(key)
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise ValueError(f"{who}: saved {key} must be a number, got {v!r}")

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._check_state(state)
        super().load_state_dict(state)
        self.best = float(state["best"])
        self.num_bad_epochs = int(state["num_bad_epochs"])
        self.cooldown_counter = int(state["cooldown_counter"])
        self.last_epoch = int(state["last_epoch"])
        self.lr = float(state["lr"])


def reduce_on_plateau(mode: str = "min", factor: float = 0.1, patience: int = 10, threshold: float = 1e-4,
                      threshold_mode: str = "rel", cooldown: int = 0, min_lr: float | Sequence[float] = 0.0,
                      eps: float = 1e-8, lr: float = 1.0) -> ReduceLROnPlateau:
    """``ReduceLROnPlateau(...)`` under the lower-case name of the other schedules."""
    return ReduceLROnPlateau(mode, factor, patience, threshold, threshold_mode, cooldown, min_lr, eps, lr)
