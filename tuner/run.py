"""``pyopt.tuner.tune``: run a study (or one per optimizer), in one or several processes, and write
the results. ``pyopt tune`` is its command line."""
from __future__ import annotations

import contextlib
import json
import multiprocessing
import numbers
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import pyopt
from pyopt._pybase import python_optimizer
from pyopt.storage import parse_precision

from . import coordinator, owners, phases, report, space
from .phases import DEFAULT_PORTFOLIO, LINE_SEARCH
from .study import check_schedules, create_study, make_function_objective, make_objective, make_phased_objective
from .tasks import Task, load_task

STRATEGIES = ("phased", "tpe")
# --strategy tpe's default: the broad standard set (the phased strategy's is phases.DEFAULT_PORTFOLIO).
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
    epochs: int | None = None              # the task's (full fidelity)
    phases: list[str] = field(default_factory=list)  # the phased strategy's lines: what ran, what survived
    role: str = "coordinator"              # phased on a shared study: "helper" when another process planned it
    out_shared: bool = False               # a helper whose --out is its coordinator's: it writes nothing there

    def table(self) -> str:
        return report.table(self.studies, self.epochs)


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
            seed: int, sampler: str, pruner: str, budget: str, parent: int, precision: str = "f32",
            phased: bool = False, schedules: tuple[str, ...] = ("constant",)) -> None:
    """One extra process of a parallel study: the same storage and study, its own sampler seed,
    one kernel thread (the processes share the cores). Started with SIGINT ignored (a Ctrl-C
    during its start-up would print a traceback); it takes Ctrl-C once it can fail its trial.
    ``phased``: it runs the queued trials of a phase and stops when none is left."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    study = None
    try:
        import optuna

        _watch_parent(parent)
        pyopt.set_num_threads(1)
        task = load_task(task_spec)
        study = create_study(task, optimizers, storage=storage, study_name=study_name, sampler=sampler, pruner=pruner,
                             seed=seed, budget=budget, parallel=True, prepare=False)
        if phased:
            from .study import make_phased_objective

            objective = make_phased_objective(task, optimizers, budget, task.epochs, precision=precision,
                                              schedules=schedules)
            stop: Any = QueueEmpty()
        else:
            objective = make_objective(task, optimizers, budget, seed=0, precision=precision, schedules=schedules)
            stop = optuna.study.MaxTrialsCallback(target, states=None)
        with queued_only(study, storage) if phased else contextlib.nullcontext():
            study.optimize(objective, n_trials=None, timeout=timeout, callbacks=[stop], catch=(Exception,),
                           gc_after_trial=False)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if study is not None:
            owners.fail_unfinished(study, pids=[os.getpid()])


class QueueEmpty:
    """Stops a process of a phase once no queued (WAITING) trial is left."""

    def __call__(self, study: Any, trial: Any) -> None:
        import optuna

        if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
            study.stop()


class _QueueDrained(Exception):
    """Raised out of ``Study.ask`` (see ``queued_only``) when no queued trial is left."""


@contextlib.contextmanager
def queued_only(study: Any, url: str | None = None) -> Iterator[None]:
    """Within it, ``study.optimize`` runs queued (WAITING) trials only and returns when none is
    left, instead of creating a fresh trial (which the phased objective would end at once as
    ``surplus``): ``Study.ask`` pops a queued trial or creates one, so checking the queue before
    asking cannot avoid that when several processes take from one queue. Hooks Optuna's
    ``Study._pop_waiting_trial_id`` on this study object only; without that method (another
    Optuna) surplus trials remain the fallback. On SQLite (``url``) the pop holds
    ``coordinator.queue_lock``: Optuna's read-then-update there is not atomic across processes
    (two processes could take the same queued trial)."""
    original = getattr(study, "_pop_waiting_trial_id", None)
    if original is None:
        yield
        return

    def pop() -> int:
        with coordinator.queue_lock(url):
            found = original()
        if found is None:
            raise _QueueDrained
        return found

    study._pop_waiting_trial_id = pop
    try:
        yield
    except _QueueDrained:
        pass
    finally:
        del study._pop_waiting_trial_id


def _optimize(st: Any, objective: Callable[[Any], float], *, n_trials: int, target: int | None, jobs: int,
              timeout: float | None, progress: bool, worker_args: tuple, say: Callable[[str], None],
              phased: bool = False) -> bool:
    """Run ``objective`` on ``st``: ``n_trials`` in this process, or with ``jobs`` > 1 that many
    processes until ``target`` trials exist (phased: until the queue is empty). Returns True when
    interrupted (Ctrl-C: the running trials are failed as "interrupted")."""
    import optuna

    procs: list[Any] = []
    if jobs > 1:
        ctx = multiprocessing.get_context("spawn")  # the OpenMP runtime is not fork-safe
        # One kernel thread and one BLAS thread per process: N processes share the cores.
        single = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
        saved_env = {k: os.environ.get(k) for k in single}
        os.environ.update(single)
        try:
            for worker in range(1, jobs):
                args = list(worker_args)
                args[6] = worker_args[6] + worker  # its own sampler seed
                p = ctx.Process(target=_worker, args=tuple(args), daemon=True)
                with owners.sigint_ignored():  # inherited: see _worker
                    p.start()
                procs.append(p)
        finally:
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    try:
        if jobs > 1:
            pyopt.set_num_threads(1)
            stop: Any = QueueEmpty() if phased else optuna.study.MaxTrialsCallback(target, states=None)
            with queued_only(st, worker_args[2]) if phased else contextlib.nullcontext():
                st.optimize(objective, n_trials=None, timeout=timeout, catch=(Exception,), show_progress_bar=False,
                            callbacks=[stop])
        else:
            # phased: helpers started separately may take queued trials too (then fewer are left)
            with queued_only(st, worker_args[2]) if phased else contextlib.nullcontext():
                st.optimize(objective, n_trials=n_trials, timeout=timeout, catch=(Exception,),
                            show_progress_bar=progress, callbacks=[QueueEmpty()] if phased else None)
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        with owners.sigint_ignored():
            _stop_workers(procs)
            owners.fail_unfinished(st, pids=[os.getpid()] + [p.pid for p in procs])
        say("interrupted: every finished trial is kept in the study; the running ones are failed "
            "(\"interrupted\"); a rerun adds --trials new trials")
        return True
    finally:
        if jobs > 1:
            pyopt.set_num_threads(os.cpu_count() or 1)
    gone = owners.fail_unfinished(st)  # of a worker that was killed
    if gone:
        say(f"trial(s) {', '.join(map(str, gone))} failed: their worker process is gone")
    return False


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
                    sampler: str, pruner: str, precision: str = "f32", strategy: str = "phased") -> list[str]:
    """The checks ``tune`` makes before it touches anything; returns the optimizer names (without a
    list, the strategy's default set minus those whose states cannot be stored as ``precision`` says)."""
    from .study import PRUNERS, SAMPLERS, check_storage

    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; one of {', '.join(STRATEGIES)}")
    default = DEFAULT_PORTFOLIO if strategy == "phased" else DEFAULT_OPTIMIZERS

    stored = parse_precision(precision)  # ValueError naming the bad part
    state_dtype = stored.options.state_dtype
    names = _check_optimizers(list(optimizers) if optimizers else
                              [n for n in default if state_dtype in pyopt._core.optimizers()[n]["state_dtypes"]])
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
         progress: bool = True, log: Callable[[str], None] | None = None, precision: str = "f32",
         strategy: str = "phased", schedules: str | Sequence[str] | None = None) -> TuneResult:
    """Search the optimizer and its hyperparameters for ``task`` (a Task, a built-in name or
    ``path/file.py:OBJECT``, or a plain objective ``fn(make_optimizer, report) -> float`` for a loop
    a Task cannot express). ``strategy``: "phased" (the default; ``tuner/phases.py``: portfolio at
    low fidelity, successive halving, lr line search and TPE around the survivors, finalists on 3
    seeds; at most ``trials`` new training runs, every phase counted) or "tpe" (one study: ``trials`` new trials,
    per optimizer when ``fair``; with ``jobs`` > 1, up to jobs - 1 more may start at the end). Writes
    best.json, trials.csv and plots to ``out`` when given. ``precision`` (e.g. "bf16+master+int8",
    see ``pyopt.storage.parse_precision``) trains every trial with 16-bit params and those storage
    options (Task objectives only). ``schedules`` (e.g. "constant,cosine,wsd"; default constant
    only, the study as without it) makes the lr schedule a searched choice (``space.SCHEDULES``):
    each run gets a complete schedule over its own steps, so low-fidelity runs compare complete
    short runs; Task objectives only, and not for a task with ``schedules = False``. Returns a
    TuneResult."""
    from .tasks import check_task

    function = None
    if callable(task) and not isinstance(task, str) and check_task(task):
        function = task  # not a Task: a plain objective function
        task_obj: Any = _FunctionTask(getattr(task, "__name__", "objective"))
    else:
        task_obj = load_task(task) if isinstance(task, str) else task
    task_spec = task if isinstance(task, str) else None
    names = check_arguments(optimizers or (), trials, jobs, storage, budget, sampler, pruner, precision, strategy)
    if function is not None and precision != "f32":
        raise ValueError("precision is for Task objectives (a plain function creates its own params)")
    schedules = check_schedules(schedules, task_obj, function)
    if jobs > 1 and task_spec is None:
        raise ValueError("jobs > 1 needs the task as a name or path/file.py:OBJECT (each process loads it)")
    if jobs > 1 and (storage is None or storage in ("memory", ":memory:")):
        raise ValueError("jobs > 1 needs a storage the processes share (journal:PATH, sqlite:///PATH or a database URL)")
    if strategy == "phased" and fair:
        raise ValueError("fair (one study per optimizer) is for strategy 'tpe'")
    if out is not None:
        os.makedirs(out, exist_ok=True)  # only now: bad arguments leave no folder
    say = log or (lambda _msg: None)
    base_name = study or f"pyopt-{task_obj.name}"
    if strategy == "phased":
        result = _tune_phased(task_obj, task_spec, function, names, trials=trials, timeout=timeout, storage=storage,
                              name=base_name, jobs=jobs, seed=seed, pruner=pruner, sampler=sampler, budget=budget,
                              progress=progress, say=say, precision=precision, schedules=schedules, out=out)
        result.out = out
        if result.role == "helper" and out is not None and result.out_shared:
            return result  # the coordinator writes this folder: two processes writing one file garble it
        return _write(result, out, say)
    per_optimizer = trials if fair else trials / len(names)
    chosen_budget = space.auto_budget(per_optimizer) if budget == "auto" else budget
    groups = [[n] for n in names] if fair else [names]
    result = TuneResult(best=None, out=out)
    start = time.perf_counter()
    for group in groups:
        name = f"{base_name}-{group[0]}" if fair else base_name
        st = create_study(task_obj, group, storage=storage, study_name=name, sampler=sampler, pruner=pruner,
                          seed=seed, budget=chosen_budget, parallel=jobs > 1, schedules=schedules)
        result.studies.append(st)
        already = sum(1 for t in st.trials if t.state.is_finished())
        target = already + trials
        say(f"study {name!r}: {already} finished trials; running {trials} more on {', '.join(group)} "
            f"(budget {chosen_budget}, {jobs} process{'es' if jobs > 1 else ''})")
        objective = make_function_objective(function, group, chosen_budget) if function is not None else \
            make_objective(task_obj, group, chosen_budget, seed=0, precision=precision, schedules=schedules)
        if _optimize(st, objective, n_trials=trials, target=target, jobs=jobs, timeout=timeout, progress=progress,
                     worker_args=(task_spec, group, storage, name, target, timeout, seed, sampler, pruner,
                                  chosen_budget, os.getpid(), precision, False, schedules), say=say):
            result.interrupted = True
            break
    result.seconds = time.perf_counter() - start
    result.best = report.best_config(result.studies, task_obj.name)
    result.epochs = task_obj.epochs
    return _write(result, out, say)


def _write(result: TuneResult, out: str | None, say: Callable[[str], None]) -> TuneResult:
    """best.json, trials.csv and the plots into ``out``."""
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


def _phase_budget(budget: str, plan: phases.Plan) -> str:
    """``auto`` for the phased strategy: by the phase-3 trials per survivor (as ``space.auto_budget``)."""
    if budget != "auto":
        return budget
    return space.auto_budget(plan.tpe / max(1, min(2, len(plan.optimizers))))


def _tune_phased(task: Any, task_spec: str | None, function: Callable[..., float] | None, names: list[str], *,
                 trials: int, timeout: float | None, storage: str | None, name: str, jobs: int, seed: int, pruner: str,
                 sampler: str, budget: str, progress: bool, say: Callable[[str], None],
                 precision: str, schedules: tuple[str, ...] = ("constant",), out: str | None = None) -> TuneResult:
    """The four phases of ``tuner/phases.py`` on one study; ``trials`` new training runs at most.
    On a storage other processes can reach, the first phased process on the study coordinates
    (``tuner/coordinator.py``): it plans and queues the phases; a process that finds a live
    coordinator helps it instead (``_help_phased``)."""
    from .study import _prepare

    full = task.epochs if function is None else int(getattr(function, "steps", 0) or 0)
    plan = phases.plan(names, trials, max(full, 1), seeded=function is None)
    if full <= 0:  # a plain function without ``steps``: one fidelity (run to the end)
        plan.halving, plan.tpe = 0, plan.tpe + plan.halving
    chosen = _phase_budget(budget, plan)
    shared = storage is not None and storage not in ("memory", ":memory:")
    st = create_study(task, names, storage=storage, study_name=name, sampler=sampler, pruner=pruner, seed=seed,
                      budget=chosen, parallel=jobs > 1, warm_starts=False, schedules=schedules, prepare=not shared)
    if not shared:
        st.set_user_attr("strategy", "phased")
        return _coordinate(st, None, task, task_spec, function, names, plan, chosen, full, trials=trials,
                           timeout=timeout, storage=storage, name=name, jobs=jobs, seed=seed, pruner=pruner,
                           sampler=sampler, progress=progress, say=say, precision=precision, schedules=schedules)
    settings = {"task": task.name, "optimizers": names, "budget": chosen, "schedules": list(schedules),
                "precision": precision, "full": full, "sampler": sampler, "pruner": pruner, "seed": seed,
                "out": None if out is None else os.path.abspath(out), "host": owners.HOST}
    leads, record = coordinator.elect(st, storage, settings)
    if not leads:
        return _help_phased(st, record, task, function, trials=trials, timeout=timeout, storage=storage, name=name,
                            seed=seed, jobs=jobs, say=say, out=out)
    beat = coordinator.Heartbeat(st, record)
    ended = "error"
    try:
        _prepare(st, task, names, chosen, warm_starts=False, schedules=tuple(schedules))
        st.set_user_attr("strategy", "phased")
        result = _coordinate(st, record["run"], task, task_spec, function, names, plan, chosen, full, trials=trials,
                             timeout=timeout, storage=storage, name=name, jobs=jobs, seed=seed, pruner=pruner,
                             sampler=sampler, progress=progress, say=say, precision=precision, schedules=schedules)
        if result.interrupted:
            ended = "interrupted"
        else:
            with owners.sigint_ignored():
                st.set_user_attr(coordinator.BEST, {"run": record["run"], "best": result.best})
            ended = "finished"
        return result
    except KeyboardInterrupt:
        ended = "interrupted"
        raise
    finally:
        beat.end(ended)


def _coordinate(st: Any, run_id: str | None, task: Any, task_spec: str | None, function: Callable[..., float] | None,
                names: list[str], plan: phases.Plan, chosen: str, full: int, *, trials: int, timeout: float | None,
                storage: str | None, name: str, jobs: int, seed: int, pruner: str, sampler: str, progress: bool,
                say: Callable[[str], None], precision: str, schedules: tuple[str, ...]) -> TuneResult:
    """Plan, queue and run the phases (``run_id``: this coordinator's, which tags its queued
    trials; None on a storage only this process sees). Each phase ends with a barrier
    (``drain``): no trial of it waits or runs anywhere, helpers' included, before it is ranked."""
    import optuna

    S = optuna.trial.TrialState
    levels = phases.rungs(full) if full > 0 else [0]
    _drop_queued(st, run_id, storage)
    result = TuneResult(best=None, studies=[st], epochs=full if full > 0 else None)
    objective = make_phased_objective(task, names, chosen, full if full > 0 else 1 << 30, precision=precision,
                                      function=function, schedules=schedules)
    start = time.perf_counter()
    deadline = None if timeout is None else start + timeout
    used = 0
    tag = {} if run_id is None else {coordinator.QUEUED_BY: run_id}

    def tell(line: str) -> None:
        result.phases.append(line)
        say(line)

    already = sum(1 for t in st.trials if t.state.is_finished())
    say(f"study {name!r}: {already} finished trials; phased search on {', '.join(names)} with {trials} new trials "
        f"at most (budget {chosen}, fidelities {', '.join(map(str, levels))} "
        f"{'epochs' if function is None else 'steps'}, {jobs} process{'es' if jobs > 1 else ''})")

    def enqueue(params: dict[str, Any], phase: int, epochs: int, s: int, attrs: dict[str, Any] | None = None) -> None:
        st.enqueue_trial(params, user_attrs={"phase": phase, "planned_epochs": epochs, "seed": s, **tag, **(attrs or {})})

    def run(items: list[tuple[phases.Config, int, int, int]], limit: int,
            attrs: dict[str, Any] | None = None) -> tuple[int, bool]:
        """Queue the items (config, epochs, seed, phase) not yet done, up to ``limit`` (those a
        helper is running count, and are not queued again), with ``attrs`` as more user attrs;
        run them."""
        nonlocal used
        trials_now = st.get_trials(deepcopy=False)
        done = phases.done_keys(trials_now, full)
        waiting = phases.waiting_keys(trials_now)
        running = phases.waiting_keys(trials_now, S.RUNNING)
        todo = 0
        pending = []
        for config, epochs, s, phase in items:
            key = (config.key(), epochs, s)
            if key in done or todo >= limit:
                continue
            if key not in waiting and key not in running:
                pending.append((config, epochs, s, phase))
            todo += 1
        if todo == 0:
            return 0, False
        left = None if deadline is None else deadline - time.perf_counter()
        if left is not None and left <= 0:
            return 0, False
        n_before = finished()  # before queuing: a helper may finish a trial at once
        for config, epochs, s, phase in pending:
            enqueue(config.as_dict(), phase, epochs, s, attrs)
        stopped = drain(items[0][3], todo, n_before)
        ran = finished() - n_before
        used += ran
        return ran, stopped

    def drain(phase: int, todo: int, since: int) -> bool:
        """Run the queued trials here (with --jobs also in worker processes), then wait until no
        trial of ``phase`` waits or runs in any process. A trial whose process is gone (a
        helper's or a --jobs worker's) is failed (``owners``, this host; a trial that never
        recorded its process, after the grace period; Optuna's heartbeat on a database server,
        which queues a retry itself) and queued again, once per run and while the trials allow
        (``since``: the finished trials before this phase queued its own), so the wait ends and
        the phase is ranked complete. After the timeout the queued trials are dropped and only
        the running ones are waited for. Returns True when interrupted (Ctrl-C)."""
        first = True
        requeued: set[str] = set()  # (params, epochs, seed) of the trials queued again
        failed_before = {t.number for t in st.get_trials(deepcopy=False, states=(S.FAIL,))}
        heartbeat = optuna.storages.fail_stale_trials if _has_heartbeat(st) else None
        try:
            while True:
                mine = [t for t in st.get_trials(deepcopy=False, states=(S.WAITING, S.RUNNING))
                        if t.user_attrs.get("phase") == phase and "planned_epochs" in t.user_attrs]
                waiting = [t for t in mine if t.state == S.WAITING]
                if waiting and not out_of_time():
                    left = None if deadline is None else deadline - time.perf_counter()
                    count = todo if first else len(waiting)
                    if _optimize(st, objective, n_trials=count, target=None, jobs=processes(count) if first else 1,
                                 timeout=left, progress=progress and first,
                                 worker_args=(task_spec, names, storage, name, None, left, seed, sampler, pruner,
                                              chosen, os.getpid(), precision, True, schedules),
                                 say=say, phased=True):
                        _drop_queued(st, run_id, storage)
                        return True
                    first = False
                    continue
                if waiting:
                    _drop_queued(st, run_id, storage)  # out of time: helpers take none of them now
                running = [t for t in mine if t.state == S.RUNNING]
                if running:
                    owners.fail_unfinished(st)
                    _fail_ownerless(running, st)
                    if heartbeat is not None:
                        heartbeat(st)  # (queues a retry itself)
                    running = [t for t in st.get_trials(deepcopy=False, states=(S.RUNNING,))
                               if t.user_attrs.get("phase") == phase and "planned_epochs" in t.user_attrs]
                again = False
                for t in st.get_trials(deepcopy=False, states=(S.FAIL,)):
                    if t.number in failed_before or t.user_attrs.get("phase") != phase \
                            or not str(t.user_attrs.get("error", "")).startswith("worker gone"):
                        continue
                    failed_before.add(t.number)
                    key = json.dumps([t.system_attrs.get("fixed_params", {}), t.user_attrs.get("planned_epochs"),
                                      t.user_attrs.get("seed", 0)], sort_keys=True)
                    if key in requeued or out_of_time() or used + finished() - since + len(running) >= trials:
                        continue  # (``--trials``: this run's trials so far, finished or running)
                    requeued.add(key)
                    say(f"trial {t.number} failed: its process ({coordinator.describe(t.user_attrs.get('owner') or {})})"
                        " is gone; queued again")
                    enqueue(t.system_attrs.get("fixed_params", {}), phase, t.user_attrs["planned_epochs"],
                            t.user_attrs.get("seed", 0), {LINE_SEARCH: True} if t.user_attrs.get(LINE_SEARCH) else None)
                    again = True
                if not running and not again:
                    return False
                if not again:
                    time.sleep(coordinator.POLL)
        except KeyboardInterrupt:
            with owners.sigint_ignored():
                _drop_queued(st, run_id, storage)
            say("interrupted: every finished trial is kept in the study; the running ones are failed "
                "(\"interrupted\"); a rerun adds --trials new trials")
            return True

    def finished() -> int:
        return sum(1 for t in st.get_trials(deepcopy=False)
                   if t.state.is_finished() and not t.user_attrs.get("surplus"))

    def processes(todo: int) -> int:
        """More processes only for phases with at least 2 trials each: starting one takes seconds."""
        return jobs if todo >= 2 * jobs else 1

    def results() -> list[dict]:
        return phases.results_of(st.get_trials(deepcopy=False), full)

    def out_of_time() -> bool:
        return deadline is not None and time.perf_counter() >= deadline

    # Phase 1: the portfolio at the lowest fidelity.
    configs = phases.portfolio(plan.optimizers, plan.sweep, chosen, schedules)
    low = levels[0]
    ran, stopped = run([(c, low, 0, 1) for c in configs], trials)
    ranked = phases.rank(results(), low)
    best_each: dict[str, float] = {}
    for r in ranked:
        best_each.setdefault(r["config"].optimizer, r["value"])
    skipped = [n for n in names if n not in plan.optimizers]
    tell(f"phase 1 portfolio: {len(configs)} configs ({len(plan.optimizers)} optimizers x defaults"
         f"{phases.sweep_note(plan.sweep)}"
         f"{phases.schedule_note(schedules, plan.sweep)}) at {low} "
         f"{'epochs' if function is None else 'steps'}, {ran} new trials; best: "
         + ", ".join(f"{n} {v:.4g}" for n, v in best_each.items())
         + (f"; not evaluated (too few trials): {', '.join(skipped)}" if skipped else ""))
    def why() -> str:
        return "interrupted" if stopped else "out of time" if out_of_time() else "no trials left"

    if len(levels) > 1 and (stopped or out_of_time()):
        tell(f"phase 2 successive halving: skipped ({why()})")
    elif len(levels) > 1:
        # Phase 2: successive halving, compared at equal fidelity only.
        counts = phases.halving_counts(len([r for r in ranked if not r["diverged"]]), len(levels), room=plan.halving)
        steps = []
        for level_from, level_to, count in zip(levels, levels[1:], counts):
            if count <= 0:
                steps.append(f"none -> {level_to} epochs (no trials left)")
                break
            promoted = phases.promote(results(), level_from, count)
            room = trials - used - plan.reruns
            ran, stopped = run([(c, level_to, 0, 2) for c in promoted], max(0, room))
            steps.append(f"{len(promoted)} -> {level_to} epochs ({', '.join(phases.describe(c) for c in promoted)})")
            if stopped or out_of_time():
                steps.append(f"stopped ({why()})")
                break
        else:
            # The rank check: configs the full fidelity orders otherwise than the rung below.
            inverted = phases.discordant_pairs(results(), levels[-2], levels[-1], promoted)
            room = trials - used - plan.reruns - phases.REFINE
            extra = phases.second_chances(results(), levels[:-1], promoted, min(inverted, room))
            if extra:
                ran, stopped = run([(c, levels[-1], 0, 2) for c in extra], len(extra))
                steps.append(f"{inverted} pair{'s' if inverted > 1 else ''} ranked otherwise at {levels[-1]} "
                             f"than at {levels[-2]} epochs: {len(extra)} more -> {levels[-1]} epochs "
                             f"({', '.join(phases.describe(c) for c in extra)})")
        tell("phase 2 successive halving: " + "; ".join(steps))
    full_level = levels[-1]
    keep = 3 if plan.tpe >= 15 else 2
    alive = phases.survivors(results(), levels, keep)
    room = trials - used - plan.reruns
    if not stopped and not out_of_time() and alive and room > 0:
        # Phase 3: the survivors' lr line search, then TPE around them (round-robin), at full fidelity.
        before = {t.number for t in st.get_trials(deepcopy=False)}
        n_before = finished()
        proposed: list[phases.Config] = []
        failed: list[phases.Config] = []  # (their runs failed in this run: they bound the search)
        while room > 0:
            batch = phases.line_search_round(results(), full_level, alive, failed)[:room]
            if not batch or all(c in proposed for c in batch):
                break
            _, stopped = run([(c, full_level, 0, 3) for c in batch], room, {LINE_SEARCH: True})
            proposed += [c for c in batch if c not in proposed]
            room = 0 if stopped or out_of_time() else trials - used - plan.reruns
            if not stopped:
                done = phases.done_keys(st.get_trials(deepcopy=False), full)
                failed += [c for c in batch if (c.key(), full_level, 0) not in done and c not in failed]
        searched = phases.done_keys(st.get_trials(deepcopy=False), full)
        refined = [c for c in proposed if (c.key(), full_level, 0) in searched]
        if room > 0:
            tpe_before = finished()
            for i in range(room):
                enqueue({"optimizer": alive[i % len(alive)]}, 3, full_level, 0)
            stopped = drain(3, room, tpe_before)
            used += finished() - tpe_before
        new = [t for t in st.get_trials(deepcopy=False) if t.number not in before and t.state.is_finished()
               and not t.user_attrs.get("surplus")]
        pruned = sum(1 for t in new if t.state == S.PRUNED)
        tell(f"phase 3 lr line search and TPE on {', '.join(alive)} at {full_level} "
             f"{'epochs' if function is None else 'steps'}: {finished() - n_before} new trials, {pruned} pruned; "
             f"line search: {', '.join(phases.describe(c) for c in refined) or 'none'}")
    else:
        tell(f"phase 3 TPE: skipped ({why()}){'; survivors ' + ', '.join(alive) if alive else ''}")
    final = phases.finalists(results(), full_level, plan.finalists or 1)
    if not stopped and not out_of_time() and plan.finalists and final:
        # Phase 4: the finalists on more seeds.
        final = phases.finalists(results(), full_level, plan.finalists)
        ran, stopped = run([(c, full_level, s, 4) for c in final for s in phases.SEEDS[1:plan.seeds]],
                           max(0, trials - used))
        skipped_seeds = ""
    else:
        skipped_seeds = f" skipped ({why() if plan.finalists else 'too few trials'})" + ("; " if final else "")
    summaries = [(c, phases.seed_summary(results(), c, full_level)) for c in final]
    summaries.sort(key=lambda item: (-len(item[1]["seeds"]), item[1]["mean"]))
    tell("phase 4 finalists on seeds " + ", ".join(map(str, phases.SEEDS[:max(1, plan.seeds)])) + ":"
         + skipped_seeds + ("" if skipped_seeds else " ")
         + "; ".join(f"{phases.describe(c)} {s['mean']:.4g} +- {s['std']:.2g} ({len(s['seeds'])} seeds)"
                     for c, s in summaries))
    _drop_queued(st, run_id, storage)
    result.interrupted = stopped
    result.seconds = time.perf_counter() - start
    result.best = report.phased_best(st, summaries, results(), task.name, levels, chosen)
    for flag in (result.best or {}).get("edge", []):
        say(f"edge of range: {flag} (flagged, not widened: the record's range is part of the study)")
    return result


def _fail_ownerless(running: list[Any], study: Any) -> list[int]:
    """FAIL the RUNNING trials that never recorded their process (``owner``: a process killed
    between taking the trial and stamping it) once they are older than the heartbeat grace
    period: nothing else would end them, and a phase's barrier waits for every running trial."""
    import datetime

    import optuna

    from .study import heartbeat_settings

    grace = heartbeat_settings()[1]
    failed = []
    for t in running:
        if "owner" in t.user_attrs or t.datetime_start is None:
            continue
        if (datetime.datetime.now() - t.datetime_start).total_seconds() <= grace:
            continue
        try:
            study._storage.set_trial_user_attr(t._trial_id, "error", "worker gone (no process recorded)")
            if study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL):
                failed.append(t.number)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
    return failed


def _has_heartbeat(study: Any) -> bool:
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(study._storage)


def _help_phased(st: Any, record: dict[str, Any], task: Any, function: Callable[..., float] | None, *, trials: int,
                 timeout: float | None, storage: str | None, name: str, seed: int, jobs: int,
                 say: Callable[[str], None], out: str | None = None) -> TuneResult:
    """Help the live coordinator ``record`` of study ``name``: run its queued trials with the
    settings it recorded (budget, schedules, precision, optimizers, fidelity, sampler, pruner; not
    this process's arguments), one at a time in this process, polling while the queue is empty.
    Stops when the coordinator ends or is gone, at ``timeout``, or after ``trials`` trials of its
    own. It queues nothing and plans nothing, so it adds no trial to the coordinator's plan, and
    takes queued trials only (``queued_only``: no surplus trial when another process took the
    last one first). best.json: the coordinator's, once it has finished."""
    import optuna

    S = optuna.trial.TrialState
    settings = st.user_attrs.get(coordinator.SETTINGS) or {}
    if settings.get("run") != record.get("run"):
        raise ValueError(f"study {name!r}: its phased coordinator ({coordinator.describe(record)}) recorded no "
                         "settings; start this process again")
    if settings.get("task") != task.name:
        raise ValueError(f"study {name!r} is being tuned on task {settings.get('task')!r} by its coordinator "
                         f"({coordinator.describe(record)}); this process was given task {task.name!r}: a helper "
                         "runs the coordinator's trials, so the task must be the same (or use another --study)")
    full = int(settings["full"])
    study = create_study(task, settings["optimizers"], storage=storage, study_name=name, sampler=settings["sampler"],
                         pruner=settings["pruner"], seed=seed + os.getpid(), budget=settings["budget"], parallel=True,
                         prepare=False)
    objective = make_phased_objective(task, settings["optimizers"], settings["budget"], full if full > 0 else 1 << 30,
                                      precision=settings["precision"], function=function,
                                      schedules=tuple(settings["schedules"]))
    say(f"study {name!r}: helping its phased coordinator ({coordinator.describe(record)}): running its queued trials "
        f"with its settings (budget {settings['budget']}, optimizers {', '.join(settings['optimizers'])}, "
        f"precision {settings['precision']}, schedules {','.join(settings['schedules'])}); at most {trials} trials"
        + ("; --jobs is for a coordinator: start more processes to help more" if jobs > 1 else ""))
    start = time.perf_counter()
    deadline = None if timeout is None else start + timeout
    me = owners.me()
    ran_here = [0]  # this process's trials (not surplus), counted as they end

    def current() -> dict[str, Any]:
        found = study.user_attrs.get(coordinator.COORDINATOR)
        return found if isinstance(found, dict) else {}

    def stop_reason() -> str | None:
        now = current()
        if now.get("run") != record["run"]:
            return "the coordinator ended (another process coordinates now)"
        if now.get("ended"):
            return "the coordinator finished" if now["ended"] == "finished" else \
                f"the coordinator stopped ({now['ended']})"
        if not coordinator.alive(now):
            return f"the coordinator ({coordinator.describe(now)}) is gone"
        if deadline is not None and time.perf_counter() >= deadline:
            return "its --timeout"
        if ran_here[0] >= trials:
            return f"its --trials {trials}"
        return None

    def mine() -> list[Any]:
        return [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()
                and not t.user_attrs.get("surplus") and t.user_attrs.get("owner") == me]

    def stop_when_done(study_: Any, trial: Any) -> None:
        if not trial.user_attrs.get("surplus"):
            ran_here[0] += 1
        if stop_reason() is not None or not study_.get_trials(deepcopy=False, states=(S.WAITING,)):
            study_.stop()

    interrupted = False
    reason = None
    idle = 0
    try:
        while (reason := stop_reason()) is None:
            if not study.get_trials(deepcopy=False, states=(S.WAITING,)):
                # waiting for the next phase: look often at first, then less (many helpers, one database)
                time.sleep(min(coordinator.POLL * 2 ** idle, 2.0))
                idle += 1
                continue
            idle = 0
            left = None if deadline is None else deadline - time.perf_counter()
            try:
                with queued_only(study, storage):
                    study.optimize(objective, n_trials=trials - ran_here[0], timeout=left, catch=(Exception,),
                                   callbacks=[stop_when_done], show_progress_bar=False, gc_after_trial=False)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # defensive: a trial finished elsewhere while this process ran it
    except KeyboardInterrupt:
        with owners.sigint_ignored():
            owners.fail_unfinished(study, pids=[me["pid"]])
        interrupted, reason = True, "interrupted"
    ran = mine()
    by_phase: dict[int, int] = {}
    for t in ran:
        by_phase[t.user_attrs.get("phase", 0)] = by_phase.get(t.user_attrs.get("phase", 0), 0) + 1
    result = TuneResult(best=None, studies=[study], epochs=full if full > 0 else None, interrupted=interrupted,
                        role="helper")
    line = (f"helper of {coordinator.describe(record)}: ran {len(ran)} trial{'s' if len(ran) != 1 else ''}"
            + (" (" + ", ".join(f"phase {p}: {n}" for p, n in sorted(by_phase.items())) + ")" if by_phase else "")
            + f"; stopped: {reason}")
    result.phases.append(line)
    say(line)
    final = study.user_attrs.get(coordinator.BEST)
    if isinstance(final, dict) and final.get("run") == record["run"] and final.get("best"):
        result.best = final["best"]
    else:
        result.notes.append(f"no best.json from this helper: {reason}, and the coordinator "
                            f"({coordinator.describe(record)}) has not finished; it writes best.json when it "
                            f"does (or rerun pyopt tune on study {name!r})")
        say(result.notes[-1])
    if out is not None and settings.get("host") == owners.HOST and settings.get("out") == os.path.abspath(out):
        result.out_shared = True
        result.notes.append(f"outputs: the coordinator writes them to {out}/ (this process's --out too)")
        say(result.notes[-1])
    result.seconds = time.perf_counter() - start
    return result


def _drop_queued(study: Any, mine: str | None = None, url: str | None = None) -> None:
    """FAIL the queued (WAITING) trials of the phased strategy that a stopped run left (Ctrl-C,
    timeout, a killed process): Optuna runs queued trials oldest first, so a rerun would run them
    in its own first phase. The rerun plans again and queues what is still needed. Only the
    coordinator calls this; it keeps the queue of a live coordinator other than ``mine`` (its
    run id; trials carry their queuer's in ``queued_by``), whose helpers are taking from it."""
    import optuna

    current = study.user_attrs.get(coordinator.COORDINATOR)
    keep = current.get("run") if coordinator.alive(current) and current.get("run") != mine else None
    storage = study._storage
    S = optuna.trial.TrialState
    for t in study.get_trials(deepcopy=False, states=(S.WAITING,)):
        if "planned_epochs" not in t.user_attrs:
            continue
        if keep is not None and t.user_attrs.get(coordinator.QUEUED_BY) == keep:
            continue
        try:
            with coordinator.queue_lock(url):  # taken as a process takes a queued trial: never one it took
                if not storage.set_trial_state_values(t._trial_id, S.RUNNING):
                    continue  # another process took it meanwhile
            storage.set_trial_user_attr(t._trial_id, "error", "not run: the run that queued it stopped")
            storage.set_trial_state_values(t._trial_id, S.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
