"""What a tuning run leaves in its output folder: best.json, trials.csv, PNG plots, and the table."""
from __future__ import annotations

import csv
import json
import math
import os
from typing import Any, Sequence

from pyopt.storage import parse_precision


def _finished(study: Any) -> list[Any]:
    import optuna

    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]


def best_trial(studies: Sequence[Any]) -> tuple[Any, Any] | None:
    """The best complete trial over the studies (and its study), or None."""
    best = None
    for study in studies:
        for t in _finished(study):
            if best is None or t.value < best[1].value:
                best = (study, t)
    return best


def best_config(studies: Sequence[Any], task: str) -> dict[str, Any] | None:
    import pyopt

    found = best_trial(studies)
    if found is None:
        return None
    study, t = found
    config = {"optimizer": t.params.get("optimizer", t.user_attrs.get("optimizer")),
              "hyperparameters": t.user_attrs.get("hyperparameters", {}), "value": float(t.value), "task": task,
              "study": study.study_name, "trial": t.number, "pyopt_version": pyopt.__version__}
    if "schedule" in t.user_attrs:  # a study that searched lr schedules (--schedules)
        config["schedule"] = t.user_attrs["schedule"]
    precision = t.user_attrs.get("precision", "f32")
    if precision != "f32":  # how the params were stored, and the optimizer's storage options
        config["precision"] = precision
        config["storage"] = parse_precision(precision).options.as_dict()
    return config


def phased_best(study: Any, summaries: Sequence[tuple[Any, dict[str, Any]]], results: Sequence[dict[str, Any]],
                task: str, levels: Sequence[int], budget: str) -> dict[str, Any] | None:
    """best.json of the phased strategy: the finalist with the best mean over its seeds (those
    with the most seeds first); without finalists, the best result at the highest fidelity any
    config reached. ``value`` is the mean, ``std`` the sample std over ``seeds`` (``values`` each
    seed's); ``edge`` the searched values at the edge of their range (``phases.edge_flags``)."""
    import pyopt

    from . import phases

    if summaries and summaries[0][1]["seeds"]:
        config, summary = summaries[0]
        epochs = levels[-1]
    else:
        reached = [lv for lv in levels if phases.rank(results, lv)]
        if not reached:
            return None
        epochs = reached[-1]
        top = phases.rank(results, epochs)[0]
        config = top["config"]
        summary = phases.seed_summary(results, config, epochs)
    numbers = {r["seed"]: r["number"] for r in results if r["config"] == config and r["epochs"] == epochs}
    trial = study.trials[numbers[summary["seeds"][0]]]
    config_dict = {"optimizer": config.optimizer, "hyperparameters": trial.user_attrs.get("hyperparameters", {}),
                   "value": float(summary["mean"]), "std": float(summary["std"]), "seeds": summary["seeds"],
                   "values": [float(v) for v in summary["values"]], "epochs": epochs,
                   "full_fidelity": epochs == levels[-1],
                   "edge": phases.edge_flags(config, budget), "strategy": "phased", "task": task,
                   "study": study.study_name, "trial": trial.number,
                   "trials": [numbers[s] for s in summary["seeds"]], "pyopt_version": pyopt.__version__}
    if "schedule" in trial.user_attrs:  # a study that searched lr schedules (--schedules)
        config_dict["schedule"] = trial.user_attrs["schedule"]
    precision = trial.user_attrs.get("precision", "f32")
    if precision != "f32":
        config_dict["precision"] = precision
        config_dict["storage"] = parse_precision(precision).options.as_dict()
    return config_dict


def _reached(t: Any, full: int | None) -> int:
    """The epochs (or steps) a finished trial trained: as it recorded them (a diverged run stops
    early), else its last reported step + 1, else full."""
    if isinstance(t.user_attrs.get("epochs"), int):
        return t.user_attrs["epochs"]
    if t.intermediate_values:
        return max(t.intermediate_values) + 1
    return full or 0


def summary_rows(studies: Sequence[Any], full: int | None = None) -> list[dict[str, Any]]:
    """Per optimizer: the best *completed* full-fidelity value on seed 0 and its lr, how many
    trials reached each fidelity (``reached``: {epochs: count}), and counts of pruned (by the
    pruner; low-fidelity stops are not), failed and diverged trials. ``full``: the task's epochs
    (None: every complete trial counts as full)."""
    import optuna

    from .phases import rungs

    S = optuna.trial.TrialState
    levels = rungs(full) if full else []
    rows: dict[str, dict[str, Any]] = {}
    for study in studies:
        for t in study.trials:
            name = t.params.get("optimizer")
            if name is None:
                continue
            r = rows.setdefault(name, {"optimizer": name, "best": math.inf, "lr": None, "complete": 0, "pruned": 0,
                                       "failed": 0, "diverged": 0, "reached": {lv: 0 for lv in levels}})
            if t.state in (S.COMPLETE, S.PRUNED):
                got = _reached(t, full)
                for lv in levels:
                    if got >= lv:
                        r["reached"][lv] += 1
            if t.state == S.COMPLETE:
                r["complete"] += 1
                if t.user_attrs.get("diverged"):
                    r["diverged"] += 1
                at_full = full is None or t.user_attrs.get("planned_epochs", full) == full
                if at_full and t.user_attrs.get("seed", 0) == 0 and t.value is not None and t.value < r["best"]:
                    r["best"] = t.value
                    r["lr"] = t.user_attrs.get("hyperparameters", {}).get("lr")
            elif t.state == S.PRUNED:
                if t.user_attrs.get("low_fidelity"):
                    if t.user_attrs.get("diverged"):
                        r["diverged"] += 1
                else:
                    r["pruned"] += 1
            elif t.state == S.FAIL:
                r["failed"] += 1
    return sorted(rows.values(), key=lambda r: (r["best"], r["optimizer"]))


def table(studies: Sequence[Any], full: int | None = None) -> str:
    """One row per optimizer, at most 80 columns: best completed full-fidelity value (seed 0) and
    its lr, the trials that reached each fidelity (``@E``: trained E epochs or more), pruned (by
    the pruner), failed, diverged."""
    rows = summary_rows(studies, full)
    levels = list(rows[0]["reached"]) if rows else []
    reach = "".join(f"{'@' + str(lv):>6}" for lv in levels)
    lines = [f"{'optimizer':<18} {'best val loss':>13} {'lr':>9}{reach} {'pruned':>6} {'failed':>6} {'div':>4}"]
    for r in rows:
        best = f"{r['best']:.6g}" if math.isfinite(r["best"]) else "-"
        lr = f"{r['lr']:.3g}" if r["lr"] is not None else "-"
        counts = "".join(f"{r['reached'][lv]:>6}" for lv in levels)
        lines.append(f"{r['optimizer'][:18]:<18} {best:>13} {lr:>9}{counts} {r['pruned']:>6} {r['failed']:>6} "
                     f"{r['diverged']:>4}")
    if full:
        lines.append(f"(best: completed {full}-epoch runs, seed 0; @E: trials that trained >= E epochs)")
    return "\n".join(lines)


def write_csv(studies: Sequence[Any], path: str) -> None:
    fields = ["study", "number", "state", "value", "optimizer", "hyperparameters", "phase", "planned_epochs", "seed",
              "diverged", "warm_start",
              "seconds", "epochs", "error", "datetime_start", "duration_s", "schedule"]
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for study in studies:
            for t in study.trials:
                w.writerow({
                    "study": study.study_name, "number": t.number, "state": t.state.name, "value": t.value,
                    "optimizer": t.params.get("optimizer", t.system_attrs.get("fixed_params", {}).get("optimizer")),
                    "hyperparameters": json.dumps(t.user_attrs.get("hyperparameters", {}), sort_keys=True),
                    "phase": t.user_attrs.get("phase", ""), "planned_epochs": t.user_attrs.get("planned_epochs", ""),
                    "seed": t.user_attrs.get("seed", ""),
                    "diverged": t.user_attrs.get("diverged", ""), "warm_start": t.user_attrs.get("warm_start", False),
                    "seconds": t.user_attrs.get("seconds", ""), "epochs": t.user_attrs.get("epochs", ""),
                    "error": t.user_attrs.get("error", t.system_attrs.get("fail_reason", "")),
                    "datetime_start": t.datetime_start.isoformat() if t.datetime_start else "",
                    "duration_s": t.duration.total_seconds() if t.duration else "",
                    "schedule": json.dumps(t.user_attrs["schedule"], sort_keys=True)
                    if "schedule" in t.user_attrs else "",
                })
    os.replace(tmp, path)


def write_json(obj: Any, path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


LEGEND_ROWS = 18  # per column, in an 8 x 5 inch figure


def fit_layout(fig: Any) -> None:
    """An 8 x 5 inch figure with everything inside, the legend too: Optuna puts a legend with one
    row per trial right of the axes, which runs off the figure past ~20 trials; it gets columns
    of LEGEND_ROWS and the figure grows to the right for them."""
    fig.set_size_inches(8, 5)
    for ax in fig.axes:
        if ax.get_legend() is None:
            continue
        handles, labels = ax.get_legend_handles_labels()
        columns = max(1, math.ceil(len(labels) / LEGEND_ROWS))
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, ncol=columns,
                  fontsize="small")
        fig.set_size_inches(8 + 1.1 * (columns - 1), 5)
    fig.tight_layout()


def write_plots(studies: Sequence[Any], out: str) -> list[str]:
    """Optimization history, best loss per optimizer, parameter importances, intermediate values
    (PNG, matplotlib). A plot that cannot be drawn (too few trials) is skipped. Returns the files.
    Raises ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    written = []
    study = studies[0]

    def save(name: str, draw: Any) -> None:
        try:
            ax = draw()
            fig = ax.figure if hasattr(ax, "figure") else plt.gcf()
            fit_layout(fig)
            path = os.path.join(out, name)
            fig.savefig(path, dpi=100)
            written.append(path)
        except Exception:  # noqa: BLE001 - a plot is a bonus; the data is in trials.csv
            pass
        finally:
            plt.close("all")

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if len(studies) == 1:
            save("optimization_history.png", lambda: ovm.plot_optimization_history(study))
            save("param_importances.png", lambda: ovm.plot_param_importances(study))
            save("intermediate_values.png", lambda: ovm.plot_intermediate_values(study))

        def bars() -> Any:
            rows = [r for r in summary_rows(studies) if math.isfinite(r["best"])]
            fig, ax = plt.subplots()
            ax.barh([r["optimizer"] for r in rows][::-1], [r["best"] for r in rows][::-1])
            ax.set_xlabel("best validation loss")
            ax.set_title("Best validation loss per optimizer")
            if rows and min(r["best"] for r in rows) > 0:
                ax.set_xscale("log")
            return ax

        save("best_per_optimizer.png", bars)
    return written
