"""Where the installed package keeps its C++ side (headers, libpyopt_kernels.a, CMake config),
for ``python -m pyopt --cmakedir`` / ``--includedir``. Found on disk; nothing is built."""
from __future__ import annotations

import importlib.util
from pathlib import Path


def _package_dirs() -> list[Path]:
    dirs = [Path(__file__).resolve().parent]
    # An editable install keeps the Python sources in the repository and the built files (the
    # _core module, and the C++ package next to it) in the build tree.
    spec = importlib.util.find_spec("pyopt._core")
    if spec is not None and spec.origin:
        dirs.append(Path(spec.origin).resolve().parent)
    return dirs


def _find(relative: str) -> str:
    for base in _package_dirs():
        if (base / relative).is_dir():
            return str(base / relative)
    raise FileNotFoundError(f"pyopt: no {relative} folder in {', '.join(map(str, _package_dirs()))} "
                            "(the package was installed without its C++ files)")


def get_cmake_dir() -> str:
    """The folder holding pyoptConfig.cmake: pass it as ``-Dpyopt_DIR=...`` to CMake."""
    return _find("share/cmake/pyopt")


def get_include() -> str:
    """The folder to put on the include path for ``#include <pyopt/pyopt.hpp>``."""
    return _find("include")
