"""Builds the C++ library and its tests with CMake (no Python in them) and runs them with ctest,
so the README's one test command covers the C++ API too."""
import shutil
import subprocess

import pytest
from cpp_tools import ROOT, env, tool


def test_cpp_suite_passes(cpp_build):
    """The ctest suite of the session's shared build (conftest.py cpp_build)."""
    ctest = tool("ctest")
    assert ctest, "ctest not found: install the test extra (pip install '.[test]')"
    build = cpp_build
    result = subprocess.run([ctest, "--test-dir", str(build), "--output-on-failure"], env=env(),
                            capture_output=True, text=True)
    print(result.stdout[-5000:], result.stderr[-2000:])
    assert result.returncode == 0, result.stdout[-5000:]
    assert "100% tests passed" in result.stdout


CROSS_CXX = shutil.which("aarch64-linux-gnu-g++")


@pytest.mark.skipif(CROSS_CXX is None, reason="no aarch64 cross compiler (apt-get install g++-aarch64-linux-gnu)")
@pytest.mark.skipif(not (ROOT / "CMakeLists.txt").exists(), reason="needs the source tree")
def test_aarch64_build_compiles(tmp_path):
    """The NEON baseline build configures and compiles (cross-compiled: this machine is x86-64)."""
    cmake = tool("cmake")
    build = tmp_path / "arm"
    generator = ["-G", "Ninja"] if tool("ninja") else []
    subprocess.run([cmake, "-S", str(ROOT), "-B", str(build), *generator, "-DCMAKE_SYSTEM_NAME=Linux",
                    "-DCMAKE_SYSTEM_PROCESSOR=aarch64", f"-DCMAKE_CXX_COMPILER={CROSS_CXX}",
                    "-DPYOPT_BUILD_PYTHON=OFF"], check=True)
    subprocess.run([cmake, "--build", str(build), "--target", "pyopt_kernels"], check=True)
    objdump = shutil.which("aarch64-linux-gnu-objdump")
    if objdump:
        disasm = subprocess.run([objdump, "-d", str(build / "libpyopt_kernels.a")], capture_output=True,
                                text=True, check=True).stdout
        assert "fsqrt\tv" in disasm or "fsqrt v" in disasm.replace("\t", " ")  # NEON vector sqrt: vectorized
