"""40 trials on softmax-digits find a better optimizer setting than default AdamW (the README's
main job), re-trained over the same seeds. Speed is reported in the README, never asserted here."""
from __future__ import annotations

import statistics

import pytest

pytest.importorskip("optuna")

from pyopt import tuner  # noqa: E402
from pyopt.tuner import space  # noqa: E402


def test_40_trials_beat_default_adamw() -> None:
    task = tuner.load_task("softmax-digits")
    result = tuner.tune(task, trials=40, seed=0, progress=False)
    best = result.best
    assert best is not None and best["strategy"] == "phased" and best["seeds"] == [0, 1, 2]
    baseline = []
    for seed in best["seeds"]:
        value, info = tuner.train(task, "adamw", space.defaults("adamw"), seed=seed)
        assert not info["diverged"]
        baseline.append(value)
    assert best["value"] < 0.8 * statistics.fmean(baseline), (best, baseline)
    # The winning config reproduces each seed's value.
    hyper = {k: tuple(v) if isinstance(v, list) else v for k, v in best["hyperparameters"].items()}
    for seed, expected in zip(best["seeds"], best["values"]):
        again, _ = tuner.train(task, best["optimizer"], hyper, seed=seed)
        assert again == pytest.approx(expected, rel=1e-9)


def test_40_trials_with_strategy_tpe_beat_default_adamw() -> None:
    task = tuner.load_task("softmax-digits")
    baseline, _ = tuner.train(task, "adamw", space.defaults("adamw"), seed=0)
    result = tuner.tune(task, trials=40, seed=0, progress=False, strategy="tpe")
    assert result.best is not None and result.best["value"] < 0.8 * baseline
