"""``pyopt tune TASK``: search the optimizer and its hyperparameters for a training task."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", nargs="?", help="a built-in task (see --list) or path/to/file.py:OBJECT")
    p.add_argument("--list", action="store_true", help="list the built-in tasks and each optimizer's search space")
    p.add_argument("--optimizers", help="comma-separated optimizer names (default: phased: adamw, nag, lion, "
                                        "schedulefree_adamw, prodigy, dadapt_adam; tpe: a broad set of 15)")
    p.add_argument("--strategy", default="phased", choices=["phased", "tpe"],
                   help="phased (default): (1) every optimizer's defaults + an lr sweep at low fidelity, "
                        "(2) successive halving at equal fidelity, (3) the survivors' best lr x, / sqrt(10), then "
                        "TPE around them, at full fidelity, (4) the finalists on 3 seeds, ranked by the mean; tpe: one TPE study over "
                        "all optimizers with warm starts and Hyperband pruning (the earlier default)")
    p.add_argument("--trials", type=int, default=40,
                   help="new trials to run, on a rerun too (default 40). A trial is one training run: one "
                        "config, one fidelity, one seed. Phased: at most N, every phase counted (low-fidelity "
                        "runs, promotions, which re-train from scratch, and the finalists' seed re-runs); "
                        "a rerun reuses finished runs, so its N go to phase 3 and 4; a process that helps a running "
                        "coordinator of the study runs at most N of its planned trials. tpe: exactly N (per "
                        "optimizer with --fair; with --jobs K up to K-1 more)")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds after which no new trial starts (running ones finish; phased: later phases, "
                        "the seed re-runs too, are skipped, and best.json says which seeds it has)")
    p.add_argument("--storage", default=None,
                   help="memory, journal:PATH, sqlite:///PATH or a database URL (default: sqlite in --out; "
                        "a journal file in --out with --jobs > 1)")
    p.add_argument("--study", default=None, help="study name (default: pyopt-TASK); same storage + name resumes")
    p.add_argument("--jobs", type=int, default=1,
                   help="worker processes sharing the study (default 1; phased: each phase of at least 2 trials "
                        "per process runs on all of them)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    p.add_argument("--out", default=None, help="output folder (default: pyopt-tune-TASK)")
    p.add_argument("--pruner", default="hyperband", choices=["hyperband", "median", "none"])
    p.add_argument("--sampler", default="tpe", choices=["tpe", "random"])
    p.add_argument("--budget", default="auto", choices=["auto", "lr", "core", "full"],
                   help="what to search besides the optimizer: lr only, + betas/momentum/weight decay, + eps/flags")
    p.add_argument("--fair", action="store_true", help="--strategy tpe: one study per optimizer with the same number "
                                                       "of trials")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--schedules", default=None, metavar="LIST",
                   help="lr schedules to search, comma-separated from constant, cosine, wsd (default: constant "
                        "only, as without this option). The schedule becomes a searched choice (plus its warmup, "
                        "0 or 5%% of the steps, from --budget core on); each run gets a complete schedule over "
                        "its own steps, so a low-fidelity run of E epochs anneals over E epochs and successive "
                        "halving compares complete runs. Phased: each optimizer's defaults run at constant, its "
                        "lr sweep under the other schedules in turn (x 10 under the first, x 1/10 under the next). "
                        "Schedule-free optimizers get none; the pruner never stops a decaying run. Needs the "
                        "task's steps per epoch (its steps_per_epoch, else epoch 0's batches are counted); a "
                        "resumed study keeps its schedules")
    p.add_argument("--precision", default="f32",
                   help="train every trial with 16-bit params and optimizer storage, e.g. bf16+master+int8 "
                        "(bf16 params, float32 master copy, 8-bit states); default f32")


def list_all() -> int:
    from . import space
    from .tasks import TASKS

    print("Built-in tasks:")
    for name, factory in TASKS.items():
        task = factory()
        describe = getattr(task, "describe", None)
        print(f"  {name:<18} {describe() if describe else ''}")
    print("\nSearch spaces (budget full; 'lr' searches only lr, 'core' adds betas/momentum and weight decay):")
    for name in space.tunable():
        print(f"  {name:<18} {space.describe(name, 'full')}")
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except KeyboardInterrupt:  # outside the trials (tune() handles those): start-up, writing the outputs
        print("\npyopt tune: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    try:
        importlib.import_module("optuna")  # installed? (pyopt[tune])
    except ImportError as exc:
        print(f"pyopt tune needs Optuna (pip install 'pyopt[tune]'): {exc}", file=sys.stderr)
        return 2
    if args.list:
        return list_all()
    if not args.task:
        print("pyopt tune: give a TASK (pyopt tune --list shows the built-in ones)", file=sys.stderr)
        return 2
    from .run import check_arguments, tune
    from .tasks import load_task

    optimizers = [s.strip() for s in args.optimizers.split(",") if s.strip()] if args.optimizers else None
    try:
        task = load_task(args.task)
        check_arguments(optimizers or (), args.trials, args.jobs, args.storage, args.budget, args.sampler, args.pruner,
                        args.precision, args.strategy)
        if args.fair and args.strategy != "tpe":
            raise ValueError("--fair is for --strategy tpe")
    except (ValueError, ImportError, OSError) as exc:
        print(f"pyopt tune: error: {exc}", file=sys.stderr)
        return 2
    out = args.out or f"pyopt-tune-{task.name}"
    storage = args.storage
    if storage is None:  # tune() makes the folder once the arguments are checked
        storage = f"journal:{os.path.join(out, 'study.journal')}" if args.jobs > 1 else \
            f"sqlite:///{os.path.abspath(os.path.join(out, 'study.db'))}"
    try:
        result = tune(args.task, optimizers, trials=args.trials, timeout=args.timeout, storage=storage,
                      study=args.study, jobs=args.jobs, seed=args.seed, out=out, pruner=args.pruner,
                      sampler=args.sampler, budget=args.budget, fair=args.fair, progress=not args.no_progress,
                      precision=args.precision, strategy=args.strategy, schedules=args.schedules,
                      log=lambda msg: print(f"pyopt tune: {msg}", flush=True))
    except ValueError as exc:
        print(f"pyopt tune: error: {exc}", file=sys.stderr)
        return 2
    print()
    print(result.table())
    if result.role == "helper" and (result.best is None or result.out_shared):  # it says why in its notes
        if result.files:
            print(f"wrote {', '.join(os.path.basename(f) for f in result.files)} to {out}/ (storage {storage})")
        return 130 if result.interrupted else 0
    if result.best is None:
        print("\npyopt tune: no trial finished", file=sys.stderr)
        return 130 if result.interrupted else 1
    print(f"\n{best_line(result)}")
    print(f"wrote {', '.join(os.path.basename(f) for f in result.files)} to {out}/ (storage {storage})")
    print(f"use it: pyopt.from_config({os.path.join(out, 'best.json')!r}, params)")
    return 130 if result.interrupted else 0


def best_line(result: Any) -> str:
    """The winner, and what the times are: the best trial's own training time, and this run's."""
    from .report import best_trial

    b = result.best
    if b.get("strategy") == "phased":
        spread = f"mean of {len(b['seeds'])} seeds {b['value']:.6g} +- {b['std']:.2g}" if len(b["seeds"]) > 1 else \
            f"validation loss {b['value']:.6g} (seed 0 only)"
        edge = f"; edge of range: {'; '.join(b['edge'])}" if b["edge"] else ""
        low = "" if b["full_fidelity"] else f" at {b['epochs']} epochs only"
        return (f"best: {b['optimizer']} {b['hyperparameters']}{_schedule(b)} -> {spread}{low} (trials "
                f"{', '.join(map(str, b['trials']))}; this run took {result.seconds:.1f} s){edge}")
    found = best_trial(result.studies)
    took = found[1].user_attrs.get("seconds") if found else None
    trained = f"trained in {took:.3g} s; " if isinstance(took, (int, float)) else ""
    return (f"best: {b['optimizer']} {b['hyperparameters']}{_schedule(b)} -> validation loss {b['value']:.6g} "
            f"(trial {b['trial']}: {trained}this run took {result.seconds:.1f} s)")


def _schedule(best: dict) -> str:
    """`` with cosine warmup=0.05 schedule`` for a study that searched schedules, else ""."""
    from .space import describe_schedule

    return f" with {describe_schedule(best['schedule'])} schedule" if "schedule" in best else ""
