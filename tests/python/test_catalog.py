"""docs/optimizers.md and README.md's optimizer table are the catalogue's output (generated from the
records), and every optimizer has a paper and a reference."""
from __future__ import annotations

import pathlib

import pyopt
from pyopt import catalog, cli

# The optimizers of optax written in Python (pyopt/sm3.py, fromage.py, polyak_sgd.py, dog.py, momo.py).
OPTAX_FAMILY = ["sm3", "fromage", "polyak_sgd", "dog", "momo"]

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "optimizers.md"
README = ROOT / "README.md"
STALE = "is stale: regenerate it with `python -m pyopt.catalog --write`"


def test_docs_page_is_current() -> None:
    assert DOCS.read_text() == catalog.markdown(), f"docs/optimizers.md {STALE}"


def test_readme_table_is_current() -> None:
    text = README.read_text()
    assert text.count(catalog.README_BEGIN) == 1 and text.count(catalog.README_END) == 1
    assert catalog.with_readme_table(text) == text, f"README.md's optimizer table {STALE}"
    for e in catalog.entries():
        assert f"| `{e['name']}` | `pyopt.{e['class']}` |" in text


def test_signature_stub_is_current() -> None:
    """pyopt/optimizers.pyi (the generated classes' signatures, for type checkers) is current."""
    assert (ROOT / "pyopt" / "optimizers.pyi").read_text() == catalog.stub(), f"pyopt/optimizers.pyi {STALE}"
    assert "    def update_hessian(self, estimates: GradsLike) -> None: ..." in catalog.stub()


def test_write_regenerates_every_file(tmp_path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "pyopt").mkdir()
    (tmp_path / "docs" / "optimizers.md").write_text("old\n")
    stale = README.read_text().replace(catalog.readme_table(), catalog.README_BEGIN + "\nold\n" + catalog.README_END)
    (tmp_path / "README.md").write_text(stale)
    assert catalog.write(tmp_path) == [tmp_path / "docs" / "optimizers.md", tmp_path / "README.md",
                                       tmp_path / "pyopt" / "optimizers.pyi"]
    assert (tmp_path / "docs" / "optimizers.md").read_text() == catalog.markdown()
    assert (tmp_path / "README.md").read_text() == README.read_text()
    assert (tmp_path / "pyopt" / "optimizers.pyi").read_text() == catalog.stub()
    assert catalog.write(tmp_path) == []


def test_every_optimizer_is_documented() -> None:
    rows = {e["name"]: e for e in catalog.entries()}
    assert set(pyopt.available()) | {"muon", "adafactor", "lbfgs", *OPTAX_FAMILY} == set(rows)
    for name, e in rows.items():
        assert e["paper"], f"{name}: its record has no paper"
        assert e["reference"] and e["summary"], name
        assert hasattr(pyopt, e["class"]), name


def test_cli_prints_the_page(capsys) -> None:
    assert cli.main(["list", "--markdown"]) == 0
    assert capsys.readouterr().out == catalog.markdown()


def test_create_knows_the_python_optimizers() -> None:
    import numpy as np

    assert type(pyopt.create("muon", [np.ones((3, 4))], lr=0.01)) is pyopt.Muon
    assert type(pyopt.create("adafactor", [np.ones(5)])) is pyopt.Adafactor
    assert type(pyopt.create("lbfgs", [np.ones(5)], history_size=5)) is pyopt.LBFGS
    try:
        pyopt.create("no-such", [np.ones(5)])
    except ValueError as exc:
        assert "muon" in str(exc) and "lbfgs" in str(exc) and "adamw" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("create accepted an unknown name")
