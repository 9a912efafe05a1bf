"""pyopt tune against baselines (issue 15): on every built-in task, at 20 and 40 trials, over 3
tuner seeds, the configuration each method picks, re-trained on held-out training seeds.

Methods (every search gets the same number of training runs, ``N``):

- ``pyopt``: ``tuner.tune(task, trials=N, seed=s, progress=False)`` with its defaults (the phased
  strategy, in-memory storage); its pick is best.json's optimizer and hyperparameters.
- ``a``: AdamW at its pyopt defaults (lr 1e-3, weight decay 0.01), no search.
- ``b``: plain Optuna TPE (``TPESampler(seed=s)``, no pruning) over AdamW's lr in log[1e-5, 1e-1]
  and weight decay in log[1e-6, 1e-1], N trials.
- ``c``: random search (``RandomSampler(seed=s)``) over pyopt's space: the phased default's six
  optimizers (``tuner.DEFAULT_PORTFOLIO``) and ``tuner.space.suggest(trial, optimizer, budget)``
  with ``budget = space.auto_budget(N / 6)``, the rule ``pyopt tune --strategy tpe`` applies to
  the trials per optimizer ("lr" at N = 20 and 40: the budget the phased default also picks there).
- ``d``: the twenty-line script a competent Optuna user writes (``plain_script`` below): TPE
  (``TPESampler(seed=s)``, Optuna's defaults, no pruning, no warm starts) over the same six
  optimizers and each one's lr over a textbook range written here (not pyopt's record ranges).

The searches train on training seed 0 (pyopt's phase 4 also on seeds 1 and 2). The chosen
configuration of every (task, N, tuner seed, method) is then re-trained at full epochs on the
held-out training seeds 100, 101, 102 (``task.init_params(seed)`` and the batch order); the cell's
score is the mean of those three final validation losses. A re-training run that diverges (a
NaN/Inf loss or a validation loss above 10x the initial one: ``tuner.study.train``) scores the
task's initial validation loss and is counted in the report.

    python experiments/tuner_baselines.py                    # run (resumes) and print the report
    python experiments/tuner_baselines.py --tasks beale --trials 20 --seeds 1
    python experiments/tuner_baselines.py --report           # the report from the saved results only
    python experiments/tuner_baselines.py --tune budget=core --out /tmp/core   # a variant of pyopt's defaults

Results go to ``--out`` (one JSON file per task, N and tuner seed, written after each method, so
an interrupted run resumes and a finished cell is skipped); the report is printed and written to
``OUT/report.md``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from typing import Any

import optuna

from pyopt import tuner
from pyopt.tuner import space
from pyopt.tuner.study import train

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from heldout_tasks import HELDOUT  # noqa: E402

METHODS = ("pyopt", "a", "b", "c", "d")
LABELS = {"pyopt": "pyopt", "a": "(a) AdamW defaults", "b": "(b) TPE AdamW lr+wd", "c": "(c) random, pyopt space",
          "d": "(d) plain TPE script"}
RETRAIN_SEEDS = (100, 101, 102)
TOLERANCE = 0.01        # "pyopt <= baseline" within 1% of the baseline (or ABS_TOLERANCE)
ABS_TOLERANCE = 1e-6    # for tasks solved to round-off (rosenbrock, beale)
DEFAULT_OUT = os.path.join("experiments", "results", "tuner_baselines")
HELDOUT_OUT = os.path.join("experiments", "results", "tuner_baselines_heldout")
TASKS: dict[str, Any] = {}  # name -> task factory: tuner.TASKS, or HELDOUT with --heldout

# (d)'s learning-rate ranges: the usual advice for each optimizer, not pyopt's records.
TEXTBOOK_LR = {
    "adamw": (1e-5, 1e-1),
    "nag": (1e-4, 1.0),                 # SGD with Nesterov momentum
    "lion": (1e-6, 1e-2),               # Lion: 3-10x below AdamW's lr
    "schedulefree_adamw": (1e-5, 1e-1),
    "prodigy": (0.1, 10.0),             # lr-free: lr is a multiplier, 1 by default
    "dadapt_adam": (0.1, 10.0),
}


def quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


# --------------------------------------------------------------------------------------------
# The methods: each returns (optimizer, hyperparameters, what the search saw on seed 0, details)


TUNE_OPTIONS: dict[str, Any] = {}  # --tune KEY=VALUE: more tuner.tune arguments for "pyopt" (variants)


def run_pyopt(task: Any, trials: int, seed: int) -> dict[str, Any]:
    result = tuner.tune(task, trials=trials, seed=seed, progress=False, **TUNE_OPTIONS)
    best = result.best
    trials_run = [t for t in result.studies[0].trials if t.state.is_finished() and not t.user_attrs.get("surplus")]
    by_phase: dict[str, int] = {}
    for t in trials_run:
        key = str(t.user_attrs.get("phase", "?"))
        by_phase[key] = by_phase.get(key, 0) + 1
    epochs = sum(t.user_attrs.get("epochs", max(t.intermediate_values, default=-1) + 1) for t in trials_run)
    return {"optimizer": best["optimizer"], "hyper": best["hyperparameters"], "search_value": best["value"],
            "details": {"phases": result.phases, "trials_by_phase": by_phase, "best_seeds": best["seeds"],
                        "best_values": best["values"], "edge": best.get("edge", []), "trials": len(trials_run),
                        "epochs_trained": epochs}}


def adamw_defaults(task: Any, trials: int, seed: int) -> dict[str, Any]:
    return {"optimizer": "adamw", "hyper": {}, "search_value": None, "details": {}}


def tpe_adamw(task: Any, trials: int, seed: int) -> dict[str, Any]:
    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        weight_decay = trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True)
        return train(task, "adamw", {"lr": lr, "weight_decay": weight_decay}, seed=0)[0]

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    return {"optimizer": "adamw", "hyper": dict(study.best_params), "search_value": study.best_value, "details": {}}


def random_pyopt_space(task: Any, trials: int, seed: int) -> dict[str, Any]:
    names = list(tuner.DEFAULT_PORTFOLIO)
    budget = space.auto_budget(trials / len(names))
    chosen: dict[int, tuple[str, dict[str, Any]]] = {}

    def objective(trial: optuna.Trial) -> float:
        name = trial.suggest_categorical("optimizer", names)
        hyper = space.suggest(trial, name, budget)
        chosen[trial.number] = (name, hyper)
        return train(task, name, hyper, seed=0)[0]

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    name, hyper = chosen[study.best_trial.number]
    return {"optimizer": name, "hyper": hyper, "search_value": study.best_value, "details": {"budget": budget}}


def plain_script(task: Any, trials: int, seed: int) -> dict[str, Any]:
    """(d): what a competent Optuna user writes."""
    def objective(trial: optuna.Trial) -> float:
        name = trial.suggest_categorical("optimizer", list(TEXTBOOK_LR))
        lr = trial.suggest_float(f"{name}_lr", *TEXTBOOK_LR[name], log=True)
        return train(task, name, {"lr": lr}, seed=0)[0]

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    name = study.best_params["optimizer"]
    return {"optimizer": name, "hyper": {"lr": study.best_params[f"{name}_lr"]}, "search_value": study.best_value,
            "details": {}}


RUNNERS = {"pyopt": run_pyopt, "a": adamw_defaults, "b": tpe_adamw, "c": random_pyopt_space, "d": plain_script}


def as_hyper(hyper: dict[str, Any]) -> dict[str, Any]:
    """JSON turned tuples (betas) into lists; the optimizers take tuples."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in hyper.items()}


def retrain(task: Any, optimizer: str, hyper: dict[str, Any]) -> dict[str, Any]:
    values, diverged = [], []
    for s in RETRAIN_SEEDS:
        value, info = train(task, optimizer, as_hyper(hyper), seed=s)
        diverged.append(bool(info["diverged"]) or not math.isfinite(value))
        values.append(info["initial_val_loss"] if diverged[-1] else value)
    return {"values": values, "diverged": diverged, "score": statistics.fmean(values)}


# --------------------------------------------------------------------------------------------
# Running the grid


def cell_path(out: str, task: str, trials: int, seed: int) -> str:
    return os.path.join(out, f"{task}-n{trials}-s{seed}.json")


def load(path: str) -> dict[str, Any]:
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {}


def save(path: str, data: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, default=lambda v: v.item() if hasattr(v, "item") else str(v))
    os.replace(tmp, path)


def run_grid(tasks: list[str], budgets: list[int], seeds: int, methods: list[str], out: str) -> None:
    os.makedirs(out, exist_ok=True)
    quiet()
    for name in tasks:
        task = TASKS[name]()
        for trials in budgets:
            for seed in range(seeds):
                path = cell_path(out, name, trials, seed)
                data = load(path)
                for method in methods:
                    if method in data:
                        continue
                    start = time.perf_counter()
                    pick = RUNNERS[method](task, trials, seed)
                    search_seconds = time.perf_counter() - start
                    start = time.perf_counter()
                    pick.update(retrain(task, pick["optimizer"], pick["hyper"]))
                    pick.update(search_seconds=search_seconds, retrain_seconds=time.perf_counter() - start)
                    data[method] = pick
                    save(path, data)
                    print(f"{name} N={trials} seed={seed} {method}: {pick['optimizer']} "
                          f"{short(pick['hyper'])} -> {pick['score']:.5g} ({search_seconds:.1f} s)", flush=True)


# --------------------------------------------------------------------------------------------
# The report


def short(hyper: dict[str, Any]) -> str:
    keys = [k for k in ("lr", "weight_decay") if k in hyper]
    return " ".join(f"{'wd' if k == 'weight_decay' else k}={float(hyper[k]):.2g}" for k in keys)


def fmt(v: float) -> str:
    return f"{v:.4g}"


def leq(x: float, y: float, tolerant: bool) -> bool:
    return x <= y + (max(TOLERANCE * abs(y), ABS_TOLERANCE) if tolerant else 0.0)


def report(tasks: list[str], budgets: list[int], seeds: int, out: str) -> str:
    cells: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for name in tasks:
        for trials in budgets:
            for seed in range(seeds):
                data = load(cell_path(out, name, trials, seed))
                for method in METHODS:
                    if method in data:
                        cells.setdefault((name, trials, method), []).append(data[method])
    best_of_task = {name: min((r["score"] for (t, _, _), rs in cells.items() if t == name for r in rs),
                              default=math.nan) for name in tasks}
    lines = ["Score: the mean final validation loss over re-training seeds "
             f"{', '.join(map(str, RETRAIN_SEEDS))} of the configuration each method picked; a cell shows the "
             f"mean ± std of that score over {seeds} tuner seeds, then the regret (score minus the best "
             "re-trained score any method reached on the task at any N, as a mean over tuner seeds) in brackets.",
             ""]
    wins: dict[tuple[int, str, bool], int] = {}
    counted: dict[int, int] = {}
    diverged_runs: dict[str, int] = {}
    seconds: dict[tuple[str, int], list[float]] = {}
    for trials in budgets:
        lines += [f"### {trials} trials", "",
                  "| task | best found | " + " | ".join(LABELS[m] for m in METHODS) + " |",
                  "|---|---|" + "---|" * len(METHODS)]
        for name in tasks:
            row = [name, fmt(best_of_task[name])]
            means = {}
            for method in METHODS:
                rs = cells.get((name, trials, method), [])
                if not rs:
                    row.append("–")
                    continue
                scores = [r["score"] for r in rs]
                means[method] = statistics.fmean(scores)
                std = statistics.stdev(scores) if len(scores) > 1 else 0.0
                row.append(f"{fmt(means[method])} ± {std:.2g} [{means[method] - best_of_task[name]:.2g}]")
                diverged_runs[method] = diverged_runs.get(method, 0) + sum(sum(r["diverged"]) for r in rs)
                seconds.setdefault((method, trials), []).extend(r["search_seconds"] for r in rs)
            lines.append("| " + " | ".join(row) + " |")
            if "pyopt" in means:
                counted[trials] = counted.get(trials, 0) + 1
                for method in ("a", "b", "c", "d"):
                    for tolerant in (False, True):
                        if method in means and leq(means["pyopt"], means[method], tolerant):
                            wins[(trials, method, tolerant)] = wins.get((trials, method, tolerant), 0) + 1
        lines.append("")
    lines += ["### What each method picked", "",
              "Per task and N, the configuration each tuner seed picked (in seed order; lr and weight decay "
              "where searched).", "",
              "| task | N | " + " | ".join(LABELS[m] for m in ("pyopt", "b", "c", "d")) + " |",
              "|---|---|" + "---|" * 4]
    for name in tasks:
        for trials in budgets:
            row = [name, str(trials)]
            for method in ("pyopt", "b", "c", "d"):
                rs = cells.get((name, trials, method), [])
                row.append(", ".join(f"{r['optimizer']} {short(r['hyper'])}" for r in rs) or "–")
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "### Summary", "",
              f"Tasks where pyopt's mean score ≤ the baseline's: strict, and tolerant (within "
              f"{TOLERANCE:.0%} of the baseline or {ABS_TOLERANCE:g}).", "",
              "| N | tasks | " + " | ".join(f"≤ ({m}) strict / tol." for m in "abcd") + " |",
              "|---|---|---|---|---|---|"]
    for trials in budgets:
        row = [str(trials), str(counted.get(trials, 0))]
        for method in ("a", "b", "c", "d"):
            row.append(f"{wins.get((trials, method, False), 0)} / {wins.get((trials, method, True), 0)}")
        lines.append("| " + " | ".join(row) + " |")
    if 20 in budgets and 40 in budgets:
        # pyopt's 40 trials train fewer epochs than the baselines' 20 (N x the task's epochs, as they
        # never stop a run early but for a divergence): the comparison at about equal compute.
        lines += ["", "About equal compute: pyopt at 40 trials against the baselines at 20 (tasks where pyopt's "
                  "mean score ≤ the baseline's, strict / tolerant):", "",
                  "| pyopt N | baselines N | tasks | " + " | ".join(f"≤ ({m})" for m in "abcd") + " |",
                  "|---|---|---|---|---|---|---|"]
        row, shared = ["40", "20", ""], 0
        for method in ("a", "b", "c", "d"):
            won, compared = {False: 0, True: 0}, 0
            for name in tasks:
                mine, theirs = cells.get((name, 40, "pyopt")), cells.get((name, 20, method))
                if not mine or not theirs:
                    continue
                compared += 1
                for tolerant in won:
                    won[tolerant] += leq(statistics.fmean(r["score"] for r in mine),
                                         statistics.fmean(r["score"] for r in theirs), tolerant)
            row.append(f"{won[False]} / {won[True]}")
            shared = max(shared, compared)
        row[2] = str(shared)
        lines.append("| " + " | ".join(row) + " |")
        full = {name: TASKS[name].epochs for name in tasks}  # (a class attribute: no data loaded)
        spent = [r["details"]["epochs_trained"] / full[name] for (name, n, m), rs in cells.items()
                 if n == 40 and m == "pyopt" for r in rs if "epochs_trained" in r["details"]]
        if spent:
            lines += ["", f"pyopt's 40 trials trained {statistics.fmean(spent):.1f} full runs' worth of epochs "
                      f"(mean over tasks and tuner seeds; min {min(spent):.1f}, max {max(spent):.1f}); the "
                      "baselines' 20 trials train at most 20."]
    lines += ["", "Search wall time per cell (seconds, mean over tasks and tuner seeds; re-training not included):", "",
              "| N | " + " | ".join(LABELS[m] for m in METHODS) + " |", "|---|" + "---|" * len(METHODS)]
    for trials in budgets:
        times = [statistics.fmean(seconds[(m, trials)]) if seconds.get((m, trials)) else None for m in METHODS]
        lines.append(f"| {trials} | " + " | ".join("–" if t is None else f"{t:.2f}" for t in times) + " |")
    lines += ["", "Re-training runs that diverged (scored as the task's initial loss): "
              + ", ".join(f"{LABELS[m]} {diverged_runs.get(m, 0)}" for m in METHODS) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=None, help="comma-separated tasks (all built-in ones; with --heldout, all "
                        "of experiments/heldout_tasks.py)")
    parser.add_argument("--heldout", action="store_true",
                        help="the held-out tasks of experiments/heldout_tasks.py instead of the built-in ones")
    parser.add_argument("--trials", default="20,40", help="comma-separated trial budgets N (20,40)")
    parser.add_argument("--seeds", type=int, default=3, help="tuner seeds 0..SEEDS-1 (3)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"subset of {','.join(METHODS)}")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"results folder ({DEFAULT_OUT})")
    parser.add_argument("--report", action="store_true", help="only render the report from the saved results")
    parser.add_argument("--tune", action="append", default=[], metavar="KEY=VALUE",
                        help="another tuner.tune argument for pyopt, e.g. pruner=none or budget=core (a variant: "
                             "give it its own --out)")
    args = parser.parse_args(argv)
    for option in args.tune:
        key, sep, value = option.partition("=")
        if not sep or key not in ("pruner", "budget", "sampler", "schedules", "strategy", "optimizers"):
            parser.error(f"--tune {option!r}: expected KEY=VALUE with KEY one of pruner, budget, sampler, "
                         "schedules, strategy, optimizers")
        TUNE_OPTIONS[key] = value.split(",") if key == "optimizers" else value
    TASKS.clear()
    TASKS.update(HELDOUT if args.heldout else tuner.TASKS)
    if args.heldout and args.out == DEFAULT_OUT:
        args.out = HELDOUT_OUT
    tasks = [t for t in (args.tasks or ",".join(TASKS)).split(",") if t]
    for t in tasks:
        if t not in TASKS:
            parser.error(f"unknown task {t!r}; {'held-out' if args.heldout else 'built-in'}: {', '.join(TASKS)}")
    budgets = [int(n) for n in args.trials.split(",") if n]
    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        if m not in METHODS:
            parser.error(f"unknown method {m!r}; one of {', '.join(METHODS)}")
    if args.report and not any(os.path.exists(cell_path(args.out, t, n, s))
                               for t in tasks for n in budgets for s in range(args.seeds)):
        parser.error(f"no results in {args.out!r} for these tasks, trials and seeds")
    if not args.report:
        start = time.perf_counter()
        run_grid(tasks, budgets, args.seeds, methods, args.out)
        print(f"\nran in {time.perf_counter() - start:.0f} s\n")
    text = report(tasks, budgets, args.seeds, args.out)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
