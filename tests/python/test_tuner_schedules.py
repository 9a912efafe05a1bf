"""lr schedules in the tuner (``pyopt tune --schedules``, ``tuner.tune(schedules=...)``): the
schedule a run trains with step by step (against pyopt.schedules), its horizon at each fidelity,
what best.json and trials.csv record, bad input, the default left as it was, resume, both
strategies and several processes."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

from pyopt import schedules as sch  # noqa: E402
from pyopt import tuner  # noqa: E402
from pyopt.tuner import phases, space  # noqa: E402


@pytest.fixture
def quad(quadratic_file):
    return tuner.load_task(f"{quadratic_file}:SCHEDULES")


class Ramp:
    """A unit gradient every step, so SGD moves w by exactly -lr_k at step k: the lr the optimizer
    used at each step can be read off the params the task sees."""

    name = "ramp"

    def __init__(self, epochs=4, batches=(5, 5, 5, 5), declared=5):
        self.epochs, self.batches = epochs, list(batches)
        if declared is not None:
            self.steps_per_epoch = declared
        self.seen: list[float] = []

    def init_params(self, seed):
        return {"w": np.zeros(1)}

    def train_batches(self, epoch, rng):
        return [None] * self.batches[epoch]

    def loss_and_grads(self, params, batch):
        self.seen.append(float(params["w"][0]))
        return 0.0, {"w": np.ones(1)}

    def validation_loss(self, params):
        self.last = float(params["w"][0])
        return 1.0

    def lrs(self) -> list[float]:
        return list(-np.diff(self.seen + [self.last]))


def _trials(result):
    return [t for t in result.studies[0].trials if not t.user_attrs.get("surplus")]


# --- the schedule a run trains with ----------------------------------------------------------

@pytest.mark.parametrize("epochs", [None, 2])
def test_the_optimizer_steps_with_the_schedule_over_this_runs_steps(epochs) -> None:
    steps = 5 * (epochs or 4)  # the horizon: this run's epochs x steps_per_epoch
    cases = [({"name": "cosine", "warmup": 0.0}, sch.cosine(steps)),
             ({"name": "cosine", "warmup": 0.05}, sch.cosine(steps, warmup_steps=round(0.05 * steps))),
             ({"name": "wsd", "warmup": 0.0}, sch.wsd(steps, decay_fraction=0.2, decay="sqrt")),
             ({"name": "wsd", "warmup": 0.05}, sch.wsd(steps, warmup_steps=round(0.05 * steps), decay_fraction=0.2,
                                                       decay="sqrt"))]
    for spec, reference in cases:
        task = Ramp()
        value, info = tuner.train(task, "sgd", {"lr": 0.1}, epochs=epochs, schedule=spec)
        expected = [0.1 * reference(k) for k in range(steps)]
        assert task.lrs() == pytest.approx(expected, rel=1e-12, abs=1e-15), spec
        assert len(set(np.round(task.lrs(), 12))) > 1  # not constant
        assert info["steps"] == steps
        assert info["schedule"] == {**spec, "total_steps": steps, "warmup_steps": round(spec["warmup"] * steps)}
    task = Ramp()
    _, info = tuner.train(task, "sgd", {"lr": 0.1}, epochs=epochs, schedule={"name": "constant", "warmup": 0.0})
    assert task.lrs() == pytest.approx([0.1] * steps) and "total_steps" not in info["schedule"]
    task = Ramp()
    _, info = tuner.train(task, "sgd", {"lr": 0.1}, epochs=epochs)  # no schedule: as before
    assert task.lrs() == pytest.approx([0.1] * steps) and "schedule" not in info


def test_steps_per_epoch_declared_counted_or_wrong() -> None:
    from pyopt.tuner.study import steps_per_epoch

    assert steps_per_epoch(Ramp(declared=5)) == 5
    counted = Ramp(batches=(7, 7, 7, 7), declared=None)
    assert steps_per_epoch(counted) == 7
    _, info = tuner.train(counted, "sgd", {"lr": 0.1}, schedule={"name": "cosine", "warmup": 0.0})
    assert info["schedule"]["total_steps"] == 28 and counted.lrs() == pytest.approx([0.1 * sch.cosine(28)(k)
                                                                                    for k in range(28)])
    for task in (Ramp(batches=(5, 5, 6, 5)), Ramp(batches=(5, 4, 5, 5), declared=None)):
        with pytest.raises(ValueError, match="steps_per_epoch"):
            tuner.train(task, "sgd", {"lr": 0.1}, schedule={"name": "wsd", "warmup": 0.0})
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="steps_per_epoch must be an int >= 1"):
            steps_per_epoch(Ramp(declared=bad))
    # Built-in tasks declare it, and it is what their epochs yield.
    from pyopt.tuner.tasks import TASKS

    for name in ("quadratic", "softmax-digits", "logistic-cancer"):
        task = TASKS[name]()
        assert task.steps_per_epoch == sum(1 for _ in task.train_batches(0, np.random.default_rng(3))), name


def test_schedule_free_optimizers_get_no_schedule() -> None:
    assert space.schedule_free("schedulefree_adamw") and space.schedule_free("schedulefree_sgd")
    assert not space.schedule_free("prodigy") and not space.schedule_free("dadapt_adam")
    with pytest.raises(ValueError, match="schedule-free"):
        tuner.train(Ramp(), "schedulefree_sgd", {"lr": 0.1}, schedule={"name": "cosine", "warmup": 0.0})


# --- bad input ----------------------------------------------------------------------------

def test_bad_schedules_are_refused_before_anything_runs(quad, tmp_path) -> None:
    assert space.check_schedules(None) == ("constant",)
    assert space.check_schedules("cosine, wsd,cosine") == ("cosine", "wsd")
    assert space.check_schedules(["wsd"]) == ("wsd",)
    for bad in ("cosine,bogus", "", ["linear"], 3):
        with pytest.raises(ValueError, match=r"schedules \(--schedules\)"):
            space.check_schedules(bad)
    out = tmp_path / "never"
    with pytest.raises(ValueError, match=r"schedules \(--schedules\): unknown schedule\(s\) 'step'"):
        tuner.tune(quad, ["sgd"], trials=3, schedules="cosine,step", out=str(out), progress=False)

    class NoSchedules(Ramp):
        schedules = False

    for strategy in ("phased", "tpe"):
        with pytest.raises(ValueError, match=r"schedules \(--schedules\): task 'ramp' does not take lr schedules"):
            tuner.tune(NoSchedules(), ["sgd"], trials=3, schedules="cosine", out=str(out), progress=False,
                       strategy=strategy)
    tuner.tune(NoSchedules(), ["sgd"], trials=2, schedules="constant", progress=False)  # constant is fine

    def fit(make_optimizer, report):
        return 0.0

    with pytest.raises(ValueError, match=r"schedules \(--schedules\) need a Task"):
        tuner.tune(fit, ["sgd"], trials=3, schedules="constant,cosine", out=str(out), progress=False)
    assert not out.exists()


def test_cli(quadratic_file, tmp_path, capsys) -> None:
    from pyopt import cli

    out = tmp_path / "o"
    assert cli.main(["tune", f"{quadratic_file}:SCHEDULES", "--optimizers", "sgd", "--schedules", "cosine,nope",
                     "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--schedules" in err and "'nope'" in err and not out.exists()
    assert cli.main(["tune", f"{quadratic_file}:SCHEDULES", "--optimizers", "sgd,adam", "--trials", "8", "--schedules",
                     "constant,cosine", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    best = json.loads((out / "best.json").read_text())
    assert best["schedule"]["name"] in ("constant", "cosine")
    assert f"with {space.describe_schedule(best['schedule'])} schedule" in text
    with pytest.raises(SystemExit):
        cli.main(["tune", "--help"])
    assert "--schedules LIST" in capsys.readouterr().out


# --- the search --------------------------------------------------------------------------------

def test_phased_search_over_schedules(quad, tmp_path) -> None:
    names = ["sgd", "adam", "schedulefree_sgd"]
    out = tmp_path / "out"
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    result = tuner.tune(quad, names, trials=20, out=str(out), storage=storage, progress=False,
                        schedules="constant,cosine,wsd")
    trials = _trials(result)
    assert len(trials) == 20 and [line.split(" ")[1] for line in result.phases] == ["1", "2", "3", "4"]
    # Phase 1: the defaults at constant, the lr sweep under cosine then wsd; schedule-free: none.
    for name in ("sgd", "adam"):
        first = [t for t in trials if t.user_attrs["phase"] == 1 and t.params["optimizer"] == name]
        assert [t.params["schedule"] for t in first] == ["constant", "cosine", "wsd"]
        lr = space.defaults(name)["lr"]
        low, high = space.lr_range(name)
        expected = [min(max(lr * f, low), high) for f in phases.LR_FACTORS]
        assert [t.params[f"{name}.lr"] for t in first] == pytest.approx(expected)
    for t in trials:
        attr = t.user_attrs["schedule"]
        if t.params["optimizer"] == "schedulefree_sgd":
            assert "schedule" not in t.params and attr == {"name": "constant", "warmup": 0.0}
            continue
        assert t.params["schedule"] == attr["name"]
        if attr["name"] != "constant" and t.state.name in ("COMPLETE", "PRUNED") and not t.user_attrs["diverged"]:
            # The horizon is this run's steps: its fidelity (1 or 4 epochs) x 10 steps per epoch.
            assert attr["total_steps"] == t.user_attrs["planned_epochs"] * 10 == t.user_attrs["steps"], t.number
        if attr["name"] != "constant":
            assert not (t.state.name == "PRUNED" and not t.user_attrs.get("low_fidelity"))  # never by the pruner
    # A run re-trained alone with its recorded schedule gives its value: a low-fidelity run
    # trains a complete schedule over its own epochs (not the start of the full one).
    low = next(t for t in trials if t.user_attrs["planned_epochs"] == 1 and t.params.get("schedule") == "cosine"
               and not t.user_attrs["diverged"])
    hyper = {k: tuple(v) if isinstance(v, list) else v for k, v in low.user_attrs["hyperparameters"].items()}
    value, info = tuner.train(quad, low.params["optimizer"], hyper, epochs=1, schedule={"name": "cosine", "warmup": 0.0})
    assert value == low.value and info["schedule"]["total_steps"] == 10
    # best.json and trials.csv record the schedule.
    best = json.loads((out / "best.json").read_text())
    winner = result.studies[0].trials[best["trial"]]
    assert best["schedule"] == winner.user_attrs["schedule"]
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [json.loads(r["schedule"]) for r in rows if r["schedule"]] == \
        [t.user_attrs["schedule"] for t in result.studies[0].trials if "schedule" in t.user_attrs]
    assert sum(1 for r in rows if r["schedule"]) >= 20
    # Resume: the same plan, the finished runs reused; other schedules are refused.
    again = tuner.tune(quad, names, trials=4, storage=storage, progress=False, schedules="constant,cosine,wsd")
    assert len(_trials(again)) == 24 and "0 new trials" in again.phases[0]
    assert not [t for t in _trials(again)[20:] if t.user_attrs["phase"] in (1, 2)]
    with pytest.raises(ValueError, match=r"schedules \(--schedules\): study 'pyopt-quadratic-schedules' ran with "
                                         r"schedules constant,cosine,wsd"):
        tuner.tune(quad, names, trials=4, storage=storage, progress=False)


def test_low_fidelity_run_is_not_the_start_of_the_full_one(quad) -> None:
    """With a schedule, the first epoch of a 4-epoch run (lr still high) differs from a 1-epoch
    run (annealed to 0): the low fidelity is a complete, shorter run."""
    spec = {"name": "cosine", "warmup": 0.0}
    short, _ = tuner.train(quad, "sgd", {"lr": 0.1}, epochs=1, schedule=spec)
    first: list[float] = []
    tuner.train(quad, "sgd", {"lr": 0.1}, schedule=spec, report=lambda v, e: bool(first.append(v)))
    assert short != first[0]
    plain, _ = tuner.train(quad, "sgd", {"lr": 0.1}, epochs=1)
    first.clear()
    tuner.train(quad, "sgd", {"lr": 0.1}, report=lambda v, e: bool(first.append(v)))
    assert plain == first[0]  # without a schedule a low fidelity is the same run cut short


def test_warmup_is_searched_from_budget_core(quad) -> None:
    result = tuner.tune(quad, ["adam"], trials=14, budget="core", progress=False, schedules="cosine,wsd",
                        strategy="tpe", pruner="none")
    trials = _trials(result)
    assert {t.params["schedule"] for t in trials} <= {"cosine", "wsd"}
    assert all(t.params["schedule.warmup"] in space.WARMUP_FRACTIONS for t in trials)
    assert trials[0].user_attrs["warm_start"] and trials[0].params["schedule"] == "cosine" \
        and trials[0].params["schedule.warmup"] == 0.0
    warm = [t for t in trials if t.params["schedule.warmup"] > 0 and t.state.name == "COMPLETE"]
    assert warm, [t.params for t in trials]
    assert all(t.user_attrs["schedule"]["warmup_steps"] == 2 for t in warm)  # 5% of 4 x 10 steps
    lr_only = tuner.tune(quad, ["adam"], trials=3, budget="lr", progress=False, schedules="cosine,wsd",
                         strategy="tpe")
    assert all("schedule.warmup" not in t.params for t in _trials(lr_only))


def test_default_is_the_run_without_the_option(quad) -> None:
    for strategy, trials in (("phased", 12), ("tpe", 6)):
        runs = [tuner.tune(quad, ["sgd", "adam"], trials=trials, progress=False, strategy=strategy, **extra)
                for extra in ({}, {"schedules": "constant"}, {"schedules": ["constant"]})]
        seen = [[(t.params, t.value, t.state.name) for t in _trials(r)] for r in runs]
        assert seen[0] == seen[1] == seen[2]
        assert all("schedule" not in t.params and "schedule" not in t.user_attrs for t in _trials(runs[0]))
        assert runs[0].best["value"] == runs[1].best["value"] and "schedule" not in runs[1].best


def test_tpe_strategy_and_two_processes(quadratic_file, tmp_path) -> None:
    storage = f"journal:{tmp_path / 'study.journal'}"
    result = tuner.tune(f"{quadratic_file}:SCHEDULES", ["sgd", "adam"], trials=12, storage=storage, jobs=2, progress=False,
                        schedules="constant,cosine")
    trials = [t for t in _trials(result) if t.state.is_finished()]
    assert not result.interrupted and result.best is not None and "schedule" in result.best
    assert all(t.params["schedule"] == t.user_attrs["schedule"]["name"] for t in trials)
    assert {t.params["schedule"] for t in trials} == {"constant", "cosine"}
    tpe = tuner.tune(f"{quadratic_file}:SCHEDULES", ["sgd", "adam"], trials=8, storage=f"journal:{tmp_path / 'tpe.journal'}",
                     jobs=2, progress=False, schedules="constant,cosine", strategy="tpe")
    trials = [t for t in _trials(tpe) if t.state.is_finished()]
    assert len(trials) >= 8 and all("schedule" in t.params for t in trials)
    warm = [t for t in trials if t.user_attrs.get("warm_start")]
    assert {t.params["schedule"] for t in warm} == {"constant"}  # the defaults as shipped
    assert all(t.state.name == "COMPLETE" for t in trials if t.params["schedule"] == "cosine")


class _AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


def test_the_pruner_never_stops_a_decaying_run(quad) -> None:
    """Its loss drops most at the end, so a value at an epoch says little about the final one."""
    from pyopt.tuner.study import make_objective, make_phased_objective

    for phased in (False, True):
        st = optuna.create_study(pruner=_AlwaysPrune())
        attrs = {"phase": 3, "planned_epochs": 4, "seed": 0} if phased else {}
        for schedule in ("constant", "cosine", "wsd"):
            st.enqueue_trial({"optimizer": "sgd", "sgd.lr": 0.05, "schedule": schedule}, user_attrs=attrs)
        schedules = ("constant", "cosine", "wsd")
        objective = make_phased_objective(quad, ["sgd"], "lr", 4, schedules=schedules) if phased else \
            make_objective(quad, ["sgd"], "lr", seed=0, schedules=schedules)
        st.optimize(objective, n_trials=3)
        assert [(t.params["schedule"], t.state.name) for t in st.trials] == \
            [("constant", "PRUNED"), ("cosine", "COMPLETE"), ("wsd", "COMPLETE")]
