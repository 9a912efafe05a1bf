"""Helpers of the C++ tests: find cmake/ctest/ninja, configure and build a CMake project."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tool(name):
    path = shutil.which(name)
    if path is None:  # the test extra installs cmake/ninja into the environment's bin folder
        candidate = Path(sys.executable).parent / name
        path = str(candidate) if candidate.exists() else None
    return path


def env():
    return {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}


def generator():
    ninja = tool("ninja")
    return ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"] if ninja else []


def configure_and_build(source, build, *args, target=None):
    cmake = tool("cmake")
    assert cmake, "cmake not found: install the test extra (pip install '.[test]')"
    subprocess.run([cmake, "-S", str(source), "-B", str(build), *generator(), "-DCMAKE_BUILD_TYPE=Release", *args],
                   check=True, env=env())
    subprocess.run([cmake, "--build", str(build), *(["--target", target] if target else [])], check=True, env=env())
    return Path(build)


def build_repo(build):
    """The repository's C++ library, ctest suite and step driver (no Python module)."""
    return configure_and_build(ROOT, build, "-DPYOPT_BUILD_TESTS=ON", "-DPYOPT_BUILD_PYTHON=OFF")
