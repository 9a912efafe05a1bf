"""Adding an optimizer the way the README's "Adding an optimizer" says, on a copy of this tree:

1. the rule header (csrc/include/pyopt/rules/toy_heavy_ball.hpp),
2. its record (one include line and one PYOPT_RULE entry in csrc/include/pyopt/records.def),
3. its reference test case (one row in tests/python/reference_table.py and its float64 numpy model
   in reference_impls.py),

then `python -m pyopt.catalog --write` for the generated docs. Nothing else is edited; the copy is
built (baseline kernels only, to keep it short) and must then have the Python class, validation
from the record, `pyopt list`, a passing reference row and current generated docs.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cpp_tools import ROOT, configure_and_build, tool

pytestmark = pytest.mark.skipif(not (ROOT / "CMakeLists.txt").exists() or tool("cmake") is None,
                                reason="needs the source tree and cmake")

RULE = """\
#pragma once
// Toy heavy ball (a test of the documented way to add an optimizer, tests/python/test_add_optimizer.py).
//
//   g <- -g if maximize;  g <- g + wd*p
//   b <- momentum*b + g;  p <- p - lr*b
#include "pyopt/rules/base.hpp"

PYOPT_KERNEL_NAMESPACE_BEGIN
namespace rules {

struct ToyHeavyBall : RuleBase {
  static constexpr const char* name = "toy_heavy_ball";
  enum Hyper { lr, momentum, weight_decay, maximize, kNumHyper };
  static constexpr const char* slot_names[] = {"momentum_buffer"};
  static constexpr bool maximize_policy = true;
  static constexpr Decay decay_policy = Decay::Coupled;
  static constexpr unsigned slot_mask(int) { return 0b1u; }

  template <class T>
  struct Coeffs {
    T momentum, neg_lr;
  };
  template <class T>
  static Coeffs<T> prepare(const double* h, int64_t, double*) {
    return {T(h[momentum]), T(-h[lr])};
  }

  template <int V, class T>
  static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    s[0] = fmadd(k.momentum, s[0], g);
    p = fmadd(k.neg_lr, s[0], p);
  }
};

}  // namespace rules
PYOPT_KERNEL_NAMESPACE_END
"""

RECORD = """
PYOPT_RULE(ToyHeavyBall, {
    "toy_heavy_ball", "ToyHeavyBall", "Toy heavy ball, a test rule", "a float64 numpy model",
    "Polyak, 1964", "https://doi.org/10.1016/0041-5553(64)90137-5",
    {1e-4, 1.0}, 0.03,
    {
        {"lr", 1e-2, Real, NonNegative, Log},
        {"momentum", 0.9, Real, UnitOpenRight, OneMinusLog},
        {"weight_decay", 0.0, Real, NonNegative, WeightDecay},
        {"maximize", 0.0, Bool, Any, Fixed, 0, 0, KeywordOnly},
    }})
"""

REFERENCE = '''

def toy_heavy_ball_step(h: dict, t: int, p: np.ndarray, g: np.ndarray, st: dict) -> None:
    """The toy rule of test_add_optimizer.py."""
    g = g + h["weight_decay"] * p
    b = st["momentum_buffer"]
    b[...] = h["momentum"] * b + g
    p -= h["lr"] * b
'''

ROW = """
ROWS.append(model_row("toy_heavy_ball", 99, ref.numpy_model(ref.zeros("momentum_buffer"), ref.toy_heavy_ball_step), {
    "lr": Log(1e-3, 1e-1), "momentum": Uniform(0.5, 0.95), "weight_decay": DECAY}))
BY_NAME["toy_heavy_ball"] = ROWS[-1]
"""

# The copy's `import pyopt` must be the copy's package, not an installed or editable one.
SITECUSTOMIZE = """\
import sys
sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("_editable")]
"""


def copy_tree(dest: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.split("\n")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file() and not rel.startswith("tests/fuzz/corpus"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def add_toy(tree: Path) -> list[str]:
    """The documented edits; returns the files touched."""
    (tree / "csrc/include/pyopt/rules/toy_heavy_ball.hpp").write_text(RULE)
    records = tree / "csrc/include/pyopt/records.def"
    text = records.read_text()
    anchor = '#include "pyopt/rules/yogi.hpp"\n'
    assert anchor in text
    text = text.replace(anchor, anchor + '#include "pyopt/rules/toy_heavy_ball.hpp"\n')
    end = "#endif  // PYOPT_RECORD_HEADERS"
    text = text.replace(end, RECORD.lstrip("\n") + "\n" + end)
    records.write_text(text)
    with open(tree / "tests/python/reference_impls.py", "a") as f:
        f.write(REFERENCE)
    table = tree / "tests/python/reference_table.py"
    text = table.read_text()
    assert "BY_NAME" in text
    table.write_text(text + ROW)  # appended after BY_NAME is built, so the row is registered in both
    return ["csrc/include/pyopt/rules/toy_heavy_ball.hpp", "csrc/include/pyopt/records.def",
            "tests/python/reference_impls.py", "tests/python/reference_table.py"]


@pytest.fixture(scope="module")
def toy_tree(tmp_path_factory):
    tree = tmp_path_factory.mktemp("toy") / "src"
    copy_tree(tree)
    touched = add_toy(tree)
    import pybind11

    build = configure_and_build(tree, tree.parent / "build", "-DPYOPT_BUILD_PYTHON=ON", "-DPYOPT_BUILD_TESTS=OFF",
                                "-DPYOPT_BASELINE_ONLY=ON", "-DPYOPT_INSTALL=OFF", f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
                                f"-DPython_EXECUTABLE={sys.executable}", target="_core")
    (module,) = build.glob("_core*.so")
    shutil.copy2(module, tree / "pyopt" / module.name)
    site = tree.parent / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    environment = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{tree}", "PYTHONDONTWRITEBYTECODE": "1"}
    return tree, environment, touched


def run(tree, environment, *args):
    done = subprocess.run([sys.executable, *args], cwd=tree, env=environment, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_three_files_and_a_test(toy_tree):
    tree, _, touched = toy_tree
    source = [f for f in touched if not f.startswith("tests/")]
    assert source == ["csrc/include/pyopt/rules/toy_heavy_ball.hpp", "csrc/include/pyopt/records.def"]


def test_the_toy_is_a_pyopt_optimizer(toy_tree):
    tree, environment, _ = toy_tree
    out = run(tree, environment, "-c", textwrap.dedent("""
        import inspect, numpy as np, pyopt
        assert pyopt.__file__.startswith(%r), pyopt.__file__
        cls = pyopt.ToyHeavyBall
        params = inspect.signature(cls).parameters
        print([(k, v.default, v.kind.name) for k, v in params.items()])
        assert "toy_heavy_ball" in pyopt.available()
        p = np.ones(17); g = np.full(17, 0.5)
        opt = pyopt.create("toy_heavy_ball", [p], lr=0.1, momentum=0.5, weight_decay=0.2, maximize=True)
        opt.step([g]); opt.step([g])
        b = -0.5 + 0.2 * 1.0
        p1 = 1.0 - 0.1 * b
        b = 0.5 * b + (-0.5 + 0.2 * p1)
        np.testing.assert_allclose(p, p1 - 0.1 * b, rtol=1e-15)
        try:
            cls([np.ones(3)], momentum=1.0)
        except ValueError as exc:
            print("refused:", exc)
        else:
            raise SystemExit("momentum = 1 accepted")
    """ % str(tree)))
    assert ("[('params', <class 'inspect._empty'>, 'POSITIONAL_OR_KEYWORD'), ('lr', 0.01, 'POSITIONAL_OR_KEYWORD'), "
            "('momentum', 0.9, 'POSITIONAL_OR_KEYWORD'), ('weight_decay', 0.0, 'POSITIONAL_OR_KEYWORD'), "
            "('maximize', False, 'KEYWORD_ONLY'), ('master_weights', False, 'KEYWORD_ONLY'), "
            "('state_dtype', 'float32', 'KEYWORD_ONLY'), ('stochastic_rounding', False, 'KEYWORD_ONLY')]") in out
    assert "refused:" in out and "momentum" in out
    assert "toy_heavy_ball" in run(tree, environment, "-m", "pyopt", "list")


def test_the_toys_reference_row_and_generated_docs(toy_tree):
    tree, environment, _ = toy_tree
    run(tree, environment, "-m", "pyopt.catalog", "--write")
    assert "`toy_heavy_ball`" in (tree / "docs" / "optimizers.md").read_text()
    assert "ToyHeavyBall" in (tree / "README.md").read_text()
    out = run(tree, environment, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/python/test_reference.py",
              "-k", "toy_heavy_ball or every_optimizer")
    assert " passed" in out and "failed" not in out, out
    out = run(tree, environment, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/python/test_catalog.py")
    assert " passed" in out and "failed" not in out, out
