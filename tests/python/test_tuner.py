"""pyopt.tuner on tiny budgets: search spaces, the training loop, studies, storage, processes,
outputs, the CLI and bad input. (The slower integration check is test_tuner_integration.py.)"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

import pyopt  # noqa: E402
from pyopt import tuner  # noqa: E402
from pyopt.tuner import space  # noqa: E402
import quadratic_task  # noqa: E402 (tests/python: the quick task, a loadable task file)


@pytest.fixture
def quad(quadratic_file):
    return tuner.load_task(f"{quadratic_file}:TUNER")


def test_the_tuner_searches_every_optimizer_but_the_closure_based_one() -> None:
    assert space.tunable() == [n for n in pyopt.available() if n != "lbfgs"]
    with pytest.raises(ValueError, match="lbfgs cannot be tuned: its step takes a closure"):
        space.check_tunable("lbfgs")


def test_space_defaults_round_trip() -> None:
    for name in space.tunable():
        for budget in space.BUDGETS:
            params = {"optimizer": name, **space.default_params(name, budget)}
            hyper = space.suggest(optuna.trial.FixedTrial(params), name, budget)
            d = space.defaults(name)
            lo, hi = space.lr_range(name)
            assert hyper["lr"] == pytest.approx(min(max(d["lr"], lo), hi)), name
            for key, value in d.items():
                if key != "lr" and not isinstance(value, tuple) and key != "weight_decay":
                    if isinstance(value, float) and value > 0 and key == "eps" and budget == "full":
                        assert hyper[key] == pytest.approx(value), (name, key)
            assert [d.label for d in space.dimensions(name, "lr")] == ["lr"]
    dims = {d.label for d in space.dimensions("adamw", "full")}
    assert {"lr", "1-betas[0]", "1-betas[1]", "weight_decay", "eps", "amsgrad"} <= dims
    lion = space.lr_range("lion")
    assert lion[1] < space.lr_range("adamw")[1]  # sign methods search smaller learning rates
    with pytest.raises(ValueError):
        space.dimensions("adamw", "everything")


def test_sophia_rho_is_searched_around_its_default() -> None:
    """SophiaG's rho is a clipping scale (default 0.04), not a momentum: its record searches it
    log-uniform around 0.04 and the warm start runs rho = 0.04 (a rule by hyperparameter name once
    searched it as 1 - rho in [0.096, 0.5], and warm-started it at rho = 0.5)."""
    rho = next(d for d in space.dimensions("sophia", "full") if d.key == "rho")
    assert rho.kind == "log" and rho.index is None and rho.low < 0.04 < rho.high
    params = space.default_params("sophia", "full")
    assert params["sophia.rho"] == 0.04
    assert space.suggest(optuna.trial.FixedTrial({"optimizer": "sophia", **params}), "sophia", "full")["rho"] == 0.04


def _by_name_rules(name: str, budget: str) -> list[space.Dimension]:
    """The search space as it was derived by hyperparameter name before the records declared it:
    betas/beta/momentum/rho/alpha (not ASGD's) in (0, 1) as 1 - value on a log scale around the
    default, weight_decay on/off + log-uniform, eps > 0 log-uniform over default/100 .. ·100, and
    the flags nesterov (when the default momentum is > 0), amsgrad and centered (and cautious, the
    driver policy added since)."""
    d = space.defaults(name)
    out = [space.Dimension("lr", None, "log", *space.lr_range(name))]
    if budget == "lr":
        return out
    for key, value in d.items():
        if key in ("betas", "beta", "momentum", "rho", "alpha") and name != "asgd":
            for i, v in enumerate(value if isinstance(value, tuple) else (value,)):
                if isinstance(v, (int, float)) and 0.0 < float(v) < 1.0:
                    gap = 1.0 - float(v)
                    out.append(space.Dimension(key, i if isinstance(value, tuple) else None, "one_minus_log",
                                               max(gap / 10.0, 1e-5), min(0.5, gap * 30.0)))
        elif key == "weight_decay":
            out.append(space.Dimension(key, None, "weight_decay", 1e-6, 0.3))
        elif budget == "full" and key == "eps" and isinstance(value, float) and value > 0:
            out.append(space.Dimension(key, None, "log", value / 100.0, value * 100.0))
        elif budget == "full" and key in ("nesterov", "amsgrad", "centered", "cautious"):
            if key != "nesterov" or float(d.get("momentum", 0.0)) > 0.0:
                out.append(space.Dimension(key, None, "flag"))
    return out


# The optimizers the name-based rules covered (those added since declare their searches only in their records).
BY_NAME_RULES_OPTIMIZERS = (
    "sgd", "momentum", "nag", "adagrad", "rmsprop", "adadelta", "adamax", "adam", "adamw", "amsgrad",
    "nadam", "radam", "lion", "grams", "adan", "signsgd", "signum", "yogi", "adopt", "laprop", "asgd",
    "rprop", "adabelief", "lamb", "lars", "schedulefree_adamw", "schedulefree_sgd", "qhadam", "tiger",
    "ademamix", "stableadamw", "madgrad", "novograd", "muon", "adafactor")


@pytest.mark.parametrize("name", BY_NAME_RULES_OPTIMIZERS)
def test_search_spaces_from_the_records_follow_the_old_rules(name: str) -> None:
    """The records' search kinds give every optimizer but SophiaG (see above) the space the
    name-based rules gave: same dimensions, kinds, ranges and warm starts."""
    for budget in space.BUDGETS:
        assert sorted(space.dimensions(name, budget), key=repr) == sorted(_by_name_rules(name, budget), key=repr)


def test_train_reports_and_diverged_runs_are_capped(quad) -> None:
    seen = []
    val, info = tuner.train(quad, "sgd", {"lr": 0.05}, report=lambda v, e: seen.append((e, v)) and False)
    assert [e for e, _ in seen] == [0, 1, 2, 3] and info["epochs"] == 4 and not info["diverged"]
    assert val < info["initial_val_loss"]
    val, info = tuner.train(quad, "sgd", {"lr": 50.0})
    assert info["diverged"] and val == pytest.approx(tuner.DIVERGED_FACTOR * info["initial_val_loss"])
    assert np.isfinite(val)


def test_tune_in_memory_writes_outputs(quad, tmp_path) -> None:
    out = tmp_path / "out"
    result = tuner.tune(quad, ["sgd", "adam"], trials=8, out=str(out), progress=False, strategy="tpe")
    assert len(result.studies[0].trials) == 8
    warm = [t for t in result.studies[0].trials if t.user_attrs.get("warm_start")]
    assert {t.params["optimizer"] for t in warm} == {"sgd", "adam"}  # defaults enqueued first
    best = json.loads((out / "best.json").read_text())
    assert best["optimizer"] in ("sgd", "adam") and best["task"] == "quadratic-test"
    assert best["value"] == min(t.value for t in result.studies[0].trials if t.value is not None)
    rows = (out / "trials.csv").read_text().splitlines()
    assert len(rows) == 9 and rows[0].startswith("study,number,state,value,optimizer")
    assert (out / "best_per_optimizer.png").stat().st_size > 1000
    assert (out / "optimization_history.png").exists()
    # The config builds the same optimizer.
    params = quad.init_params(0)
    opt = pyopt.from_config(str(out / "best.json"), params)
    assert opt.name == best["optimizer"] and opt.param_groups[0]["lr"] == pytest.approx(best["hyperparameters"]["lr"])
    assert "optimizer" in result.table() and "adam" in result.table()


def test_sparse_adam_and_rowwise_adagrad_are_tuned_from_their_records(quad) -> None:
    """The embedding-table optimizers (dense gradients here): a space from the record, trials that train."""
    assert {d.label for d in space.dimensions("sparse_adam", "full")} >= {"lr", "1-betas[0]", "1-betas[1]", "eps"}
    assert {d.label for d in space.dimensions("rowwise_adagrad", "full")} == {"lr", "eps"}
    result = tuner.tune(quad, ["sparse_adam", "rowwise_adagrad"], trials=4, progress=False, strategy="tpe")
    trials = result.studies[0].trials
    assert {t.params["optimizer"] for t in trials} == {"sparse_adam", "rowwise_adagrad"}
    initial = quad.validation_loss(quad.init_params(0))
    warm = [t for t in trials if t.user_attrs.get("warm_start")]
    assert len(warm) == 2 and all(not t.user_attrs["diverged"] and t.value < initial for t in warm), \
        [(t.params, t.value, t.user_attrs) for t in trials]


def test_failing_objective_is_recorded_and_the_study_goes_on() -> None:
    task = quadratic_task.Quadratic("quadratic-test", random_start=False, fail_at=45)  # inside the second trial
    result = tuner.tune(task, ["sgd"], trials=4, progress=False, strategy="tpe")
    states = [t.state.name for t in result.studies[0].trials]
    assert states.count("FAIL") == 1 and states.count("COMPLETE") + states.count("PRUNED") == 3
    failed = next(t for t in result.studies[0].trials if t.state.name == "FAIL")
    assert "task failed on purpose" in failed.user_attrs["error"]


def test_ctrl_c_keeps_finished_trials(tmp_path) -> None:
    task = quadratic_task.Quadratic("quadratic-test", random_start=False, interrupt_at=95)  # in the third trial
    storage = f"sqlite:///{tmp_path / 'st.db'}"
    result = tuner.tune(task, ["sgd"], trials=10, storage=storage, out=str(tmp_path / "o"), progress=False,
                        strategy="tpe")
    assert result.interrupted
    kept = optuna.load_study(study_name="pyopt-quadratic-test", storage=storage)
    assert sum(t.state.name == "COMPLETE" for t in kept.trials) == 2
    assert (tmp_path / "o" / "best.json").exists()


def test_resume_adds_trials(quad, tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    tuner.tune(quad, ["sgd", "adam"], trials=4, storage=storage, progress=False, strategy="tpe")
    result = tuner.tune(quad, ["sgd", "adam"], trials=3, storage=storage, progress=False, strategy="tpe")
    assert len(result.studies[0].trials) == 7
    assert sum(1 for t in result.studies[0].trials if t.user_attrs.get("warm_start")) == 2  # not enqueued twice


def test_fair_mode_one_study_per_optimizer(quad) -> None:
    result = tuner.tune(quad, ["sgd", "lion"], trials=3, fair=True, progress=False, strategy="tpe")
    assert [s.study_name for s in result.studies] == ["pyopt-quadratic-test-sgd", "pyopt-quadratic-test-lion"]
    assert all(len(s.trials) == 3 for s in result.studies)


def test_two_processes_share_a_journal(quadratic_file, tmp_path) -> None:
    storage = f"journal:{tmp_path / 'study.journal'}"
    result = tuner.tune(f"{quadratic_file}:TUNER", ["sgd", "adam"], trials=10, storage=storage, jobs=2, progress=False,
                        strategy="tpe")
    study = optuna.load_study(study_name="pyopt-quadratic-test",
                              storage=tuner.study.make_storage(storage))
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) >= 10 and not result.interrupted
    # Both processes wrote trials: their samplers are seeded differently, so each process's trials
    # appear interleaved in the journal; at least the worker's first trial exists.
    assert len({t.datetime_start for t in finished}) == len(finished)


def test_bad_input(quad, quadratic_file, tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown optimizer"):
        tuner.tune(quad, ["adamw", "nope"], trials=2)
    with pytest.raises(ValueError, match=r"lbfgs cannot be tuned: its step takes a closure .* step\(grads\)"):
        tuner.tune(quad, ["adamw", "lbfgs"], trials=2)
    with pytest.raises(ValueError, match="lbfgs cannot be tuned"):
        tuner.train(quad, "lbfgs", {"lr": 0.1})
    with pytest.raises(ValueError, match="jobs > 1"):
        tuner.tune(quad, ["sgd"], trials=2, jobs=2)
    with pytest.raises(ValueError):
        tuner.load_task("no-such-task")
    with pytest.raises((ValueError, OSError, ImportError)):
        tuner.load_task(f"{tmp_path / 'missing.py'}:TASK")
    with pytest.raises((ValueError, AttributeError)):
        tuner.load_task(f"{quadratic_file}:NOPE")


def test_cli(quadratic_file, tmp_path, capsys) -> None:
    from pyopt import cli

    out = tmp_path / "cli-out"
    code = cli.main(["tune", f"{quadratic_file}:TUNER", "--optimizers", "sgd,adamw", "--trials", "5", "--out", str(out),
                     "--no-progress", "--strategy", "tpe"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert (out / "best.json").exists() and (out / "study.db").exists() and (out / "trials.csv").exists()
    assert "best:" in text and "from_config" in text
    # Re-running with the same storage and study resumes.
    assert cli.main(["tune", f"{quadratic_file}:TUNER", "--optimizers", "sgd,adamw", "--trials", "2", "--out", str(out),
                     "--no-progress", "--strategy", "tpe"]) == 0
    assert "5 finished trials" in capsys.readouterr().out
    assert cli.main(["tune", "no-such-task"]) == 2
    assert "no-such-task" in capsys.readouterr().err
    assert cli.main(["tune", f"{quadratic_file}:TUNER", "--optimizers", "bogus", "--out", str(out)]) == 2
    assert cli.main(["tune", "--list"]) == 0
    listing = capsys.readouterr().out
    assert "adamw" in listing and "1-betas[1]" in listing
    os.environ.pop("PYOPT_DUMMY", None)


def test_plain_objective_function(tmp_path) -> None:
    """fn(make_optimizer, report) -> float, for loops a Task cannot express."""
    calls = []

    def fit(make_optimizer, report):
        w = np.zeros(5)
        opt = make_optimizer([w])
        for step in range(10):
            opt.step([w - 3.0])
            report(float(np.sum((w - 3.0) ** 2)), step)
        calls.append(type(opt).__name__)
        return float("nan") if len(calls) == 2 else float(np.sum((w - 3.0) ** 2))

    result = tuner.tune(fit, ["sgd", "adam"], trials=6, out=str(tmp_path), progress=False, pruner="none",
                        strategy="tpe")
    trials = result.studies[0].trials
    assert result.studies[0].study_name == "pyopt-fit" and len(trials) == 6
    assert sum(bool(t.user_attrs.get("diverged")) for t in trials) == 1
    assert all(np.isfinite(t.value) for t in trials)
    assert result.best["optimizer"] in ("sgd", "adam") and (tmp_path / "best.json").exists()


def test_sgd_space_has_no_nesterov_without_momentum() -> None:
    assert "nesterov" not in {d.label for d in space.dimensions("sgd", "full")}
    assert "nesterov" in {d.label for d in space.dimensions("momentum", "full")}


def test_a_resumed_study_keeps_its_optimizers(quad, tmp_path) -> None:
    """The optimizer is one categorical distribution for the whole study: a rerun with other
    optimizers is refused, naming the option, before a trial runs (each one failed before)."""
    storage = f"sqlite:///{tmp_path / 'st.db'}"
    tuner.tune(quad, ["sgd", "adam"], trials=2, storage=storage, progress=False, strategy="tpe")
    study = optuna.load_study(study_name="pyopt-quadratic-test", storage=storage)
    before = [t.state.name for t in study.trials]
    for strategy in ("tpe", "phased"):
        with pytest.raises(ValueError, match=r"optimizers \(--optimizers\): .* ran with optimizers sgd,adam"):
            tuner.tune(quad, ["sgd", "lion"], trials=2, storage=storage, progress=False, strategy=strategy)
    assert [t.state.name for t in study.trials] == before and "FAIL" not in before
    tuner.tune(quad, ["sgd", "adam"], trials=1, storage=storage, progress=False, strategy="tpe")  # the same: resumes
