"""Held-out tasks for experiments/tuner_baselines.py (``--heldout``): variants of the built-in
tasks with other epochs, batch sizes, widths and starts. The tuner's design (phases.py) was
argued and measured on the seven built-in tasks; these were written afterwards and never used to
choose anything, so they check that its results carry over to problems it was not shaped on."""
from __future__ import annotations

from typing import Any, Callable

from pyopt.tuner import tasks


class MLPDigitsWide(tasks.MLPDigits):
    name = "mlp-digits-wide"
    hidden = 128
    batch_size = 32
    epochs = 12


class SoftmaxDigitsLong(tasks.SoftmaxDigits):
    name = "softmax-digits-long"
    batch_size = 16
    epochs = 40


class LinearDiabetesShort(tasks.LinearDiabetes):
    name = "linear-diabetes-short"
    batch_size = 16
    epochs = 9


class LogisticCancerBigBatch(tasks.LogisticCancer):
    name = "logistic-cancer-bigbatch"
    batch_size = 128
    epochs = 30


class RosenbrockFar(tasks.Rosenbrock):
    name = "rosenbrock-far"
    start = (-2.0, 3.0)
    epochs = 10


class QuadraticNoisy(tasks.NoisyQuadratic):
    name = "quadratic-noisy"
    noise = 1.2
    batch_size = 32
    epochs = 15


HELDOUT: dict[str, Callable[[], Any]] = {cls.name: cls for cls in (
    RosenbrockFar, QuadraticNoisy, LogisticCancerBigBatch, SoftmaxDigitsLong, MLPDigitsWide, LinearDiabetesShort)}
