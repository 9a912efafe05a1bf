"""pyopt::Optimizer (the C++ API) refuses overlapping buffers and NaN hyperparameters: a small
program built against the installed headers and libpyopt_kernels.a."""
import shutil
import subprocess
from pathlib import Path

import pytest

import pyopt._cmake

CXX = shutil.which("g++") or shutil.which("clang++")

PROGRAM = r"""
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include <pyopt/pyopt.hpp>

static int failures = 0;
template <class F>
static void expect_throw(const char* what, const std::string& needle, F f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    if (std::string(e.what()).find(needle) != std::string::npos) return;
    std::printf("%s: wrong message: %s\n", what, e.what());
    ++failures;
    return;
  }
  std::printf("%s: did not throw\n", what);
  ++failures;
}

int main() {
  std::vector<float> buf(20, 1.0f), grad(10, 1.0f);
  {
    pyopt::Optimizer opt("adam", {{"lr", 0.1}});
    opt.add_param(buf.data(), 10);
    opt.add_param(buf.data() + 10, 10);
    expect_throw("overlapping param", "overlaps param 1", [&] { opt.add_param(buf.data() + 15, 10); });
    const std::vector<float> before = buf;
    // the gradient of param 1 is param 0
    expect_throw("grad aliasing another param", "gradient 1 overlaps param 0",
                 [&] { opt.step({grad.data(), buf.data()}); });
    expect_throw("grad straddling two params", "gradient 0 overlaps",
                 [&] { opt.step({buf.data() + 5, grad.data()}); });
    if (buf != before || opt.step_count(0) != 0) { std::printf("a refused step changed something\n"); ++failures; }
    opt.step({grad.data(), grad.data()});  // one gradient for two params is only read: fine
  }
  expect_throw("asgd lambd", "lambd", [] { pyopt::Optimizer("asgd", {{"lambd", std::nan("")}}); });
  expect_throw("asgd t0", "t0", [] { pyopt::Optimizer("asgd", {{"t0", std::nan("")}}); });
  expect_throw("rprop step_size_max", "step_size_max",
               [] { pyopt::Optimizer("rprop", {{"step_size_max", std::nan("")}}); });
  return failures == 0 ? 0 : 1;
}
"""


@pytest.mark.skipif(CXX is None, reason="no C++ compiler")
def test_cpp_optimizer_rejects_overlaps_and_nan(tmp_path):
    include = Path(pyopt._cmake.get_include())
    library = include.parent / "lib" / "libpyopt_kernels.a"
    if not library.exists():
        pytest.skip("the installed package has no libpyopt_kernels.a")
    source = tmp_path / "check.cpp"
    source.write_text(PROGRAM)
    exe = tmp_path / "check"
    # A library built with a BLAS (Muon's GEMMs) needs one at link time: Debian's libblas.so is
    # whichever BLAS is installed (OpenBLAS in CI).
    blas = ["-lblas"] if pyopt._core.have_blas() else []
    build = subprocess.run([CXX, "-std=c++17", "-O1", "-I", str(include), str(source), str(library), *blas, "-fopenmp",
                            "-o", str(exe)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
