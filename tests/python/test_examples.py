"""The examples run and learn."""
from __future__ import annotations

import importlib.util
import pathlib

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
