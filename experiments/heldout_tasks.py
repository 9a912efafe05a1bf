"""Held-out tasks for experiments/tuner_baselines.py (``--heldout``): variants of the built-in
tasks with other epochs, batch sizes, widths and starts. The tuner's design (phases.py) was
argued and measured on the seven built-in tasks; these were written afterwards and never used to
choose anything, so they check that its results carry over to problems it was not shaped on."""
from __future__ import annotations

from typing import Any, Callable

from pyopt.tuner import tasks


def variant(base: type, name: str, **changes: Any) -> type:
    """A subclass of the built-in task ``base`` named ``name``, with ``changes`` to its class attributes."""
    return type(base.__name__ + "Variant", (base,), {"name": name, **changes})


HELDOUT: dict[str, Callable[[], Any]] = {cls.name: cls for cls in (
    variant(tasks.Rosenbrock, "rosenbrock-far", start=(-2.0, 3.0), epochs=10),
    variant(tasks.NoisyQuadratic, "quadratic-noisy", noise=1.2, batch_size=32, epochs=15),
    variant(tasks.LogisticCancer, "logistic-cancer-bigbatch", batch_size=128, epochs=30),
    variant(tasks.SoftmaxDigits, "softmax-digits-long", batch_size=16, epochs=40),
    variant(tasks.MLPDigits, "mlp-digits-wide", hidden=128, batch_size=32, epochs=12),
    variant(tasks.LinearDiabetes, "linear-diabetes-short", batch_size=16, epochs=9),
)}
