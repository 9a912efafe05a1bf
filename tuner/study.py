"""One tuning study: the optimizer choice and, conditionally, its hyperparameters.

The tuner runs the training loop itself (``train``), so it can time it, report the validation
loss after each epoch for pruning, and stop a diverged run early. A diverged run (a NaN/Inf loss,
or a validation loss above ``DIVERGED_FACTOR`` times the initial one) returns that capped,
finite loss, so the sampler learns from it, and is marked ``diverged`` in the trial's user attrs.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import numpy as np

import pyopt
from pyopt.storage import StorageOptions, parse_precision

from . import owners, space
from .tasks import Task

DIVERGED_FACTOR = 10.0


class Diverged(Exception):
    pass


def _cap(initial: float) -> float:
    return DIVERGED_FACTOR * max(abs(initial), 1e-3)


def train(task: Task, optimizer: str, hyper: dict[str, Any], seed: int = 0,
          report: Callable[[float, int], bool] | None = None, precision: str = "f32") -> tuple[float, dict[str, Any]]:
    """Train ``task`` with ``optimizer`` (``pyopt.create(optimizer, params, **hyper)``) for its
    epochs; returns (final validation loss, info). ``report(val_loss, epoch)`` is called after each
    epoch and returns True to stop (pruning): then optuna.TrialPruned is raised. ``precision``
    (``pyopt.storage.parse_precision``, e.g. "bf16+master+int8"): the params are stored as
    f16/bf16 and the optimizer gets those storage options; the task computes on float32 copies."""
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
    evaluate_mode = getattr(opt, "eval", None)  # schedule-free: validate the averaged params
    rng = np.random.default_rng(seed)
    initial = float(task.validation_loss(computed()))
    cap = _cap(initial)
    info: dict[str, Any] = {"initial_val_loss": initial, "diverged": False, "steps": 0, "epochs": 0}
    start = time.perf_counter()
    val = initial
    try:
        for epoch in range(task.epochs):
            for batch in task.train_batches(epoch, rng):
                loss, grads = task.loss_and_grads(computed(), batch)
                if not math.isfinite(loss):
                    raise Diverged(f"training loss {loss} at epoch {epoch}")
                opt.step(grads)
                info["steps"] += 1
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


def jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    return value


def _draw(trial: Any, optimizers: Sequence[str], budget: str) -> tuple[str, dict[str, Any]]:
    """The trial's optimizer and hyperparameters (kept in its user attrs for best.json)."""
    name = trial.suggest_categorical("optimizer", list(optimizers))
    hyper = space.suggest(trial, name, budget)
    trial.set_user_attr("hyperparameters", {k: jsonable(v) for k, v in hyper.items()})
    return name, hyper


def make_objective(task: Task, optimizers: Sequence[str], budget: str, seed: int,
                   precision: str = "f32") -> Callable[[Any], float]:
    """The Optuna objective: choose an optimizer, draw its hyperparameters, train (in ``precision``),
    return the final validation loss. Errors raised by the task are kept in the trial's ``error`` attr."""

    def objective(trial: Any) -> float:
        name, hyper = _draw(trial, optimizers, budget)
        trial.set_user_attr("precision", precision)

        def report(val: float, epoch: int) -> bool:
            trial.report(val, epoch)
            return bool(trial.should_prune())

        try:
            value, info = train(task, name, hyper, seed=seed, report=report, precision=precision)
        except Exception as exc:
            if type(exc).__name__ == "TrialPruned":
                trial.set_user_attr("pruned", True)
                raise
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise
        for key in ("diverged", "seconds", "steps", "epochs"):
            trial.set_user_attr(key, info[key])
        if info["diverged"]:
            trial.set_user_attr("diverged_reason", info["reason"])
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
        name, hyper = _draw(trial, optimizers, budget)

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
    return optuna.storages.RDBStorage(  # a database server
        url, heartbeat_interval=30, grace_period=120,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2))


def check_storage(url: str | None) -> None:
    if url is None or url in ("memory", ":memory:") or url.startswith("journal:") and len(url) > len("journal:") \
            or "://" in url:
        return
    raise ValueError(f"unknown storage {url!r}: use memory, journal:PATH, sqlite:///PATH or a database URL")


def create_study(task: Task, optimizers: Sequence[str], *, storage: str | None = None, study_name: str | None = None,
                 sampler: str = "tpe", pruner: str = "hyperband", seed: int | None = 0, budget: str = "core",
                 parallel: bool = False, prepare: bool = True) -> Any:
    """Create (or, with the same storage and name, resume) a study. With ``prepare`` (the first
    process of a run), fail the trials of this host whose process is gone (``owners``) and enqueue
    each optimizer's defaults as a warm start unless one ran, failed on its own or waits."""
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna.study._optimize").addFilter(_QUIET_INTERRUPTS)  # once: a set of filters
    study = optuna.create_study(
        study_name=study_name or f"pyopt-{task.name}", storage=make_storage(storage), direction="minimize",
        sampler=make_sampler(sampler, seed, parallel), pruner=make_pruner(pruner, task.epochs), load_if_exists=True)
    if not prepare:
        return study
    study.set_user_attr("task", task.name)
    study.set_user_attr("budget", budget)
    study.set_user_attr("optimizers", list(optimizers))
    owners.fail_unfinished(study)
    tried = [t.system_attrs.get("fixed_params", t.params) for t in study.get_trials(deepcopy=False)
             if not t.user_attrs.get("unfinished")]
    for name in optimizers:
        params = {"optimizer": name, **space.default_params(name, budget)}
        if params not in tried:
            study.enqueue_trial(params, user_attrs={"warm_start": True})
    return study
