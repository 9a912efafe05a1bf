"""The phased strategy (tuner/phases.py): the planning as pure functions (which configs at which
fidelity, promotion at equal fidelity, fairness, budget accounting, edge flags), then small
end-to-end runs on a quick task: the phases, the table, best.json, resume and the CLI."""
from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

from pyopt import tuner  # noqa: E402
from pyopt.tuner import phases, report, space  # noqa: E402
from pyopt.tuner.phases import Config  # noqa: E402


@pytest.fixture
def quad(quadratic_file):
    return tuner.load_task(f"{quadratic_file}:PHASES")


# --- planning, no training -------------------------------------------------------------------

def test_rungs_end_at_the_task_epochs() -> None:
    assert phases.rungs(20) == [2, 6, 20]
    assert phases.rungs(4) == [1, 4]
    assert phases.rungs(1) == [1]
    assert phases.rungs(50) == [5, 16, 50]


def test_the_default_portfolio_is_small_and_tunable() -> None:
    from pyopt.tuner.run import check_arguments

    assert check_arguments((), 40, 1, None, "auto", "tpe", "hyperband") == list(phases.DEFAULT_PORTFOLIO)
    assert check_arguments((), 40, 1, None, "auto", "tpe", "hyperband", strategy="tpe") == \
        list(tuner.DEFAULT_OPTIMIZERS)
    assert {"prodigy", "dadapt_adam", "schedulefree_adamw"} <= set(phases.DEFAULT_PORTFOLIO)
    for name in phases.DEFAULT_PORTFOLIO:
        space.check_tunable(name)
    with pytest.raises(ValueError, match="unknown strategy 'grid'"):
        check_arguments((), 40, 1, None, "auto", "tpe", "hyperband", strategy="grid")


def test_plan_for_the_default_portfolio_and_40_trials() -> None:
    plan = phases.plan(phases.DEFAULT_PORTFOLIO, 40, 20)
    assert plan.optimizers == list(phases.DEFAULT_PORTFOLIO)
    assert (plan.sweep, plan.portfolio) == (3, 18)
    assert plan.halving == 6 + 2  # 18 -> 6 at 6 epochs -> 2 at 20
    assert (plan.finalists, plan.seeds) == (2, 3) and plan.reruns == 4
    assert plan.tpe == 40 - 18 - 8 - 4


@pytest.mark.parametrize("k", [1, 2, 3, 6, 15])
@pytest.mark.parametrize("epochs", [1, 4, 20])
def test_plan_never_exceeds_the_trials_and_evaluates_every_optimizer(k, epochs) -> None:
    names = [f"opt{i}" for i in range(k)]
    for trials in range(1, 90):
        plan = phases.plan(names, trials, epochs)
        assert plan.portfolio + plan.halving + plan.tpe + plan.reruns == trials, (trials, plan)
        assert min(plan.portfolio, plan.halving, plan.tpe, plan.reruns) >= 0
        if trials >= k:
            assert plan.optimizers == names and plan.portfolio >= k  # everyone's defaults
        else:
            assert plan.optimizers == names[:trials]
    assert phases.plan(names, 40, epochs, seeded=False).reruns == 0


def test_halving_counts() -> None:
    assert phases.halving_counts(18, 3) == [6, 2]
    assert phases.halving_counts(18, 2) == [6]
    assert phases.halving_counts(3, 2) == [2]  # two reach full fidelity, so they can be compared
    assert phases.halving_counts(1, 3) == [1, 1]


def test_halving_leaves_room_for_phase_3_but_one_config_reaches_the_top() -> None:
    assert phases.halving_counts(12, 3, room=100) == [4, 2]
    assert phases.halving_counts(12, 3, room=6) == [4, 2]
    assert phases.halving_counts(12, 3, room=5) == [4, 1]  # the top shrinks first
    assert phases.halving_counts(12, 3, room=4) == [3, 1]
    assert phases.halving_counts(12, 3, room=2) == [1, 1]
    assert phases.halving_counts(12, 3, room=1) == [1, 0]  # too few: the top goes unreached
    assert phases.halving_counts(12, 3, room=0) == [0, 0]
    assert phases.promote([_r("adamw", 1e-3, 2, 0.5)], 2, 0) == []  # a rung with no room promotes none
    plan = phases.plan(phases.DEFAULT_PORTFOLIO, 20, 20)
    assert (plan.portfolio, plan.halving, plan.reruns, plan.tpe) == (12, 3 + 1, 2, phases.REFINE)


def test_the_line_search_starts_with_each_survivors_best_lr_between_the_grid_points() -> None:
    root = 10 ** 0.5
    results = [_r("adamw", 1e-3, 20, 0.5), _r("adamw", 1e-2, 20, 0.4, number=1),
               _r("adamw", 1e-1, 6, 0.1, number=2),           # another fidelity: not a candidate
               _r("adamw", 1e-4, 20, 0.3, seed=1, number=3),  # another seed: not a candidate
               _r("prodigy", 3.0, 20, 0.3, number=4),         # at the top of its lr_range [0.3, 3]
               _r("lion", 1e-4, 20, 0.2, diverged=True, number=5)]
    got = [(c.optimizer, c.as_dict()[f"{c.optimizer}.lr"]) for c in
           phases.line_search_round(results, 20, ["prodigy", "adamw", "lion"])]
    assert [name for name, _ in got] == ["prodigy", "adamw"]  # in the survivors' order; lion has no run
    # prodigy: only downwards (3 x root is out of its range); adamw: its best, 1e-2, already has
    # a run below it (1e-3), so only the step up.
    assert [lr for _, lr in got] == pytest.approx([3.0 / root, 1e-2 * root])
    results = results[1:]  # adamw at 1e-2 alone: both sides at once
    got = [c.as_dict()["adamw.lr"] for c in phases.line_search_round(results, 20, ["adamw"])]
    assert got == pytest.approx([1e-2 * root, 1e-2 / root])


def _line_search(value, start, epochs=20, name="adamw", others=()):
    """Run phase 3's line search (phases.line_search_round) for ``name`` from ``start`` (a
    full-fidelity result) on ``value(log10 lr)`` until it stops; returns the lrs it tried, in
    order, and the results."""
    results = [_r(name, start, epochs, value(math.log10(start)))] + list(others)
    tried = []
    for _ in range(30):
        steps = phases.line_search_round(results, epochs, [name])
        if not steps:
            return tried, results
        for step in steps:
            lr = step.as_dict()[f"{name}.lr"]
            assert lr not in tried, (lr, tried)
            tried.append(lr)
            results.append(_r(name, lr, epochs, value(math.log10(lr)), number=len(results)))
    raise AssertionError(f"no end after 30 steps: {tried}")


@pytest.mark.parametrize("best", [2.2e-3, 3e-4, 0.05, 1.3e-3])
@pytest.mark.parametrize("shape", ["parabola", "v", "skewed"])
def test_line_search_finds_the_best_lr_to_its_resolution(best, shape) -> None:
    u0 = math.log10(best)
    value = {"parabola": lambda u: (u - u0) ** 2, "v": lambda u: abs(u - u0),
             "skewed": lambda u: (u - u0) ** 2 * (4 if u > u0 else 1)}[shape]
    tried, results = _line_search(value, 1e-3)
    assert tried[:2] == pytest.approx([1e-3 * 10 ** 0.5, 1e-3 / 10 ** 0.5])  # both sides of the start first
    found = min(results, key=lambda r: r["value"])["config"].as_dict()["adamw.lr"]
    assert abs(math.log10(found) - u0) <= phases.LINE_RESOLUTION, (found, tried)
    assert len(tried) <= 9, tried


def test_line_search_stops_at_the_range_and_walks_out_of_a_divergence() -> None:
    low, high = space.lr_range("adamw")
    tried, results = _line_search(lambda u: -u, 1e-2)  # better and better towards the top
    assert tried[-1] == pytest.approx(high) and max(tried) == pytest.approx(high)
    assert phases.line_search_step(results, 20, "adamw") == []
    tried, _ = _line_search(lambda u: u, 1e-4)
    assert min(tried) == pytest.approx(low)
    # A diverged neighbour (value capped) bounds the bracket; the search still narrows the other way.
    diverged = [_r("adamw", 2e-3, 20, 1e9, diverged=True, number=7)]
    tried, results = _line_search(lambda u: (u + 3.5) ** 2, 1e-3, others=diverged)
    assert not [lr for lr in tried[2:] if lr > 1e-3]
    found = min(results, key=lambda r: r["value"])["config"].as_dict()["adamw.lr"]
    assert abs(math.log10(found) + 3.5) <= phases.LINE_RESOLUTION


def test_line_search_moves_only_the_lr_of_the_best_config() -> None:
    def r(lr, value, wd, number):
        return {"config": Config.of({"optimizer": "adamw", "adamw.lr": lr, "adamw.weight_decay": wd}),
                "epochs": 20, "seed": 0, "value": value, "diverged": False, "number": number}

    # The best has weight decay 0.1; the runs at weight decay 0 are not its neighbours.
    results = [r(1e-3, 0.1, 0.1, 0), r(1e-2, 0.5, 0.0, 1), r(1e-4, 0.5, 0.0, 2)]
    steps = [c.as_dict() for c in phases.line_search_step(results, 20, "adamw")]
    assert [c["adamw.weight_decay"] for c in steps] == [0.1, 0.1]
    assert [c["adamw.lr"] for c in steps] == pytest.approx([1e-3 * 10 ** 0.5, 1e-3 / 10 ** 0.5])
    assert phases.line_search_step(results, 20, "lion") == []  # no full-fidelity run: no search
    assert phases.line_search_step(results, 6, "adamw") == []  # nor at another fidelity


def test_a_bracketed_line_search_steps_to_the_parabolas_vertex() -> None:
    # Three points of (u + 2.37)^2 bracket the minimum: the next point is its vertex exactly.
    results = [_r("adamw", 10 ** u, 20, (u + 2.37) ** 2, number=i) for i, u in enumerate((-2.5, -2.0, -3.0))]
    (step,) = phases.line_search_step(results, 20, "adamw")
    assert math.log10(step.as_dict()["adamw.lr"]) == pytest.approx(-2.37)
    # The vertex too close to the best: a golden-section step into the wider side instead.
    results = [_r("adamw", 10 ** u, 20, (u + 2.49) ** 2, number=i) for i, u in enumerate((-2.5, -2.0, -3.5))]
    (step,) = phases.line_search_step(results, 20, "adamw")
    assert math.log10(step.as_dict()["adamw.lr"]) == pytest.approx(-2.5 - phases.GOLDEN * 1.0)


def test_line_search_points_stay_inside_the_range() -> None:
    # From 2e-2 the step up would be 6.3e-2, then 0.2: clipped to 0.1, the top of adamw's range.
    tried, _ = _line_search(lambda u: -u, 2e-2)
    assert max(tried) == space.lr_range("adamw")[1] and all(lr <= 0.1 for lr in tried)
    # Prodigy's multiplier at the bottom of its range: 10 ** log10(0.3) is 0.29999999999999993.
    tried, _ = _line_search(lambda u: u, 0.5, name="prodigy")
    assert min(tried) == 0.3


def test_a_failed_line_search_run_bounds_the_search_like_a_divergence() -> None:
    results = [_r("adamw", 1e-2, 20, 0.5), _r("adamw", 10 ** -1.5, 20, 0.4, number=1),
               _r("adamw", 10 ** -2.5, 20, 0.6, number=2)]
    (up,) = phases.line_search_step(results, 20, "adamw")  # the best, 10 ** -1.5, has no run above it
    assert up.as_dict()["adamw.lr"] == pytest.approx(10 ** -1.0)
    (inside,) = phases.line_search_step(results, 20, "adamw", failed=[up])  # its run failed
    assert 10 ** -2 < inside.as_dict()["adamw.lr"] < 10 ** -1.0 and inside != up


def test_the_rank_check_counts_inversions_and_gives_other_optimizers_a_chance() -> None:
    results = [_r("adamw", 1e-3, 6, 0.1, number=0), _r("nag", 1e-2, 6, 0.2, number=1),
               _r("lion", 1e-4, 6, 0.3, number=2), _r("adamw", 1e-2, 6, 0.35, number=3),
               _r("prodigy", 1.0, 6, 0.4, number=4), _r("sgd", 0.1, 6, 0.45, diverged=True, number=5),
               _r("adamw", 1e-3, 20, 0.05, number=6), _r("nag", 1e-2, 20, 0.01, number=7)]
    top = [Config.of({"optimizer": "adamw", "adamw.lr": 1e-3}), Config.of({"optimizer": "nag", "nag.lr": 1e-2})]
    assert phases.discordant_pairs(results, 6, 20, top) == 1
    assert phases.discordant_pairs(results[:-1] + [_r("nag", 1e-2, 20, 0.06, number=7)], 6, 20, top) == 0
    assert phases.discordant_pairs(results[:-1] + [_r("nag", 1e-2, 20, 0.05, number=7)], 6, 20, top) == 0  # a tie
    chances = phases.second_chances(results, [2, 6], top, 3)
    assert [c.optimizer for c in chances] == ["lion", "prodigy"]  # one per optimizer; never the diverged sgd
    assert phases.second_chances(results, [2, 6], top, 1) == chances[:1]
    assert phases.second_chances(results, [2, 6], top, 0) == []
    # Then those that stopped lower: by the highest fidelity they reached; never a config that
    # diverged at a higher one (sgd lr 0.1), but another config of its optimizer.
    results += [_r("lamb", 1e-3, 2, 0.01, number=8), _r("sgd", 0.1, 2, 0.005, number=9),
                _r("sgd", 0.01, 2, 0.02, number=10)]
    chances = phases.second_chances(results, [2, 6], top, 5)
    assert [phases.describe(c) for c in chances] == ["lion lr=0.0001", "prodigy lr=1", "lamb lr=0.001", "sgd lr=0.01"]


def test_portfolio_is_defaults_then_an_lr_sweep_inside_the_range() -> None:
    configs = phases.portfolio(["adamw", "prodigy", "sgd"], 3, "lr")
    by = {}
    for c in configs:
        by.setdefault(c.optimizer, []).append(c.as_dict()[f"{c.optimizer}.lr"])
    assert by["adamw"] == pytest.approx([1e-3, 1e-2, 1e-4])  # the larger lr first
    assert by["prodigy"] == pytest.approx([1.0, 3.0, 0.3])  # clipped into its lr_range [0.3, 3]
    for name, lrs in by.items():
        low, high = space.lr_range(name)
        assert all(low <= lr <= high for lr in lrs)
        assert lrs[0] == pytest.approx(space.defaults(name)["lr"])  # the defaults come first
    assert [c.optimizer for c in phases.portfolio(["adamw", "lion"], 1, "core")] == ["adamw", "lion"]
    # "core" params reproduce the defaults in the other dimensions too
    core = phases.portfolio(["adamw"], 1, "core")[0].as_dict()
    assert core == {"optimizer": "adamw", **space.default_params("adamw", "core")}


def _r(name, lr, epochs, value, seed=0, diverged=False, number=0):
    return {"config": Config.of({"optimizer": name, f"{name}.lr": lr}), "epochs": epochs, "seed": seed,
            "value": value, "diverged": diverged, "number": number}


def test_promotion_compares_like_with_like() -> None:
    results = [_r("adamw", 1e-3, 2, 0.5, number=0), _r("sgd", 0.1, 2, 0.4, number=1),
               _r("lion", 1e-4, 2, 0.3, diverged=True, number=2), _r("nag", 1e-3, 2, 0.6, number=3),
               _r("nag", 1e-3, 20, 0.01, number=4),  # a full-fidelity value does not count at 2 epochs
               _r("adamw", 1e-3, 2, 0.1, seed=1, number=5)]  # nor another seed's
    promoted = phases.promote(results, 2, 2)
    assert [c.optimizer for c in promoted] == ["sgd", "adamw"]  # the diverged lion never
    assert [c.optimizer for c in phases.promote(results, 20, 5)] == ["nag"]
    assert phases.promote(results, 6, 3) == []


def test_survivors_are_those_that_got_furthest() -> None:
    results = [_r("adamw", 1e-3, 2, 0.01), _r("sgd", 0.1, 6, 0.9), _r("nag", 1e-3, 20, 0.8),
               _r("lion", 1e-4, 20, 0.7, diverged=True)]
    assert phases.survivors(results, [2, 6, 20], 2) == ["nag", "sgd"]
    assert phases.survivors(results, [2, 6, 20], 5) == ["nag", "sgd", "adamw"]


def test_finalists_are_the_best_of_each_optimizer_first() -> None:
    results = [_r("adamw", 1e-3, 20, 0.1, number=0), _r("adamw", 2e-3, 20, 0.11, number=1),
               _r("sgd", 0.1, 20, 0.2, number=2), _r("lion", 1e-4, 20, 0.05, diverged=True, number=3),
               _r("nag", 1e-3, 6, 0.01, number=4)]
    assert [describe for describe in map(phases.describe, phases.finalists(results, 20, 2))] == \
        ["adamw lr=0.001", "sgd lr=0.1"]
    assert len(phases.finalists(results, 20, 3)) == 3 and phases.finalists(results, 20, 3)[2].optimizer == "adamw"
    assert phases.finalists(results, 20, 9) == phases.finalists(results, 20, 3)  # never a diverged one


def test_seed_summary_is_the_mean_and_sample_std_over_seeds() -> None:
    c = Config.of({"optimizer": "adamw", "adamw.lr": 1e-3})
    results = [_r("adamw", 1e-3, 20, v, seed=s) for s, v in [(0, 0.1), (1, 0.3), (2, 0.2)]]
    results.append(_r("adamw", 1e-3, 6, 9.0, seed=1))  # another fidelity: ignored
    s = phases.seed_summary(results, c, 20)
    assert s["seeds"] == [0, 1, 2] and s["values"] == [0.1, 0.3, 0.2]
    assert s["mean"] == pytest.approx(0.2) and s["std"] == pytest.approx(statistics.stdev([0.1, 0.3, 0.2]))
    assert phases.seed_summary(results[:1], c, 20)["std"] == 0.0


def test_edge_flags() -> None:
    low, high = space.lr_range("adamw")
    assert phases.edge_flags(Config.of({"optimizer": "adamw", "adamw.lr": 1e-3}), "lr") == []
    (flag,) = phases.edge_flags(Config.of({"optimizer": "adamw", "adamw.lr": high}), "lr")
    assert flag.startswith("adamw.lr=0.1 at the upper edge")
    (flag,) = phases.edge_flags(Config.of({"optimizer": "adamw", "adamw.lr": low * 1.2}), "lr")
    assert "lower edge" in flag
    # 1 - beta2 at its low end: flagged under "core", where it is searched
    cfg = Config.of({"optimizer": "adamw", "adamw.lr": 1e-3, "adamw.1-betas[1]": 1.01e-4})
    assert [f.split("=")[0] for f in phases.edge_flags(cfg, "core")] == ["adamw.1-betas[1]"]


# --- end to end on a quick task ----------------------------------------------------------------

def _trials(result):
    return [t for t in result.studies[0].trials if not t.user_attrs.get("surplus")]


def test_phased_run_on_a_quick_task(quad, tmp_path) -> None:
    names = ["sgd", "adam", "lion"]
    out = tmp_path / "out"
    result = tuner.tune(quad, names, trials=20, out=str(out), progress=False)
    trials = _trials(result)
    assert len(trials) == 20
    assert [line.split(" ")[1] for line in result.phases] == ["1", "2", "3", "4"]
    by_phase = {p: [t for t in trials if t.user_attrs["phase"] == p] for p in (1, 2, 3, 4)}
    # Phase 1: every optimizer at the low fidelity, before anything else ran.
    assert {t.params["optimizer"] for t in by_phase[1]} == set(names)
    assert all(t.user_attrs["planned_epochs"] == 1 and t.user_attrs["low_fidelity"] for t in by_phase[1])
    assert max(t.number for t in by_phase[1]) < min(t.number for p in (2, 3, 4) for t in by_phase[p])
    # Phase 2: the best third of phase 1 at 1 epoch, re-run at full fidelity.
    low = sorted((t for t in by_phase[1] if not t.user_attrs["diverged"]), key=lambda t: (t.value, t.number))
    assert [t.params for t in by_phase[2]] == [t.params for t in low[:len(by_phase[2])]]
    assert all(t.user_attrs["planned_epochs"] == 4 and t.state.name == "COMPLETE" for t in by_phase[2])
    # Phase 3: full fidelity, only the survivors; first the line search's first round (both
    # sides of each survivor's best config, from the results of phases 1 and 2), unpruned.
    survivors = result.phases[2].split(" on ")[1].split(" at ")[0].split(", ")
    assert {t.params["optimizer"] for t in by_phase[3]} <= set(survivors)
    assert all(t.user_attrs["planned_epochs"] == 4 for t in by_phase[3])
    before_3 = phases.results_of([t for p in (1, 2) for t in by_phase[p]], 4)
    refined = phases.line_search_round(before_3, 4, survivors)
    assert refined and [Config.of(t.params) for t in by_phase[3][:len(refined)]] == refined[:len(by_phase[3])]
    assert all(t.user_attrs.get(phases.LINE_SEARCH) for t in by_phase[3][:len(refined)])
    # Phase 4: two finalists on seeds 1 and 2.
    assert sorted(t.user_attrs["seed"] for t in by_phase[4]) == [1, 1, 2, 2]
    best = json.loads((out / "best.json").read_text())
    assert best["strategy"] == "phased" and best["seeds"] == [0, 1, 2] and best["epochs"] == 4
    assert best["value"] == pytest.approx(statistics.fmean(best["values"]))
    assert best["std"] == pytest.approx(statistics.stdev(best["values"]))
    for number, value in zip(best["trials"], best["values"]):
        assert result.studies[0].trials[number].value == value
    assert isinstance(best["edge"], list)
    # The winner has the best mean of the finalists.
    finalists = {json.dumps(t.params, sort_keys=True) for t in by_phase[4]}
    means = []
    for key in finalists:
        vals = [t.value for t in trials if json.dumps(t.params, sort_keys=True) == key
                and t.user_attrs["planned_epochs"] == 4 and t.state.name == "COMPLETE"]
        means.append(statistics.fmean(vals))
    assert best["value"] == pytest.approx(min(means))
    # The table: <= 80 columns, per optimizer the best completed full-fidelity seed-0 value and
    # how many trials reached each fidelity.
    text = result.table()
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "@1" in text and "@4" in text
    for row in report.summary_rows(result.studies, 4):
        full = [t.value for t in trials if t.params.get("optimizer") == row["optimizer"]
                and t.state.name == "COMPLETE" and t.user_attrs["seed"] == 0]
        assert row["best"] == (min(full) if full else math.inf)
        mine = [t for t in trials if t.params.get("optimizer") == row["optimizer"] and t.state.is_finished()]
        trained = [t.user_attrs.get("epochs", max(t.intermediate_values, default=-1) + 1) for t in mine]
        assert row["reached"][1] == sum(1 for e in trained if e >= 1)
        assert row["reached"][4] == sum(1 for e in trained if e >= 4)
    rows = (out / "trials.csv").read_text().splitlines()
    assert "phase,planned_epochs,seed" in rows[0]


def test_a_rerun_reuses_finished_runs(quad, tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    first = tuner.tune(quad, ["sgd", "adam"], trials=12, storage=storage, progress=False)
    before = len(_trials(first))
    again = tuner.tune(quad, ["sgd", "adam"], trials=5, storage=storage, progress=False)
    trials = _trials(again)
    assert before == 12 and len(trials) == 17  # at most --trials new ones; phases 1-2 were reused
    new = trials[before:]
    assert not [t for t in new if t.user_attrs["phase"] in (1, 2)]
    assert "0 new trials" in again.phases[0]


def test_few_trials_still_evaluate_every_optimizer(quad) -> None:
    names = ["sgd", "adam", "lion", "nag"]
    result = tuner.tune(quad, names, trials=5, progress=False)
    trials = _trials(result)
    assert len(trials) <= 5
    assert {t.params["optimizer"] for t in trials if t.user_attrs["phase"] == 1} == set(names)
    assert result.best is not None


def _descent(target: float, shown=lambda loss, step: loss, check=lambda w, step: None, done=lambda: None):
    """A plain objective for ``tuner.tune``: 9 steps of the optimizer on |w - target|^2 (w in R^5),
    reporting ``shown(loss, step)``; ``check(w, step)`` may raise after a step, ``done()`` at the end."""
    def fit(make_optimizer, report):
        w = np.zeros(5)
        opt = make_optimizer([w])
        for step in range(9):
            opt.step([w - target])
            check(w, step)
            report(shown(float(np.sum((w - target) ** 2)), step), step)
        done()
        return float(np.sum((w - target) ** 2))

    fit.steps = 9
    return fit


def test_plain_function_fidelity_is_steps(tmp_path) -> None:
    result = tuner.tune(_descent(3.0), ["sgd", "adam"], trials=10, out=str(tmp_path), progress=False)
    trials = _trials(result)
    low = [t for t in trials if t.user_attrs["phase"] == 1]
    assert low and all(max(t.intermediate_values) == 0 for t in low)  # 9 // 9 = 1 step
    assert result.best["epochs"] == 9 and result.best["seeds"] == [0]  # a function takes no seed


def test_when_the_full_fidelity_reverses_the_order_below_another_optimizer_gets_a_full_run(tmp_path) -> None:
    # Below the last step the function reports its loss upside down: the slowest runs look best,
    # so the halving's two full-fidelity runs end in the opposite order (a discordant pair).
    fit = _descent(3.0, shown=lambda loss, step: loss if step == 8 else 1e3 - loss)
    result = tuner.tune(fit, ["sgd", "adam", "lion"], trials=27, progress=False)
    trials = _trials(result)
    full_2 = [t for t in trials if t.user_attrs["phase"] == 2 and t.user_attrs["planned_epochs"] == 9]
    assert "ranked otherwise at 9 than at 3 epochs: 1 more -> 9 epochs" in result.phases[1], result.phases[1]
    assert len(full_2) == 3 and full_2[2].params["optimizer"] not in {t.params["optimizer"] for t in full_2[:2]}
    line = [t for t in trials if t.user_attrs.get(phases.LINE_SEARCH)]
    assert line and all(t.user_attrs["phase"] == 3 and t.state.name == "COMPLETE" for t in line)
    assert len(trials) == 27


def test_an_interrupted_line_search_resumes_where_it_stopped(tmp_path) -> None:
    calls = {"full runs": 0, "interrupt at": 0}

    def count_and_interrupt():
        calls["full runs"] += 1
        if calls["full runs"] == calls["interrupt at"]:
            raise KeyboardInterrupt

    fit = _descent(0.06, done=count_and_interrupt)

    def line_searched(result):
        trials = [t for t in result.studies[0].trials if t.user_attrs.get(phases.LINE_SEARCH)]
        return [(Config.of(t.params).key(), t.state.name) for t in trials]

    def best_of_each(result):
        ranked = phases.rank(phases.results_of(result.studies[0].trials, 9), 9)
        return {name: next(r["config"] for r in ranked if r["config"].optimizer == name) for name in ("adam", "lion")}

    whole = tuner.tune(fit, ["adam", "lion"], trials=24, storage=f"sqlite:///{tmp_path / 'whole.db'}", progress=False)
    expected = line_searched(whole)
    assert len(expected) >= 6 and all(state == "COMPLETE" for _, state in expected)
    before = sum(1 for t in whole.studies[0].trials if t.user_attrs.get("phase") in (1, 2)
                 and t.user_attrs["planned_epochs"] == 9)
    calls.update({"full runs": 0, "interrupt at": before + 4})  # in the line search's second round
    storage = f"sqlite:///{tmp_path / 'cut.db'}"
    cut = tuner.tune(fit, ["adam", "lion"], trials=24, storage=storage, progress=False)
    assert cut.interrupted and 0 < len([k for k, s in line_searched(cut) if s == "COMPLETE"]) < len(expected)
    calls["interrupt at"] = 0
    again = tuner.tune(fit, ["adam", "lion"], trials=24, storage=storage, progress=False)
    # The rerun goes on from what the first run learnt: the points it ran are reused, the one
    # interrupted is run only if the search still needs it, and no point is run twice.
    full = [(t.params["optimizer"], round(math.log10(t.params[t.params["optimizer"] + ".lr"]), 6), t.user_attrs["seed"])
            for t in again.studies[0].trials if t.state.name == "COMPLETE" and t.user_attrs.get("planned_epochs") == 9]
    assert len(full) == len(set(full))
    assert {k for k, s in line_searched(cut) if s == "COMPLETE"} <= {k for k, s in line_searched(again)}
    assert "0 new trials" in again.phases[0]
    line_whole, line_again = ({k for k, s in line_searched(r) if s == "COMPLETE"} for r in (whole, again))
    assert len(line_again - line_whole) <= 1 and len(line_whole - line_again) <= 1
    assert best_of_each(again)["adam"] == best_of_each(whole)["adam"]


def test_a_line_search_run_that_fails_bounds_the_search_and_it_goes_on() -> None:
    def refuse_a_large_step(w, step):  # an objective refusing a too-large lr
        if step == 0 and abs(w[0]) > 0.05:
            raise FloatingPointError("step too large")

    result = tuner.tune(_descent(0.06, check=refuse_a_large_step), ["adam", "lion"], trials=24, progress=False)
    line = [t for t in result.studies[0].trials if t.user_attrs.get(phases.LINE_SEARCH) and t.params["optimizer"] == "adam"]
    failed = [t for t in line if t.state.name == "FAIL"]
    assert len(failed) == 1 and failed[0].params["adam.lr"] == pytest.approx(0.1)
    after = [t.params["adam.lr"] for t in line if t.number > failed[0].number]
    assert len(after) >= 2 and all(lr < 0.1 for lr in after)  # it searches below the failure
    assert "adam lr=0.1," not in result.phases[2]  # the phase line lists the points that ran


def test_cli_phased_and_tpe(quadratic_file, tmp_path, capsys) -> None:
    from pyopt import cli

    out = tmp_path / "o"
    assert cli.main(["tune", f"{quadratic_file}:PHASES", "--optimizers", "sgd,adam", "--trials", "12", "--out", str(out),
                     "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert all(f"phase {p} " in text for p in (1, 2, 3, 4)), text
    best = next(line for line in text.splitlines() if line.startswith("best:"))
    assert "mean of 3 seeds" in best, best
    assert cli.main(["tune", f"{quadratic_file}:PHASES", "--optimizers", "sgd", "--trials", "3", "--out", str(tmp_path / "t"),
                     "--no-progress", "--strategy", "tpe"]) == 0
    assert "phase 1" not in capsys.readouterr().out
    assert cli.main(["tune", f"{quadratic_file}:PHASES", "--fair", "--out", str(tmp_path / "f")]) == 2
    assert "--fair is for --strategy tpe" in capsys.readouterr().err
    assert not (tmp_path / "f").exists()


def test_two_processes_run_the_phases(quadratic_file, tmp_path) -> None:
    storage = f"journal:{tmp_path / 'study.journal'}"
    result = tuner.tune(f"{quadratic_file}:PHASES", ["sgd", "adam"], trials=12, storage=storage, jobs=2, progress=False)
    trials = _trials(result)
    assert not result.interrupted and len(trials) <= 12
    assert [line.split(" ")[1] for line in result.phases] == ["1", "2", "3", "4"]
    assert result.best is not None and result.best["seeds"] == [0, 1, 2]


class _Slow:
    """Each validation takes at least 0.2 s (a lower bound, so the test does not depend on speed)."""

    name = "slow-quadratic"
    epochs = 3

    def init_params(self, seed):
        return {"w": np.zeros(4)}

    def train_batches(self, epoch, rng):
        yield None

    def loss_and_grads(self, params, batch):
        d = params["w"] - 1.0
        return float(d @ d), {"w": 2 * d}

    def validation_loss(self, params):
        import time

        time.sleep(0.2)
        d = params["w"] - 1.0
        return float(d @ d)


def test_timeout_stops_starting_trials_and_best_says_what_it_has() -> None:
    result = tuner.tune(_Slow(), ["sgd", "adam"], trials=10, timeout=1.0, progress=False)
    trials = [t for t in _trials(result) if t.state.name in ("COMPLETE", "PRUNED")]
    assert 1 <= len(trials) < 6  # each takes >= 0.4 s: phase 1 (6 runs) could not finish
    dropped = [t for t in _trials(result) if t.state.name == "FAIL"]  # queued, never started: not left WAITING
    assert len(trials) + len(dropped) == 6 and all(t.user_attrs["error"].startswith("not run") for t in dropped)
    assert {t.user_attrs["phase"] for t in trials} == {1}
    assert result.phases[0].startswith("phase 1") and "out of time" in result.phases[-1]
    assert result.best["full_fidelity"] is False and result.best["seeds"] == [0] and result.best["epochs"] == 1
