import subprocess
import sys

import pytest


@pytest.fixture
def python_child(tmp_path):
    """Run `python ARGS...` in a child process, outside the source tree.

    From the repository root, `python -c`/`-m` would put the source folder `pyopt/` (which has no
    compiled `_core`) ahead of the installed package on sys.path.
    """

    def run(*args, **kwargs):
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 300)
        return subprocess.run([sys.executable, *args], cwd=tmp_path, **kwargs)

    return run


@pytest.fixture(scope="session")
def cpp_build(tmp_path_factory):
    """One CMake build of the C++ library, its ctest suite and the step driver, shared by the C++
    tests (test_cpp.py, test_cmake_package.py): configured and built once per session."""
    from cpp_tools import ROOT, build_repo

    if not (ROOT / "CMakeLists.txt").exists():
        pytest.skip("needs the source tree")
    return build_repo(tmp_path_factory.mktemp("cpp") / "build")


@pytest.fixture
def isa(request):
    """Switch the kernels to ISA path ``request.param`` (parametrize with ``indirect=True``) for one
    test; restore the previous path. Modules that run every test on every path override it with
    ``@pytest.fixture(params=ISAS)``."""
    from refcheck import isa_path

    with isa_path(request.param) as name:
        yield name


@pytest.fixture
def threads():
    """Run pyopt's kernels on one thread for the reference comparisons: the rules are elementwise,
    and test_thread_count_does_not_change_results checks that more threads give the same bits.
    Several OpenMP threads on a busy 2-core machine wait milliseconds per step at the barrier."""
    from refcheck import num_threads

    with num_threads(1) as n:
        yield n


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (tiny tensors and small GEMMs run several times faster and
    give the same results); its thread count is restored afterwards."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture
def quadratic_file():
    """tests/python/quadratic_task.py: the tuner tests' quick task, loadable by path
    (``f"{quadratic_file}:PHASES"``), also by the worker processes a test starts."""
    from pathlib import Path

    import quadratic_task

    return Path(quadratic_task.__file__)
