"""The C++-backed optimizers and the Python-stepped ones (Muon, Adafactor) share one base class
for params and groups, schedules, checkpoints and the lock: one copy of that code, one behaviour."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import pyopt
import pyopt.optimizer
from pyopt._pybase import PyOptimizer

SHARED = ["add_param_group", "_grad_list", "schedules", "_attach_schedule", "state_dict", "load_state_dict",
          "_each_group", "_check_groups_unedited", "__repr__"]


@pytest.mark.parametrize("cls", [pyopt.AdamW, pyopt.Muon, pyopt.Adafactor, PyOptimizer, pyopt.Optimizer])
@pytest.mark.parametrize("attr", SHARED)
def test_group_state_and_schedule_code_exists_once(cls: type, attr: str) -> None:
    OptimizerBase = getattr(pyopt.optimizer, "OptimizerBase", None)
    assert OptimizerBase is not None and issubclass(cls, OptimizerBase)
    owner = next(c for c in cls.__mro__ if attr in vars(c))
    assert owner is OptimizerBase, f"{cls.__name__}.{attr} is defined again in {owner.__name__}"


@pytest.mark.parametrize("make", [lambda p: pyopt.Muon([p]), lambda p: pyopt.Adafactor([p]),
                                  lambda p: pyopt.AdamW([p])], ids=["muon", "adafactor", "adamw"])
def test_step_waits_for_the_lock(make) -> None:
    """A step holds the optimizer's lock: while another thread holds it, the step does not run."""
    param = np.ones((4, 3), np.float32)
    opt = make(param)
    done = threading.Event()
    worker = threading.Thread(target=lambda: (opt.step([np.ones((4, 3), np.float32)]), done.set()))
    with opt._lock:
        worker.start()
        # A locked step never finishes here; an unlocked one almost always does within the wait
        # (so a slow machine can only hide the defect, never fail a correct step).
        assert not done.wait(0.3), "the step ran while another thread held the optimizer's lock"
        np.testing.assert_array_equal(param, 1.0)
    worker.join(30)
    assert done.is_set() and not np.array_equal(param, 1.0)
