"""The ``pyopt demo``: bundled digits data, training that actually learns, and the command line."""
from __future__ import annotations

import re

import numpy as np
import pytest

import pyopt
from pyopt import demo


def test_bundled_digits():
    images, labels = demo.load_digits()
    assert images.shape == (1797, 64) and images.dtype == np.uint8
    assert labels.shape == (1797,) and labels.dtype == np.uint8
    assert images.max() == 16 and images.min() == 0
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_every_optimizer_has_a_demo_lr():
    assert set(demo.DEFAULT_LR) == set(pyopt._spec.rule_optimizers())


# Measured over seeds 0-4 at 10 epochs: val loss 2.27-2.51 -> 0.04-0.17, val accuracy 0.96-0.99.
@pytest.mark.parametrize("optimizer", ["adamw", "sgd", "adadelta"])
def test_training_learns(optimizer):
    result = demo.train(optimizer, epochs=10, seed=0)
    start, end = result.history[0], result.history[-1]
    assert [e.epoch for e in result.history] == list(range(11))
    assert result.steps == 10 * 24  # 1500 samples in batches of 64
    assert end.val_loss < 0.3 * start.val_loss
    assert end.train_loss < 0.3 * start.train_loss
    assert end.val_acc > 0.9  # chance is 0.1


def test_training_is_deterministic():
    a = demo.train("adam", epochs=2, seed=3)
    b = demo.train("adam", epochs=2, seed=3)
    assert a.history == b.history


def test_train_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown optimizer"):
        demo.train("nope")
    with pytest.raises(ValueError, match="epochs"):
        demo.train("adam", epochs=-1)
    with pytest.raises(ValueError, match="lr"):
        demo.train("adam", lr=-1.0)


def test_cli_demo(python_child):
    proc = python_child("-m", "pyopt", "demo", "--epochs", "2")
    assert proc.returncode == 0, proc.stderr
    epochs = re.findall(r"^\s*(\d+)\s+\d+\.\d+\s+\d+\.\d+\s+[01]\.\d+$", proc.stdout, flags=re.M)
    assert epochs == ["0", "1", "2"]
    assert "adamw" in proc.stdout
    assert re.search(r"^done: 2 epochs, 48 steps in .* steps/s", proc.stdout, flags=re.M)


def test_cli_demo_unknown_optimizer(python_child):
    proc = python_child("-m", "pyopt", "demo", "--optimizer", "nope")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "unknown optimizer 'nope'" in proc.stderr
    for name in pyopt._spec.rule_optimizers():
        assert name in proc.stderr
