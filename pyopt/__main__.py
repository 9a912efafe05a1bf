import sys

if sys.argv[1:] in (["--cmakedir"], ["--includedir"]):  # as pybind11: for -Dpyopt_DIR=...
    from ._cmake import get_cmake_dir, get_include

    print(get_cmake_dir() if sys.argv[1] == "--cmakedir" else get_include())
    sys.exit(0)

from .cli import main

sys.exit(main())
