"""pyopt.tuner: Optuna picks the optimizer and its hyperparameters for a training task.

    from pyopt import tuner
    result = tuner.tune("softmax-digits", trials=40, out="runs/digits")  # phased; strategy="tpe": one study
    opt = pyopt.from_config(result.best, params)

A task is anything with the ``Task`` protocol (tuner/tasks.py): ``name``, ``epochs``,
``init_params(seed)``, ``train_batches(epoch, rng)``, ``loss_and_grads(params, batch)``,
``validation_loss(params)``. Built-in tasks: ``tasks.TASKS``. The command line is ``pyopt tune``.
"""
from __future__ import annotations

from . import phases, report, space, tasks
from .phases import DEFAULT_PORTFOLIO
from .run import DEFAULT_OPTIMIZERS, STRATEGIES, TuneResult, tune
from .study import DIVERGED_FACTOR, create_study, make_objective, train
from .tasks import TASKS, Task, load_task

__all__ = ["DEFAULT_OPTIMIZERS", "DEFAULT_PORTFOLIO", "DIVERGED_FACTOR", "STRATEGIES", "TASKS", "Task", "TuneResult",
           "create_study", "load_task", "make_objective", "phases", "report", "space", "tasks", "train", "tune"]
