"""``pyopt.tuner.tune``: run a study (or one per optimizer), in one or several processes, and write
the results. ``pyopt tune`` is its command line."""
from __future__ import annotations

import multiprocessing
import numbers
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import pyopt
from pyopt._pybase import python_optimizer
from pyopt.storage import parse_precision

from . import owners, report, space
from .study import create_study, make_function_objective, make_objective
from .tasks import Task, load_task

DEFAULT_OPTIMIZERS = ("adamw", "adam", "sgd", "momentum", "nag", "rmsprop", "adagrad", "lion", "radam", "nadam",
                      "adan", "lamb", "schedulefree_adamw", "adabelief", "sophia")


@dataclass
class TuneResult:
    best: dict[str, Any] | None            # what best.json holds
    studies: list[Any] = field(default_factory=list)
    out: str | None = None
    files: list[str] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0                   # this run's wall time (every study of it)
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        return report.table(self.studies)


class _FunctionTask:
    """Stands for a plain objective function in the study (its name; pruning over 10 steps)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.epochs = 10


def _check_optimizers(names: Sequence[str]) -> list[str]:
    known = set(space.tunable())
    bad = [n for n in names if n not in known]
    for name in bad:
        if isinstance(name, str) and python_optimizer(name) is not None:
            space.check_tunable(name)  # a pyopt optimizer the tuner cannot train: says why
    if bad:
        raise ValueError(f"unknown optimizer(s) {', '.join(map(str, bad))}; available: {', '.join(sorted(known))}")
    if not names:
        raise ValueError("no optimizers to tune")
    return list(dict.fromkeys(names))


def _watch_parent(parent: int) -> None:
    """Interrupt this worker when the process that started it is gone (e.g. killed): a daemon
    process outlives a SIGKILLed parent otherwise."""
    import threading

    main = threading.main_thread().ident

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        signal.pthread_kill(main, signal.SIGINT)  # a real signal: it also ends a blocking call

    threading.Thread(target=watch, daemon=True).start()


def _worker(task_spec: str, optimizers: list[str], storage: str, study_name: str, target: int, timeout: float | None,
            seed: int, sampler: str, pruner: str, budget: str, parent: int, precision: str = "f32") -> None:
    """One extra process of a parallel study: the same storage and study, its own sampler seed,
    one kernel thread (the processes share the cores). Started with SIGINT ignored (a Ctrl-C
    during its start-up would print a traceback); it takes Ctrl-C once it can fail its trial."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    study = None
    try:
        import optuna

        _watch_parent(parent)
        pyopt.set_num_threads(1)
        task = load_task(task_spec)
        study = create_study(task, optimizers, storage=storage, study_name=study_name, sampler=sampler, pruner=pruner,
                             seed=seed, budget=budget, parallel=True, prepare=False)
        stop = optuna.study.MaxTrialsCallback(target, states=None)
        study.optimize(make_objective(task, optimizers, budget, seed=0, precision=precision), n_trials=None,
                       timeout=timeout,
                       callbacks=[stop], catch=(Exception,), gc_after_trial=False)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if study is not None:
            owners.fail_unfinished(study, pids=[os.getpid()])


def _stop_workers(procs: list[Any]) -> None:
    """Ctrl-C reaches the workers too when typed in a terminal; pass it on in case it was sent to
    this process alone, give them time to fail their trials, then end them."""
    for p in procs:
        p.join(timeout=2.0)  # a Ctrl-C typed in the terminal is theirs too: let them handle that one
    deadline = time.monotonic() + 10.0
    while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGINT)  # again: a worker still starting up ignores it
        for p in procs:
            p.join(timeout=0.5)
    for p in procs:
        if p.is_alive():
            p.terminate()
        p.join()


def check_arguments(optimizers: Sequence[str], trials: int, jobs: int, storage: str | None, budget: str,
                    sampler: str, pruner: str, precision: str = "f32") -> list[str]:
    """The checks ``tune`` makes before it touches anything; returns the optimizer names (without a
    list, the default set minus those whose states cannot be stored as ``precision`` says)."""
    from .study import PRUNERS, SAMPLERS, check_storage

    stored = parse_precision(precision)  # ValueError naming the bad part
    state_dtype = stored.options.state_dtype
    names = _check_optimizers(list(optimizers) if optimizers else
                              [n for n in DEFAULT_OPTIMIZERS if state_dtype in pyopt._core.optimizers()[n]["state_dtypes"]])
    unable = [n for n in names if state_dtype not in pyopt._core.optimizers()[n]["state_dtypes"]]
    if unable:
        raise ValueError(f"precision {precision!r}: {', '.join(unable)} cannot keep {state_dtype} states")
    if isinstance(trials, bool) or not isinstance(trials, numbers.Integral) or trials < 1:
        raise ValueError(f"trials must be an integer >= 1, got {trials!r}")
    if isinstance(jobs, bool) or not isinstance(jobs, numbers.Integral) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    if budget != "auto" and budget not in space.BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; one of auto, {', '.join(space.BUDGETS)}")
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; one of {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise ValueError(f"unknown pruner {pruner!r}; one of {', '.join(PRUNERS)}")
    check_storage(storage)
    return names


def tune(task: Task | str | Callable[..., float], optimizers: Sequence[str] | None = None, *, trials: int = 40, timeout: float | None = None,
         storage: str | None = None, study: str | None = None, jobs: int = 1, seed: int = 0, out: str | None = None,
         pruner: str = "hyperband", sampler: str = "tpe", budget: str = "auto", fair: bool = False,
         progress: bool = True, log: Callable[[str], None] | None = None, precision: str = "f32") -> TuneResult:
    """Search the optimizer and its hyperparameters for ``task`` (a Task, a built-in name or
    ``path/file.py:OBJECT``, or a plain objective ``fn(make_optimizer, report) -> float`` for a loop
    a Task cannot express). ``trials`` new trials run (per optimizer when ``fair``), whatever the
    study already holds; with ``jobs`` > 1, up to jobs - 1 more may start at the end. Writes
    best.json, trials.csv and plots to ``out`` when given. ``precision`` (e.g. "bf16+master+int8",
    see ``pyopt.storage.parse_precision``) trains every trial with 16-bit params and those storage
    options (Task objectives only). Returns a TuneResult."""
    from .tasks import check_task

    function = None
    if callable(task) and not isinstance(task, str) and check_task(task):
        function = task  # not a Task: a plain objective function
        task_obj: Any = _FunctionTask(getattr(task, "__name__", "objective"))
    else:
        task_obj = load_task(task) if isinstance(task, str) else task
    task_spec = task if isinstance(task, str) else None
    names = check_arguments(optimizers or (), trials, jobs, storage, budget, sampler, pruner, precision)
    if function is not None and precision != "f32":
        raise ValueError("precision is for Task objectives (a plain function creates its own params)")
    if jobs > 1 and task_spec is None:
        raise ValueError("jobs > 1 needs the task as a name or path/file.py:OBJECT (each process loads it)")
    if jobs > 1 and (storage is None or storage in ("memory", ":memory:")):
        raise ValueError("jobs > 1 needs a storage the processes share (journal:PATH, sqlite:///PATH or a database URL)")
    per_optimizer = trials if fair else trials / len(names)
    chosen_budget = space.auto_budget(per_optimizer) if budget == "auto" else budget
    if out is not None:
        os.makedirs(out, exist_ok=True)  # only now: bad arguments leave no folder
    say = log or (lambda _msg: None)
    base_name = study or f"pyopt-{task_obj.name}"
    groups = [[n] for n in names] if fair else [names]
    result = TuneResult(best=None, out=out)
    start = time.perf_counter()
    for group in groups:
        name = f"{base_name}-{group[0]}" if fair else base_name
        st = create_study(task_obj, group, storage=storage, study_name=name, sampler=sampler, pruner=pruner,
                          seed=seed, budget=chosen_budget, parallel=jobs > 1)
        result.studies.append(st)
        already = sum(1 for t in st.trials if t.state.is_finished())
        target = already + trials
        say(f"study {name!r}: {already} finished trials; running {trials} more on {', '.join(group)} "
            f"(budget {chosen_budget}, {jobs} process{'es' if jobs > 1 else ''})")
        procs: list[Any] = []
        if jobs > 1:
            ctx = multiprocessing.get_context("spawn")  # the OpenMP runtime is not fork-safe
            # One kernel thread and one BLAS thread per process: N processes share the cores.
            single = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
            saved_env = {k: os.environ.get(k) for k in single}
            os.environ.update(single)
            try:
                for worker in range(1, jobs):
                    p = ctx.Process(target=_worker, args=(task_spec, group, storage, name, target, timeout, seed + worker,
                                                          sampler, pruner, chosen_budget, os.getpid(), precision),
                                    daemon=True)
                    with owners.sigint_ignored():  # inherited: see _worker
                        p.start()
                    procs.append(p)
            finally:
                for key, value in saved_env.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
        import optuna

        try:
            if jobs > 1:
                pyopt.set_num_threads(1)
            objective = make_function_objective(function, group, chosen_budget) if function is not None else \
                make_objective(task_obj, group, chosen_budget, seed=0, precision=precision)
            st.optimize(objective, n_trials=None if jobs > 1 else trials,
                        timeout=timeout, catch=(Exception,), show_progress_bar=progress and jobs == 1,
                        callbacks=[optuna.study.MaxTrialsCallback(target, states=None)] if jobs > 1 else None)
            for p in procs:
                p.join()
        except KeyboardInterrupt:
            result.interrupted = True
            with owners.sigint_ignored():
                _stop_workers(procs)
                owners.fail_unfinished(st, pids=[os.getpid()] + [p.pid for p in procs])
            say("interrupted: every finished trial is kept in the study; the running ones are failed "
                "(\"interrupted\"); a rerun adds --trials new trials")
            break
        finally:
            if jobs > 1:
                pyopt.set_num_threads(os.cpu_count() or 1)
        gone = owners.fail_unfinished(st)  # of a worker that was killed
        if gone:
            say(f"trial(s) {', '.join(map(str, gone))} failed: their worker process is gone")
    result.seconds = time.perf_counter() - start
    result.best = report.best_config(result.studies, task_obj.name)
    if out is not None:
        if result.best is not None:
            path = os.path.join(out, "best.json")
            report.write_json(result.best, path)
            result.files.append(path)
        path = os.path.join(out, "trials.csv")
        report.write_csv(result.studies, path)
        result.files.append(path)
        try:
            result.files += report.write_plots(result.studies, out)
        except ImportError as exc:
            result.notes.append(f"no plots: they need matplotlib (pip install matplotlib; {exc})")
            say(result.notes[-1])
    return result
