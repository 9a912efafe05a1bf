"""The quick task of the tuner's tests: f(w) = 0.5 * sum(s * (w - 1)^2) with noisy gradients,
a few milliseconds per trial.

Importable (``from quadratic_task import Quadratic``) and loadable by path as a task file, also
in the worker processes a test starts: ``tuner.load_task(f"{quadratic_task.__file__}:PHASES")``
(the instances below, one per test file, differ in their name, hence their study's name).
"""
from __future__ import annotations

import numpy as np


class Quadratic:
    """``dim`` weights, curvatures ``s = logspace(*curvature, dim)``; ``batches`` minibatches of
    gradient noise (std 0.01) per epoch; the start is random (from the seed) or zeros.
    ``fail_at`` / ``interrupt_at``: the call of ``loss_and_grads`` that raises RuntimeError /
    KeyboardInterrupt (counted over the instance's life)."""

    def __init__(self, name: str = "quadratic-test", epochs: int = 4, *, dim: int = 20, batches: int = 10,
                 curvature: tuple[float, float] = (-1.0, 1.0), random_start: bool = True,
                 steps_per_epoch: int | None = None, fail_at: int | None = None,
                 interrupt_at: int | None = None) -> None:
        self.name, self.epochs = name, epochs
        self.dim, self.batches, self.random_start = dim, batches, random_start
        self.s = np.logspace(*curvature, dim)
        if steps_per_epoch is not None:
            self.steps_per_epoch = steps_per_epoch
        self.calls = 0
        self.fail_at, self.interrupt_at = fail_at, interrupt_at

    def init_params(self, seed: int) -> dict[str, np.ndarray]:
        if self.random_start:
            return {"w": np.random.default_rng(seed).standard_normal(self.dim) * 0.1}
        return {"w": np.zeros(self.dim)}

    def train_batches(self, epoch: int, rng: np.random.Generator):
        for _ in range(self.batches):
            yield rng.standard_normal(self.dim) * 0.01

    def loss_and_grads(self, params: dict[str, np.ndarray], batch: np.ndarray):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise RuntimeError("task failed on purpose")
        if self.interrupt_at is not None and self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        d = params["w"] - 1.0
        return float(0.5 * np.sum(self.s * d * d)), {"w": self.s * d + batch}

    def validation_loss(self, params: dict[str, np.ndarray]) -> float:
        d = params["w"] - 1.0
        return float(0.5 * np.sum(self.s * d * d))


TUNER = Quadratic("quadratic-test", random_start=False)                    # test_tuner.py
PHASES = Quadratic("quadratic-phases")                                     # test_tuner_phases.py
SCHEDULES = Quadratic("quadratic-schedules", steps_per_epoch=10)           # test_tuner_schedules.py
