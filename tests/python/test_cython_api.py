"""pyopt's C API from Cython (`cimport pyopt`, pyopt/capi.h): a small extension built here against
the installed package steps AdamW and Lion inside `with nogil:` and inside prange (one optimizer
per thread), and its params equal those of pyopt.AdamW / pyopt.Lion's step bit for bit; errors
come back as NULL / -1 with a message naming the culprit. The README's "Use from Cython" example
is compiled as written and checked the same way."""
from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from markdown import block_containing

import pyopt

pytest.importorskip("Cython")
pytest.importorskip("setuptools")

README = Path(__file__).resolve().parents[2] / "README.md"

# The test's own module: a thin class over one optimizer handle whose step runs without the GIL,
# and prange over independent optimizers (handles made with the GIL, stepped in the loop).
STEPS_PYX = r'''
# cython: language_level=3, boundscheck=False, wraparound=False
# distutils: extra_compile_args = -fopenmp
# distutils: extra_link_args = -fopenmp
from libc.stdint cimport int64_t, uintptr_t
from libc.stdlib cimport calloc, malloc, free
from cython.parallel cimport prange, threadid
cimport pyopt

pyopt.import_capi()


def last_error():
    return pyopt.last_error().decode()


def capi_version():
    return pyopt.PYOPT_CAPI_VERSION


def try_create(bytes config):
    """Creates and destroys an optimizer; the error message if create failed, else None."""
    cdef const char* text = config
    cdef pyopt.PyoptOptimizer* opt
    with nogil:
        opt = pyopt.create(text)
    if opt == NULL:
        return last_error()
    pyopt.destroy(opt)
    return None


cdef class COptimizer:
    cdef pyopt.PyoptOptimizer* opt
    cdef list params  # keeps the param arrays alive while the optimizer holds their pointers

    def __cinit__(self, bytes config):
        cdef const char* text = config
        with nogil:
            self.opt = pyopt.create(text)
        if self.opt == NULL:
            raise ValueError(last_error())
        self.params = []

    def __dealloc__(self):
        pyopt.destroy(self.opt)

    def add(self, param):
        cdef float[::1] p32
        cdef double[::1] p64
        cdef int64_t index
        if param.dtype == "float32":
            p32 = param
            with nogil:
                index = pyopt.add_param_f32(self.opt, &p32[0] if p32.shape[0] else NULL, p32.shape[0])
        else:
            p64 = param
            with nogil:
                index = pyopt.add_param_f64(self.opt, &p64[0] if p64.shape[0] else NULL, p64.shape[0])
        if index < 0:
            raise ValueError(last_error())
        self.params.append(param)
        return index

    def add_raw(self, uintptr_t address, size_t size):
        """add_param_f32 on any address and size (the error paths)."""
        cdef int64_t index = pyopt.add_param_f32(self.opt, <float*>address, size)
        if index < 0:
            raise ValueError(last_error())
        return index

    def step(self, grads):
        """grads: an array (or None) per param; the step itself runs without the GIL."""
        cdef size_t n = len(grads), i
        cdef const void** pointers = <const void**>malloc((n + 1) * sizeof(void*))
        cdef float[::1] g32
        cdef double[::1] g64
        cdef int rc
        try:
            for i in range(n):
                g = grads[i]
                if g is None:
                    pointers[i] = NULL
                elif g.dtype == "float32":
                    g32 = g
                    pointers[i] = &g32[0]
                else:
                    g64 = g
                    pointers[i] = &g64[0]
            with nogil:
                rc = pyopt.step(self.opt, pointers, n)
        finally:
            free(pointers)
        if rc != 0:
            raise ValueError(last_error())

    def set(self, bytes name, double value):
        cdef const char* key = name
        cdef int rc
        with nogil:
            rc = pyopt.set_hyperparameter(self.opt, key, value)
        if rc != 0:
            raise ValueError(last_error())

    def get(self, bytes name):
        cdef double value = 0
        if pyopt.get_hyperparameter(self.opt, name, &value) != 0:
            raise ValueError(last_error())
        return value

    def set_num_threads(self, int n):
        if pyopt.set_num_threads(self.opt, n) != 0:
            raise ValueError(last_error())

    def num_params(self):
        return pyopt.num_params(self.opt)

    def step_count(self, int64_t param):
        cdef int64_t count = pyopt.step_count(self.opt, param)
        if count < 0:
            raise ValueError(last_error())
        return count


def prange_steps(bytes config, float[:, ::1] params, float[:, :, ::1] grads, double[::1] lrs, int[::1] thread_of_row):
    """Optimizer i steps params[i] on grads[s, i] with lr lrs[s], s = 0, 1, ...; the optimizers run in
    parallel (prange over 2 threads), each on 1 kernel thread. Returns the number of failed calls;
    thread_of_row[i] is the OpenMP thread that stepped row i."""
    cdef Py_ssize_t n = params.shape[0], size = params.shape[1], steps = grads.shape[0], i, s
    cdef pyopt.PyoptOptimizer** opts = <pyopt.PyoptOptimizer**>calloc(n, sizeof(void*))
    cdef const char* text = config
    cdef const void* grad
    cdef int failures = 0
    try:
        for i in range(n):
            opts[i] = pyopt.create(text)
            if opts[i] == NULL:
                raise ValueError(last_error())
        for i in prange(n, nogil=True, schedule="static", chunksize=1, num_threads=2):
            thread_of_row[i] = threadid()
            failures += pyopt.set_num_threads(opts[i], 1) != 0
            failures += pyopt.add_param_f32(opts[i], &params[i, 0], size) < 0
            for s in range(steps):
                failures += pyopt.set_hyperparameter(opts[i], b"lr", lrs[s]) != 0
                grad = &grads[s, i, 0]
                failures += pyopt.step(opts[i], &grad, 1) != 0
    finally:
        for i in range(n):
            pyopt.destroy(opts[i])
        free(opts)
    return failures
'''

SETUP_PY = r'''
import sys
from setuptools import Extension, setup
from Cython.Build import cythonize

include = sys.argv.pop(1)
modules = sys.argv[1:]
sys.argv[1:] = ["build_ext", "--inplace"]
setup(
    name="pyopt_cython_test",
    ext_modules=cythonize([Extension(m, [m + ".pyx"], include_dirs=[include]) for m in modules],
                          include_path=[include], language_level=3, quiet=True),
)
'''


def readme_block(language: str, needle: str) -> str:
    return block_containing(README.read_text(encoding="utf-8"), language, needle, "README.md")


def build(folder: Path, *args: str) -> None:
    result = subprocess.run([sys.executable, "setup.py", *args], cwd=folder, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"building the Cython extension failed:\n{result.stdout}\n{result.stderr}"


def import_from(folder: Path, name: str):
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(folder))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The test module, and the README's example (rows.pyx, built by its setup.py), compiled once."""
    modules = {}
    folder = tmp_path_factory.mktemp("cython_api")
    (folder / "pyopt_cython_steps.pyx").write_text(STEPS_PYX, encoding="utf-8")
    (folder / "setup.py").write_text(SETUP_PY, encoding="utf-8")
    build(folder, pyopt.get_include(), "pyopt_cython_steps")
    modules["steps"] = import_from(folder, "pyopt_cython_steps")
    if README.exists():
        folder = tmp_path_factory.mktemp("cython_readme")
        (folder / "rows.pyx").write_text(readme_block("cython", "cimport pyopt"), encoding="utf-8")
        (folder / "setup.py").write_text(readme_block("python", "cythonize"), encoding="utf-8")
        build(folder, "build_ext", "--inplace")
        modules["readme"] = import_from(folder, "rows")
    return modules


@pytest.fixture
def steps(built):
    return built["steps"]


def config(name: str, **hyper) -> bytes:
    storage = hyper.pop("storage", None)
    text = {"optimizer": name, "hyperparameters": hyper, **({"storage": storage} if storage else {})}
    return json.dumps(text).encode()


def bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


CASES = {
    "adamw-f32": ("adamw", pyopt.AdamW, np.float32, dict(lr=3e-3, betas=[0.8, 0.99], weight_decay=0.1)),
    "adamw-f64-amsgrad": ("adamw", pyopt.AdamW, np.float64, dict(lr=1e-2, eps=1e-6, amsgrad=True)),
    "adamw-bf16-states": ("adamw", pyopt.AdamW, np.float32,
                          dict(lr=1e-3, weight_decay=0.0, storage={"state_dtype": "bfloat16"})),
    "lion-f32": ("lion", pyopt.Lion, np.float32, dict(lr=1e-3, betas=[0.9, 0.95], weight_decay=0.5)),
    "lion-f64": ("lion", pyopt.Lion, np.float64, dict(lr=3e-4, maximize=True)),
}


@pytest.mark.parametrize("case", CASES)
def test_nogil_steps_equal_python_steps(steps, case):
    name, cls, dtype, hyper = CASES[case]
    rng = np.random.default_rng(len(case))
    # 40000 elements take the kernels' parallel path (above their serial threshold).
    sizes = [1, 7, 33, 40000]
    params = [rng.standard_normal(n).astype(dtype) for n in sizes]
    python_params = [p.copy() for p in params]
    initial = [p.copy() for p in params]
    storage = hyper.get("storage", {})
    python_hyper = {k: (tuple(v) if isinstance(v, list) else v) for k, v in hyper.items() if k != "storage"}
    reference = cls(python_params, **python_hyper, **storage)
    opt = steps.COptimizer(config(name, **hyper))
    assert [opt.add(p) for p in params] == [0, 1, 2, 3]
    assert opt.num_params() == 4
    lr = hyper["lr"]
    for step in range(6):
        grads = [rng.standard_normal(n).astype(dtype) for n in sizes]
        if step == 2:
            grads[1] = None  # skipped this step, in both
        lr *= 0.7  # a schedule, through set_hyperparameter
        opt.set(b"lr", lr)
        reference.param_groups[0]["lr"] = lr
        opt.step(grads)
        reference.step(grads)
        for mine, theirs in zip(params, python_params):
            np.testing.assert_array_equal(bits(mine), bits(theirs))
    assert opt.get(b"lr") == lr
    assert [opt.step_count(i) for i in range(4)] == [6, 5, 6, 6]
    assert all(not np.array_equal(p, p0) for p, p0 in zip(params, initial))


@pytest.mark.parametrize("name,cls,hyper", [
    ("adamw", pyopt.AdamW, dict(lr=1e-2, betas=[0.9, 0.98], weight_decay=0.05)),
    ("lion", pyopt.Lion, dict(lr=1e-3, weight_decay=0.1)),
])
def test_prange_one_optimizer_per_thread_equals_python(steps, name, cls, hyper):
    rng = np.random.default_rng(7)
    rows, size, num_steps = 6, 1031, 5
    params = rng.standard_normal((rows, size)).astype(np.float32)
    grads = rng.standard_normal((num_steps, rows, size)).astype(np.float32)
    lrs = hyper["lr"] * 0.8 ** np.arange(num_steps)
    initial, expected = params.copy(), params.copy()
    python_hyper = {k: (tuple(v) if isinstance(v, list) else v) for k, v in hyper.items()}
    for i in range(rows):
        reference = cls([expected[i]], **python_hyper)
        for s in range(num_steps):
            reference.param_groups[0]["lr"] = float(lrs[s])
            reference.step([grads[s, i]])
    thread_of_row = np.full(rows, -1, np.int32)
    assert steps.prange_steps(config(name, **hyper), params, grads, lrs, thread_of_row) == 0
    assert sorted(set(thread_of_row)) == [0, 1]  # OpenMP is on: two threads stepped their own optimizers
    np.testing.assert_array_equal(bits(params), bits(expected))
    assert (params != initial).all()


def test_readme_example_compiles_and_equals_python(built):
    if "readme" not in built:
        pytest.skip("needs the source tree (README.md)")
    example = built["readme"]
    rng = np.random.default_rng(3)
    W = rng.standard_normal((4, 100)).astype(np.float32)
    G = rng.standard_normal((3, 4, 100)).astype(np.float32)
    config_text = b'{"optimizer": "adamw", "hyperparameters": {"lr": 0.001, "weight_decay": 0.01}}'
    initial, expected = W.copy(), W.copy()
    for i in range(4):
        reference = pyopt.AdamW([expected[i]], lr=0.001, weight_decay=0.01)
        for s in range(3):
            reference.step([G[s, i]])
    example.train_rows(W, G, config_text)
    np.testing.assert_array_equal(bits(W), bits(expected))
    assert (W != initial).all()
    with pytest.raises(ValueError, match="adamx"):
        example.train_rows(W, G, b'{"optimizer": "adamx"}')


def test_get_include_holds_the_header_and_the_declarations():
    include = Path(pyopt.get_include())
    for name in ("capi.h", "capi.pxd", "__init__.pxd"):
        assert (include / "pyopt" / name).is_file(), f"{name} missing from {include / 'pyopt'}"
    assert "#define PYOPT_CAPI_VERSION" in (include / "pyopt" / "capi.h").read_text()


def test_capsule_and_version(steps):
    assert type(pyopt._core._C_API).__name__ == "PyCapsule"
    assert 'capsule object "pyopt._core._C_API"' in repr(pyopt._core._C_API)
    header = (Path(pyopt.get_include()) / "pyopt" / "capi.h").read_text()
    version = int(re.search(r"#define PYOPT_CAPI_VERSION (\d+)", header).group(1))
    assert steps.capi_version() == version


def test_create_errors_name_the_culprit(steps):
    message = steps.try_create(config("adamx"))
    assert message is not None and "adamx" in message and "adamw" in message  # the valid names listed
    message = steps.try_create(config("adamw", lr=-1.0))
    assert message is not None and "lr" in message
    message = steps.try_create(config("adamw", betas=[0.9]))
    assert message is not None and "betas" in message
    message = steps.try_create(config("adamw", storage={"state_dtype": "float8"}))
    assert message is not None and "float8" in message
    message = steps.try_create(b'{"optimizer": "adamw", ')
    assert message is not None and message.startswith("pyopt_create")
    message = steps.try_create(config("lbfgs"))  # written in Python only (C++ runs Muon when it has a BLAS)
    assert message is not None and "lbfgs" in message and "Python" in message
    assert steps.try_create(config("adamw", lr=0.5)) is None


def test_param_and_step_errors_change_nothing(steps):
    opt = steps.COptimizer(config("adamw", lr=0.1))
    w = np.ones(16, np.float32)
    assert opt.add(w) == 0
    with pytest.raises(ValueError, match=r"pyopt_add_param_f32: size \d+ is larger than any buffer"):
        opt.add_raw(w.ctypes.data, 2**62)
    with pytest.raises(ValueError, match="overlaps param 0"):
        opt.add(w[8:])
    assert opt.num_params() == 1
    with pytest.raises(ValueError, match="got 2 grads for 1 params"):
        opt.step([np.ones(16, np.float32), np.ones(16, np.float32)])
    with pytest.raises(ValueError, match="got 0 grads for 1 params"):
        opt.step([])
    np.testing.assert_array_equal(w, np.ones(16, np.float32))
    assert opt.step_count(0) == 0
    with pytest.raises(ValueError, match="param 1 out of range"):
        opt.step_count(1)


def test_hyperparameter_and_thread_errors(steps):
    opt = steps.COptimizer(config("lion", lr=0.1, betas=[0.9, 0.99]))
    assert opt.get(b"beta2") == 0.99
    with pytest.raises(ValueError, match="lr"):
        opt.set(b"lr", -1.0)
    with pytest.raises(ValueError, match="lrr"):
        opt.set(b"lrr", 0.1)
    with pytest.raises(ValueError, match="nope"):
        opt.get(b"nope")
    assert opt.get(b"lr") == 0.1  # unchanged by the refused set
    with pytest.raises(ValueError, match="got -1"):
        opt.set_num_threads(-1)
    opt.set_num_threads(0)
    opt.set_num_threads(3)


def test_thread_count_of_a_handle_does_not_change_the_bits(steps):
    rng = np.random.default_rng(11)
    w = rng.standard_normal(70000).astype(np.float32)
    grads = [rng.standard_normal(70000).astype(np.float32) for _ in range(3)]
    results = []
    for threads in (1, 2):
        param = w.copy()
        opt = steps.COptimizer(config("adamw", lr=1e-2))
        opt.set_num_threads(threads)
        opt.add(param)
        for g in grads:
            opt.step([g])
        results.append(param)
    np.testing.assert_array_equal(bits(results[0]), bits(results[1]))
    assert not np.array_equal(results[0], w)


def test_last_error_is_per_thread(steps):
    assert steps.try_create(config("adamx_main")) is not None
    seen = {}

    def other_thread():
        seen["before"] = steps.last_error()
        seen["own"] = steps.try_create(config("adamx_other"))

    worker = threading.Thread(target=other_thread)
    worker.start()
    worker.join()
    assert seen["before"] == ""
    assert "adamx_other" in seen["own"]
    assert "adamx_main" in steps.last_error()
