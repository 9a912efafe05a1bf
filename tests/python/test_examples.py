"""The examples run and learn."""
from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys

import pytest

import pyopt  # noqa: F401  (imported before capsys: an editable build may print while importing)

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sophia_digits_learns(capsys) -> None:
    example = load("sophia_digits")
    final = example.main(epochs=5, k=10)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5
    first = float(lines[0].split()[3])
    assert final < 0.5 * first < 1.0  # val loss falls (chance is ln 10 = 2.3)


def test_torch_mlp_learns_as_written() -> None:
    """`python examples/torch_mlp.py` from the repository root: pyopt.torch.AdamW under OneCycleLR."""
    pytest.importorskip("torch")
    root = EXAMPLES.parent
    done = subprocess.run([sys.executable, "examples/torch_mlp.py"], cwd=root, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    epochs = [dict(zip(line.split()[::2], line.split()[1::2])) for line in lines[:-1]]
    assert [int(e["epoch"]) for e in epochs] == list(range(1, 13))
    lrs = [float(e["lr"]) for e in epochs]
    peak = lrs.index(max(lrs))
    assert 0 < peak < len(lrs) - 1 and lrs[-1] < 0.01 * lrs[peak]  # OneCycleLR ran: warm-up, then decay
    losses = [float(e["train_loss"]) for e in epochs]
    assert losses[-1] < 0.2 * losses[0]
    final = float(lines[-1].split()[-1])
    assert lines[-1].startswith("final validation accuracy") and final == float(epochs[-1]["val_acc"])
    assert final > 0.9  # chance is 0.1
