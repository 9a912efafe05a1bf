"""One tuning study: the optimizer choice and, conditionally, its hyperparameters.

The tuner runs the training loop itself (``train``), so it can time it, report the validation
loss after each epoch for pruning, and stop a diverged run early. A diverged run (a NaN/Inf loss,
or a validation loss above ``DIVERGED_FACTOR`` times the initial one) returns that capped,
finite loss, so the sampler learns from it, and is marked ``diverged`` in the trial's user attrs.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from typing import Any, Callable, Iterator, Sequence

import numpy as np

import pyopt
from pyopt.storage import StorageOptions, parse_precision

from . import owners, space
from .phases import LINE_SEARCH
from .tasks import Task

DIVERGED_FACTOR = 10.0
# On a database server a worker's trials carry heartbeats: a trial whose worker has sent none for
# the grace period is failed and retried by the next worker that starts a trial. The environment
# variable overrides the defaults: "INTERVAL" or "INTERVAL,GRACE" in seconds (grace > interval).
HEARTBEAT_ENV = "PYOPT_TUNE_HEARTBEAT"
HEARTBEAT_DEFAULT = (30, 120)
# PostgreSQL advisory lock key (any constant 64-bit int) that serializes the workers' set-up.
_SETUP_LOCK_KEY = 0x70796F7074  # "pyopt"


class Diverged(Exception):
    pass


def _cap(initial: float) -> float:
    return DIVERGED_FACTOR * max(abs(initial), 1e-3)


def train(task: Task, optimizer: str, hyper: dict[str, Any], seed: int = 0,
          report: Callable[[float, int], bool] | None = None, precision: str = "f32",
          epochs: int | None = None, schedule: dict[str, Any] | None = None) -> tuple[float, dict[str, Any]]:
    """Train ``task`` with ``optimizer`` (``pyopt.create(optimizer, params, **hyper)``) for its
    epochs (or the first ``epochs`` of them: a lower fidelity, the same run cut short); returns
    (final validation loss, info). ``report(val_loss, epoch)`` is called after each epoch and
    returns True to stop (pruning): then optuna.TrialPruned is raised. ``precision``
    (``pyopt.storage.parse_precision``, e.g. "bf16+master+int8"): the params are stored as
    f16/bf16 and the optimizer gets those storage options; the task computes on float32 copies.
    ``schedule`` ({"name": "cosine" | "wsd" | "constant", "warmup": fraction}, see
    ``space.make_schedule``) scales the lr over the steps of *this* run: ``epochs`` x
    ``steps_per_epoch(task, seed)``, so a run cut to fewer epochs gets a complete, shorter
    schedule (not the first part of the full one); info["schedule"] records it with its
    ``total_steps`` and ``warmup_steps``."""
    space.check_tunable(optimizer)
    stored = parse_precision(precision)
    if stored.param_dtype == "float32":
        params = task.init_params(seed)
        computed = lambda: params  # noqa: E731
    else:
        params = {k: np.asarray(v, np.float32).astype(stored.dtype) for k, v in task.init_params(seed).items()}
        computed = lambda: {k: v.astype(np.float32) for k, v in params.items()}  # noqa: E731
    # (only storage options that differ from the defaults: the Python-written optimizers take none)
    options = {k: v for k, v in stored.options.as_dict().items() if v != StorageOptions().as_dict()[k]}
    opt = pyopt.create(optimizer, params, **hyper, **options)
    n_epochs = task.epochs if epochs is None else epochs
    per_epoch, schedule_info = _attach_schedule(task, optimizer, opt, schedule, n_epochs, seed)
    evaluate_mode = getattr(opt, "eval", None)  # schedule-free: validate the averaged params
    rng = np.random.default_rng(seed)
    initial = float(task.validation_loss(computed()))
    cap = _cap(initial)
    info: dict[str, Any] = {"initial_val_loss": initial, "diverged": False, "steps": 0, "epochs": 0}
    if schedule_info is not None:
        info["schedule"] = schedule_info
    start = time.perf_counter()
    val = initial
    try:
        for epoch in range(n_epochs):
            for batch in task.train_batches(epoch, rng):
                loss, grads = task.loss_and_grads(computed(), batch)
                if not math.isfinite(loss):
                    raise Diverged(f"training loss {loss} at epoch {epoch}")
                if opt.step_requires_loss:  # (PolyakSGD, MoMo scale their step by the loss)
                    opt.step(grads, loss=loss)
                else:
                    opt.step(grads)
                info["steps"] += 1
            if per_epoch is not None and info["steps"] != (epoch + 1) * per_epoch:
                raise ValueError(f"task {task.name!r}: epoch {epoch} had {info['steps'] - epoch * per_epoch} "
                                 f"batches, but steps_per_epoch is {per_epoch}: the lr schedule's horizon "
                                 "assumes every epoch has steps_per_epoch batches")
            if evaluate_mode:
                evaluate_mode()
            val = float(task.validation_loss(computed()))
            if evaluate_mode:
                opt.train()
            info["epochs"] = epoch + 1
            if not math.isfinite(val) or val > cap:
                raise Diverged(f"validation loss {val} at epoch {epoch} (initial {initial})")
            if report is not None and report(val, epoch):
                import optuna

                info["seconds"] = time.perf_counter() - start
                raise optuna.TrialPruned(f"pruned after epoch {epoch}: validation loss {val:.6g}")
    except Diverged as exc:
        info.update(diverged=True, reason=str(exc))
        val = cap
    info["seconds"] = time.perf_counter() - start
    return val, info


def steps_per_epoch(task: Task, seed: int = 0) -> int:
    """The optimizer steps (batches) in one epoch of ``task``: its ``steps_per_epoch`` attribute
    (an int, or a method taking no arguments) when it has one, else the batches of epoch 0 counted
    with a generator of its own (``np.random.default_rng(seed)``, so the run's draws are untouched).
    ``train`` checks that every epoch of a scheduled run has exactly that many."""
    declared = getattr(task, "steps_per_epoch", None)
    if callable(declared):
        declared = declared()
    if declared is None:
        declared = sum(1 for _ in task.train_batches(0, np.random.default_rng(seed)))
    if isinstance(declared, bool) or not isinstance(declared, (int, np.integer)) or declared < 1:
        raise ValueError(f"task {task.name!r}: steps_per_epoch must be an int >= 1 (the batches of one epoch, "
                         f"for the lr schedule's horizon), got {declared!r}")
    return int(declared)


def prunable(schedule: dict[str, Any] | None) -> bool:
    """Whether the pruner may stop a run with this schedule: not one that decays. Its loss drops
    as the lr anneals, most at the end (WSD's in its last 20%), so its value at an epoch says
    little about its final one, and the pruner, which compares runs at the same epoch, would stop
    exactly the runs a schedule helps. (Pruning only saves time: a pruned trial counts as well.)"""
    return schedule is None or schedule["name"] == "constant"


def check_schedules(schedules: Any, task: Any, function: Callable[..., float] | None = None) -> tuple[str, ...]:
    """``schedules`` checked (``space.check_schedules``) and allowed for this objective: a task
    that says ``schedules = False`` and a plain objective function (its own loop: the tuner does
    not know how many optimizer steps it takes) get ValueError when any schedule but constant is
    asked for. Returns the normalized tuple."""
    names = space.check_schedules(schedules)
    if not space.searches_schedules(names):
        return names
    if function is not None:
        raise ValueError("schedules (--schedules) need a Task: a plain objective function runs its own loop, so "
                         "the tuner cannot know the steps of a run to fit a schedule to it (attach one inside "
                         "the function)")
    allowed = getattr(task, "schedules", True)
    if allowed is not True:
        raise ValueError(f"schedules (--schedules): task {task.name!r} does not take lr schedules "
                         f"(its 'schedules' attribute is {allowed!r})")
    return names


def _attach_schedule(task: Task, optimizer: str, opt: Any, schedule: dict[str, Any] | None, epochs: int,
                     seed: int) -> tuple[int | None, dict[str, Any] | None]:
    """Attach ``schedule`` over ``epochs`` x steps_per_epoch steps; (steps per epoch, what info
    records), (None, None) without a schedule, (None, the spec) for "constant"."""
    if schedule is None:
        return None, None
    spec = {"name": schedule["name"], "warmup": float(schedule.get("warmup", 0.0))}
    if spec["name"] not in space.SCHEDULES:
        raise ValueError(f"schedules (--schedules): unknown schedule {spec['name']!r}; "
                         f"one of {', '.join(space.SCHEDULES)}")
    if spec["name"] == "constant":
        return None, spec
    if space.schedule_free(optimizer):
        raise ValueError(f"schedules: {optimizer} is schedule-free (it averages its iterates instead of "
                         "decaying the lr), the tuner gives it no schedule")
    per_epoch = steps_per_epoch(task, seed)
    total = epochs * per_epoch
    spec["total_steps"] = total
    spec["warmup_steps"] = int(round(spec["warmup"] * total))
    space.make_schedule(spec, total).attach(opt)
    return per_epoch, spec


def jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    return value


def _draw(trial: Any, optimizers: Sequence[str], budget: str,
          schedules: Sequence[str] = ("constant",)) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
    """The trial's optimizer, hyperparameters (kept in its user attrs for best.json) and lr
    schedule (None unless the study searches ``schedules``; ``space.suggest_schedule``)."""
    name = trial.suggest_categorical("optimizer", list(optimizers))
    hyper = space.suggest(trial, name, budget)
    trial.set_user_attr("hyperparameters", {k: jsonable(v) for k, v in hyper.items()})
    schedule = space.suggest_schedule(trial, name, schedules, budget)
    if schedule is not None:
        trial.set_user_attr("schedule", schedule)
    return name, hyper, schedule


def _train_recorded(trial: Any, task: Task, name: str, hyper: dict[str, Any], seed: int,
                    report: Callable[[float, int], bool], precision: str,
                    epochs: int | None = None, schedule: dict[str, Any] | None = None) -> tuple[float, dict[str, Any]]:
    """``train``, keeping in the trial's user attrs how it went: its error or pruning, and the
    run's diverged / seconds / steps / epochs (and why it diverged), and its schedule's horizon."""
    try:
        value, info = train(task, name, hyper, seed=seed, report=report, precision=precision, epochs=epochs,
                            schedule=schedule)
    except Exception as exc:
        if type(exc).__name__ == "TrialPruned":
            trial.set_user_attr("pruned", True)
            raise
        trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
        raise
    for key in ("diverged", "seconds", "steps", "epochs"):
        trial.set_user_attr(key, info[key])
    if "schedule" in info:
        trial.set_user_attr("schedule", info["schedule"])
    if info["diverged"]:
        trial.set_user_attr("diverged_reason", info["reason"])
    return value, info


def make_objective(task: Task, optimizers: Sequence[str], budget: str, seed: int,
                   precision: str = "f32", schedules: Sequence[str] = ("constant",)) -> Callable[[Any], float]:
    """The Optuna objective: choose an optimizer, draw its hyperparameters (and lr schedule, when
    ``schedules`` lists more than "constant"), train (in ``precision``), return the final
    validation loss. Errors raised by the task are kept in the trial's ``error`` attr."""

    def objective(trial: Any) -> float:
        name, hyper, schedule = _draw(trial, optimizers, budget, schedules)
        trial.set_user_attr("precision", precision)

        def report(val: float, epoch: int) -> bool:
            trial.report(val, epoch)
            return prunable(schedule) and bool(trial.should_prune())

        value, info = _train_recorded(trial, task, name, hyper, seed, report, precision, schedule=schedule)
        return value

    return _owned(objective)


def _owned(objective: Callable[[Any], float]) -> Callable[[Any], float]:
    """Mark a trial stopped by Ctrl-C as interrupted (Optuna fails it; ``unfinished``: a warm
    start runs again)."""

    def run(trial: Any) -> float:
        try:
            return objective(trial)
        except KeyboardInterrupt:
            with owners.sigint_ignored():  # a second Ctrl-C must not cut the record short
                _interrupted_trials.add(trial.number)
                trial.set_user_attr("error", owners.INTERRUPTED)
                trial.set_user_attr("unfinished", True)
            raise

    return run


_interrupted_trials: set[int] = set()


class _QuietInterrupts:
    """A logging filter: Optuna logs a trial stopped by Ctrl-C as failed, with a traceback; the
    trial's error says "interrupted" instead."""

    def filter(self, record: Any) -> bool:
        message = record.getMessage()
        for n in list(_interrupted_trials):
            if message.startswith(f"Trial {n} failed with value"):  # the last of its two records
                _interrupted_trials.discard(n)
            if message.startswith(f"Trial {n} failed"):
                return False
        return True


_QUIET_INTERRUPTS = _QuietInterrupts()


def make_function_objective(fn: Callable[..., float], optimizers: Sequence[str], budget: str) -> Callable[[Any], float]:
    """The Optuna objective for a plain ``fn(make_optimizer, report) -> float`` (a loop a Task
    cannot express): ``make_optimizer(params)`` builds the trial's optimizer over the caller's
    params; ``report(value, step)`` records an intermediate value and raises optuna.TrialPruned
    when the pruner says stop. A NaN/Inf result scores DIVERGED_FACTOR times the worst finished
    value (1e10 before any), marked ``diverged``."""
    import optuna

    def objective(trial: Any) -> float:
        name, hyper, _ = _draw(trial, optimizers, budget)

        def make_optimizer(params: Any) -> Any:
            return pyopt.create(name, params, **hyper)

        def report(value: float, step: int) -> None:
            trial.report(float(value), int(step))
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}: {value:.6g}")

        start = time.perf_counter()
        try:
            value = float(fn(make_optimizer, report))
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise
        trial.set_user_attr("seconds", time.perf_counter() - start)
        trial.set_user_attr("diverged", not math.isfinite(value))
        if math.isfinite(value):
            return value
        done = [t.value for t in trial.study.get_trials(deepcopy=False)
                if t.value is not None and math.isfinite(t.value)]
        return DIVERGED_FACTOR * max(map(abs, done)) if done else 1e10

    return _owned(objective)


class _FidelityReached(Exception):
    """A plain function reached the steps of its trial's low fidelity."""


def make_phased_objective(task: Any, optimizers: Sequence[str], budget: str, full: int, precision: str = "f32",
                          function: Callable[..., float] | None = None,
                          schedules: Sequence[str] = ("constant",)) -> Callable[[Any], float]:
    """The objective of the phased strategy (``tuner/phases.py``): the trial's queued user attrs
    say its ``phase``, ``planned_epochs`` (its fidelity; steps for a plain function) and ``seed``.
    Below full fidelity it stops there and ends PRUNED (``low_fidelity``); only phase 3's TPE trials
    ask the pruner (not its line search's). A trial nobody queued (a surplus one of a parallel phase) ends at once, ``surplus``."""
    import optuna

    def objective(trial: Any) -> float:
        attrs = trial.user_attrs
        if "planned_epochs" not in attrs:
            trial.set_user_attr("surplus", True)
            raise optuna.TrialPruned("surplus: no queued trial left in this phase")
        epochs, seed, phase = int(attrs["planned_epochs"]), int(attrs.get("seed", 0)), int(attrs["phase"])
        low = epochs < full
        name, hyper, schedule = _draw(trial, optimizers, budget, schedules)
        trial.set_user_attr("precision", precision)
        prune = phase == 3 and not attrs.get(LINE_SEARCH) and prunable(schedule)
        if function is not None:
            return _phased_function(trial, function, name, hyper, epochs, low, prune)

        def report(val: float, epoch: int) -> bool:
            trial.report(val, epoch)
            return prune and bool(trial.should_prune())

        value, info = _train_recorded(trial, task, name, hyper, seed, report, precision, epochs, schedule)
        if low:
            if info["diverged"]:
                trial.report(value, info["epochs"])  # the capped value is the trial's value
            trial.set_user_attr("low_fidelity", True)
            raise optuna.TrialPruned(f"low fidelity: {epochs} of {full} epochs (phase {phase})")
        return value

    return _owned(objective)


def _phased_function(trial: Any, fn: Callable[..., float], name: str, hyper: dict[str, Any], steps: int, low: bool,
                     prune: bool) -> float:
    import optuna

    last: list[float] = []

    def make_optimizer(params: Any) -> Any:
        return pyopt.create(name, params, **hyper)

    def report(value: float, step: int) -> None:
        trial.report(float(value), int(step))
        last[:] = [float(value)]
        if prune and trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step}: {value:.6g}")
        if low and int(step) + 1 >= steps:
            raise _FidelityReached

    start = time.perf_counter()
    try:
        value = float(fn(make_optimizer, report))
    except _FidelityReached:
        trial.set_user_attr("seconds", time.perf_counter() - start)
        trial.set_user_attr("low_fidelity", True)
        raise optuna.TrialPruned(f"low fidelity: {steps} steps") from None
    except optuna.TrialPruned:
        raise
    except Exception as exc:
        trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
        raise
    trial.set_user_attr("seconds", time.perf_counter() - start)
    trial.set_user_attr("diverged", not math.isfinite(value))
    if math.isfinite(value):
        return value
    done = [t.value for t in trial.study.get_trials(deepcopy=False) if t.value is not None and math.isfinite(t.value)]
    return DIVERGED_FACTOR * max(map(abs, done)) if done else 1e10


SAMPLERS = ("tpe", "random")
PRUNERS = ("hyperband", "median", "none")


def _stamping(sampler_class: Any) -> Any:
    """``sampler_class`` that records the process running each trial (``owners``) as soon as the
    trial exists, before the sampler's work, so a run killed at any point can be cleaned up."""

    class Stamping(sampler_class):  # type: ignore[misc, valid-type]
        def before_trial(self, study: Any, trial: Any) -> None:
            study._storage.set_trial_user_attr(trial._trial_id, "owner", owners.me())
            super().before_trial(study, trial)

    Stamping.__name__ = Stamping.__qualname__ = sampler_class.__name__
    return Stamping


def make_sampler(name: str, seed: int | None, parallel: bool = False) -> Any:
    import optuna

    if name == "tpe":
        import warnings

        with warnings.catch_warnings():  # multivariate and group are "experimental" in Optuna 5.0
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return _stamping(optuna.samplers.TPESampler)(multivariate=True, group=True, seed=seed,
                                                         constant_liar=parallel, n_startup_trials=10)
    if name == "random":
        return _stamping(optuna.samplers.RandomSampler)(seed=seed)
    raise ValueError(f"unknown sampler {name!r}; one of {', '.join(SAMPLERS)}")


def make_pruner(name: str, epochs: int) -> Any:
    """Hyperband (or the median rule) with a warm-up of a quarter of the epochs, so optimizers
    that start fast but end worse are not preferred after one epoch."""
    import optuna

    warmup = max(1, epochs // 4)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=warmup, max_resource=max(epochs, warmup), reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}; one of {', '.join(PRUNERS)}")


def make_storage(url: str | None) -> Any:
    """None or "memory": in memory; "journal:PATH": a JournalStorage file (several processes on
    one machine); any SQLAlchemy URL (sqlite:///..., postgresql://...): RDBStorage, with
    heartbeats for server databases so trials of a dead worker are retried."""
    import optuna

    check_storage(url)
    if url is None or url in ("memory", ":memory:"):
        return None
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        from .journal_lock import OwnedSymlinkLock

        path = url[len("journal:"):]
        return JournalStorage(JournalFileBackend(path, lock_obj=OwnedSymlinkLock(path)))
    if url.startswith("sqlite:"):
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    interval, grace = heartbeat_settings()
    return optuna.storages.RDBStorage(  # a database server
        url, heartbeat_interval=interval, grace_period=grace,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2))


def heartbeat_settings() -> tuple[int, int]:
    """(interval, grace period) in seconds of the heartbeats on a database server:
    HEARTBEAT_DEFAULT, or what $PYOPT_TUNE_HEARTBEAT says ("INTERVAL" gives a grace of 4 x INTERVAL)."""
    text = os.environ.get(HEARTBEAT_ENV, "").strip()
    if not text:
        return HEARTBEAT_DEFAULT
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        values = []
    if len(values) == 1:
        values.append(4 * values[0])
    if len(values) != 2 or values[0] < 1 or values[1] <= values[0]:
        raise ValueError(f"{HEARTBEAT_ENV}={text!r}: expected INTERVAL or INTERVAL,GRACE in whole seconds, "
                         "INTERVAL >= 1 and GRACE > INTERVAL")
    return values[0], values[1]


@contextlib.contextmanager
def setup_lock(url: str | None) -> Iterator[None]:
    """Serializes the set-up of workers that share a PostgreSQL database (a session advisory lock,
    released when its connection closes): Optuna's schema creation is not safe when two workers
    create it at the same moment, and the warm starts would be enqueued twice. A no-op for other
    storages (SQLite and journal files lock by themselves)."""
    if url is None or not url.startswith(("postgresql:", "postgresql+", "postgres:")):
        yield
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": _SETUP_LOCK_KEY})
            connection.commit()
            yield
    finally:
        engine.dispose()


def check_storage(url: str | None) -> None:
    if url is None or url in ("memory", ":memory:") or url.startswith("journal:") and len(url) > len("journal:"):
        return
    if "://" in url:
        if not url.startswith("sqlite:"):
            heartbeat_settings()  # a malformed $PYOPT_TUNE_HEARTBEAT is refused before anything starts
        return
    raise ValueError(f"unknown storage {url!r}: use memory, journal:PATH, sqlite:///PATH or a database URL")


def create_study(task: Task, optimizers: Sequence[str], *, storage: str | None = None, study_name: str | None = None,
                 sampler: str = "tpe", pruner: str = "hyperband", seed: int | None = 0, budget: str = "core",
                 parallel: bool = False, prepare: bool = True, warm_starts: bool = True,
                 schedules: Sequence[str] = ("constant",)) -> Any:
    """Create (or, with the same storage and name, resume) a study. With ``prepare`` (the first
    process of a run), fail the trials of this host whose process is gone (``owners``) and enqueue
    each optimizer's defaults as a warm start unless one ran, failed on its own or waits. A study
    that has trials resumes only with the ``optimizers`` and ``schedules`` it ran with (ValueError
    otherwise: each choice is one distribution for the whole study, and a new trial drawn from
    another would fail)."""
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna.study._optimize").addFilter(_QUIET_INTERRUPTS)  # once: a set of filters
    with setup_lock(storage):
        study = optuna.create_study(
            study_name=study_name or f"pyopt-{task.name}", storage=make_storage(storage), direction="minimize",
            sampler=make_sampler(sampler, seed, parallel), pruner=make_pruner(pruner, task.epochs),
            load_if_exists=True)
        if prepare:
            _prepare(study, task, optimizers, budget, warm_starts, tuple(schedules))
    return study


def _prepare(study: Any, task: Task, optimizers: Sequence[str], budget: str, warm_starts: bool = True,
             schedules: tuple[str, ...] = ("constant",)) -> None:
    """The first process of a run: fail this host's trials whose process is gone and enqueue the
    warm starts that have not run (the phased strategy plans its own: ``warm_starts`` False)."""
    before = tuple(study.user_attrs.get("schedules", ("constant",)))
    if before != schedules and study.get_trials(deepcopy=False):
        raise ValueError(f"schedules (--schedules): study {study.study_name!r} ran with schedules "
                         f"{','.join(before)}; resume it with the same, or start a new --study")
    ran_with = next((tuple(t.distributions["optimizer"].choices) for t in study.get_trials(deepcopy=False)
                     if "optimizer" in t.distributions), None)
    if ran_with is not None and ran_with != tuple(optimizers):  # (Optuna: one distribution per study)
        raise ValueError(f"optimizers (--optimizers): study {study.study_name!r} ran with optimizers "
                         f"{','.join(ran_with)}; resume it with the same, or start a new --study")
    study.set_user_attr("schedules", list(schedules))
    study.set_user_attr("task", task.name)
    study.set_user_attr("budget", budget)
    study.set_user_attr("optimizers", list(optimizers))
    owners.fail_unfinished(study)
    if not warm_starts:
        return
    tried = [t.system_attrs.get("fixed_params", t.params) for t in study.get_trials(deepcopy=False)
             if not t.user_attrs.get("unfinished")]
    baseline, _ = space.portfolio_schedules(schedules)
    for name in optimizers:
        params = {"optimizer": name, **space.default_params(name, budget),
                  **space.schedule_params(name, schedules, budget, baseline)}
        if params not in tried:
            study.enqueue_trial(params, user_attrs={"warm_start": True})
