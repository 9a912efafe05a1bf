"""Layers point one way: the core package (pyopt/) does not import the tuner (tuner/, installed as
pyopt.tuner) except for `pyopt tune`, the tuner does not get its data from the demo, and the
benchmark harness is not part of `import pyopt`. Checked twice: by what a fresh interpreter has
imported, and by every import statement in the sources (module- and function-level)."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "pyopt"
TUNER = ROOT / "tuner"
pytestmark = pytest.mark.skipif(not (CORE / "cli.py").exists() or not TUNER.is_dir(), reason="needs the source tree")


def modules_after(code: str) -> set[str]:
    """The pyopt* and optuna* modules a fresh interpreter has imported after running ``code``."""
    script = (f"import sys, json\n{code}\n"
              "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('pyopt', 'optuna'))))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=str(ROOT.parent))
    assert result.returncode == 0, result.stderr[-3000:]
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def imported_modules(path: Path, package: str) -> list[tuple[str, bool]]:
    """(absolute module name, at module level?) of every import in ``path``, a module of
    ``package`` ("pyopt" or "pyopt.tuner"), including ``importlib.import_module("...")`` calls
    with a literal name. ``from X import y`` yields both X and X.y (y may be a submodule)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

    def top_level(node: ast.AST) -> bool:
        while node in parents:
            node = parents[node]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                return False
        return True

    def absolute(name: str, level: int) -> str:
        if not level:
            return name
        base = package.split(".")
        base = base[: len(base) - (level - 1)]
        return ".".join(base + ([name] if name else []))

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, top_level(node)) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = absolute(node.module or "", node.level)
            found.append((module, top_level(node)))
            found += [(f"{module}.{alias.name}", top_level(node)) for alias in node.names]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            name = node.args[0].value
            level = len(name) - len(name.lstrip("."))
            found.append((absolute(name.lstrip("."), level), top_level(node)))
    return found


def is_module(name: str, target: str) -> bool:
    return name == target or name.startswith(target + ".")


def core_files() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


# ----- (a) pyopt/ imports the tuner only in the CLI, for `pyopt tune` -------------------------
def test_core_imports_the_tuner_only_in_the_cli_functions() -> None:
    bad = []
    for path in core_files():
        for module, top in imported_modules(path, "pyopt"):
            tuner = is_module(module, "pyopt.tuner") or is_module(module, "tuner")
            if tuner and (path.name != "cli.py" or top):
                bad.append(f"{path.relative_to(ROOT)}: {module}")
    assert not bad, bad


@pytest.mark.parametrize("command", [["list"], ["info"], ["list", "--markdown"]])
def test_cli_commands_other_than_tune_do_not_load_the_tuner(command: list[str]) -> None:
    loaded = modules_after(
        "import contextlib, io\nfrom pyopt.cli import main\n"
        f"with contextlib.redirect_stdout(io.StringIO()):\n    assert main({command!r}) == 0")
    assert not {m for m in loaded if is_module(m, "pyopt.tuner") or is_module(m, "optuna")}, sorted(loaded)


def test_pyopt_tune_still_finds_the_tuner() -> None:
    pytest.importorskip("optuna")
    result = subprocess.run([sys.executable, "-m", "pyopt", "tune", "--help"], capture_output=True, text=True,
                            cwd=str(ROOT.parent))
    assert result.returncode == 0, result.stderr
    assert "--optimizers" in result.stdout and "--trials" in result.stdout  # the tuner's own options


# ----- (b) the tuner does not import the demo (its data comes from pyopt.datasets) ------------
def test_tuner_does_not_import_the_demo() -> None:
    bad = [f"{path.relative_to(ROOT)}: {module}"
           for path in sorted(TUNER.rglob("*.py"))
           for module, _ in imported_modules(path, "pyopt.tuner")
           if is_module(module, "pyopt.demo")]
    assert not bad, bad


def test_digits_tasks_load_without_the_demo() -> None:
    pytest.importorskip("optuna")
    loaded = modules_after("from pyopt.tuner.tasks import load_task\n"
                           "task = load_task('softmax-digits')\nassert task.x_train.shape == (1500, 64)")
    assert "pyopt.demo" not in loaded and "pyopt.datasets" in loaded


# ----- (c) the benchmark harness is not part of `import pyopt` ---------------------------------
def test_import_pyopt_loads_no_bench_tuner_or_demo() -> None:
    loaded = modules_after("import pyopt\nassert not hasattr(pyopt, 'bench')")
    assert "pyopt" in loaded
    assert not {m for m in loaded if m.split(".")[:2] in (["pyopt", "bench"], ["pyopt", "tuner"], ["pyopt", "demo"])
                or is_module(m, "optuna")}, sorted(loaded)


def test_only_the_cli_imports_the_bench() -> None:
    bad = [f"{path.relative_to(ROOT)}: {module}"
           for path in core_files() if path.name not in ("cli.py", "bench.py")
           for module, _ in imported_modules(path, "pyopt")
           if is_module(module, "pyopt.bench")]
    bad += [f"pyopt/cli.py: {module} (module level)" for module, top in imported_modules(CORE / "cli.py", "pyopt")
            if is_module(module, "pyopt.bench") and top]
    bad += [f"{path.relative_to(ROOT)}: {module}" for path in sorted(TUNER.rglob("*.py"))
            for module, _ in imported_modules(path, "pyopt.tuner") if is_module(module, "pyopt.bench")]
    assert not bad, bad
