"""docs/optimizers.md is the catalogue's output, and every optimizer has a paper and a reference."""
from __future__ import annotations

import pathlib

import pyopt
from pyopt import catalog, cli

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "optimizers.md"


def test_docs_page_is_current() -> None:
    assert DOCS.read_text() == catalog.markdown(), (
        "docs/optimizers.md is stale: regenerate it with `pyopt list --markdown > docs/optimizers.md`")


def test_every_optimizer_is_documented() -> None:
    rows = {e["name"]: e for e in catalog.entries()}
    assert set(pyopt.available()) | set(catalog.PYTHON_OPTIMIZERS) == set(rows)
    for name, e in rows.items():
        assert e["paper"], f"{name}: add its paper to pyopt/catalog.py PAPERS"
        assert e["reference"] and e["summary"], name
        assert hasattr(pyopt, e["class"]), name


def test_cli_prints_the_page(capsys) -> None:
    assert cli.main(["list", "--markdown"]) == 0
    assert capsys.readouterr().out == catalog.markdown()


def test_create_knows_the_python_optimizers() -> None:
    import numpy as np

    assert type(pyopt.create("muon", [np.ones((3, 4))], lr=0.01)) is pyopt.Muon
    assert type(pyopt.create("adafactor", [np.ones(5)])) is pyopt.Adafactor
    try:
        pyopt.create("no-such", [np.ones(5)])
    except ValueError as exc:
        assert "muon" in str(exc) and "adamw" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("create accepted an unknown name")
