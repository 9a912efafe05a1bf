"""40 trials on softmax-digits find a better optimizer setting than default AdamW (the README's
main job). Speed is reported in the README, never asserted here."""
from __future__ import annotations

import pytest

pytest.importorskip("optuna")

from pyopt import tuner  # noqa: E402
from pyopt.tuner import space  # noqa: E402


def test_40_trials_beat_default_adamw() -> None:
    task = tuner.load_task("softmax-digits")
    baseline, info = tuner.train(task, "adamw", space.defaults("adamw"), seed=0)
    assert not info["diverged"]
    result = tuner.tune(task, trials=40, seed=0, progress=False)
    assert result.best is not None
    assert result.best["value"] < 0.8 * baseline, (result.best, baseline)
    # The winning config reproduces its value.
    again, _ = tuner.train(task, result.best["optimizer"],
                           {k: tuple(v) if isinstance(v, list) else v for k, v in result.best["hyperparameters"].items()},
                           seed=0)
    assert again == pytest.approx(result.best["value"], rel=1e-9)
