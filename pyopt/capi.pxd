# pyopt's C API for Cython (the header pyopt/capi.h, in pyopt.get_include()): step pyopt
# optimizers from nogil code, e.g. one optimizer per thread inside prange. The functions are
# pyopt::Optimizer's, reached through the capsule pyopt._core._C_API: no link step.
#
#     cimport pyopt
#     pyopt.import_capi()                     # once, at module import (needs the GIL)
#
#     cdef pyopt.PyoptOptimizer* opt = pyopt.create(b'{"optimizer": "adamw", "hyperparameters": {"lr": 0.001}}')
#     pyopt.add_param_f32(opt, &w[0], w.shape[0])     # w: float32 memory you keep alive
#     cdef const void* grads[1]
#     grads[0] = &g[0]
#     with nogil:
#         pyopt.step(opt, grads, 1)
#     pyopt.destroy(opt)
#
# Failures return -1 (create: NULL); pyopt.last_error() is the calling thread's message. The
# contract (memory, threads, hyperparameter names) is written in pyopt/capi.h.
from libc.stdint cimport int64_t

cdef extern from "pyopt/capi.h":
    # Imports pyopt._core and takes its function table; raises ImportError (or what the import
    # raised) on failure.
    int import_capi "pyopt_import_capi"() except -1

cdef extern from "pyopt/capi.h" nogil:
    enum: PYOPT_CAPI_VERSION

    ctypedef struct PyoptOptimizer:
        pass

    PyoptOptimizer* create "pyopt_create"(const char* json_config)
    void destroy "pyopt_destroy"(PyoptOptimizer* opt)
    int64_t add_param_f32 "pyopt_add_param_f32"(PyoptOptimizer* opt, float* data, size_t size)
    int64_t add_param_f64 "pyopt_add_param_f64"(PyoptOptimizer* opt, double* data, size_t size)
    int step "pyopt_step"(PyoptOptimizer* opt, const void* const* grads, size_t count)
    int get_hyperparameter "pyopt_get_hyperparameter"(const PyoptOptimizer* opt, const char* name, double* value)
    int set_hyperparameter "pyopt_set_hyperparameter"(PyoptOptimizer* opt, const char* name, double value)
    int set_num_threads "pyopt_set_num_threads"(PyoptOptimizer* opt, int n)
    int64_t num_params "pyopt_num_params"(const PyoptOptimizer* opt)
    int64_t step_count "pyopt_step_count"(const PyoptOptimizer* opt, int64_t param)
    const char* last_error "pyopt_last_error"()
