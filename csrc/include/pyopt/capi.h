/* pyopt's C API: step pyopt optimizers from C, C++ or Cython without the GIL (e.g. inside a
 * Cython prange), the way scipy.linalg.cython_blas exposes BLAS. No link step: the functions
 * live in the installed extension module pyopt._core, which exports their table as the PyCapsule
 * "pyopt._core._C_API"; pyopt_import_capi() reads it once (with the GIL), and the static inline
 * pyopt_* functions below call through it.
 *
 *     pyopt_import_capi();                                  -- once, with the GIL
 *     PyoptOptimizer* opt = pyopt_create("{\"optimizer\": \"adamw\", \"hyperparameters\": {\"lr\": 0.001}}");
 *     pyopt_add_param_f32(opt, w, n);                       -- w: n floats the caller owns
 *     const void* grads[1] = {g};                           -- a grad per param, in order
 *     for (...) { compute(g); pyopt_step(opt, grads, 1); }   -- no GIL needed
 *     pyopt_destroy(opt);
 *
 * Errors: every function returning int returns -1 (pointers: NULL) on failure and sets the
 * calling thread's error message, pyopt_last_error(); no C++ exception crosses the boundary.
 * Threads: one thread at a time per optimizer; distinct optimizers are independent, so each
 * thread of a prange may step its own. The kernels of a step run on pyopt_set_num_threads(opt, n)
 * threads (default: pyopt.set_num_threads()'s setting); inside an OpenMP parallel region of the
 * same OpenMP runtime they run serially anyway.
 * Memory: params and grads are the caller's; an optimizer keeps the param pointers it was given
 * (reads and writes them at every step, until pyopt_destroy) and reads the grads during the step only.
 * Params must not overlap each other, nor a grad any param. pyopt_destroy releases the
 * optimizer's own state only.
 *
 * The optimizers are pyopt::Optimizer (C++, <pyopt/optimizer.hpp>): same kernels, same bits as
 * the Python optimizers' step. Params carry no shape here: Adafactor's are vectors (a full
 * variance, not factored), and Muon (2-D params only) is refused by add_param. Plain C/C++ programs that link pyopt::kernels instead take the
 * table with pyopt_import_capi_from(pyopt_capi_table()).
 */
#ifndef PYOPT_CAPI_H
#define PYOPT_CAPI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Entries are only ever appended, raising the version; a library serves every header of a
 * version up to its own. Changing an existing entry would rename the capsule. */
#define PYOPT_CAPI_VERSION 1
#define PYOPT_CAPI_CAPSULE "pyopt._core._C_API"

typedef struct PyoptOptimizer PyoptOptimizer; /* opaque */

typedef struct PyoptCApi {
  int version; /* the library's PYOPT_CAPI_VERSION */
  /* A JSON config as pyopt's best.json / pyopt.from_config reads it:
   *   {"optimizer": "adamw", "hyperparameters": {"lr": 0.001, "betas": [0.9, 0.999]},
   *    "storage": {"state_dtype": "bfloat16"}}
   * ("hyperparameters" and "storage" optional; other keys ignored). NULL on error. */
  PyoptOptimizer* (*create)(const char* json_config);
  void (*destroy)(PyoptOptimizer* opt); /* frees the optimizer's state; NULL is a no-op */
  /* Registers `size` elements at `data` (caller-owned, see Memory above); returns the param's
   * index (0, 1, ... in registration order) or -1. */
  int64_t (*add_param_f32)(PyoptOptimizer* opt, float* data, size_t size);
  int64_t (*add_param_f64)(PyoptOptimizer* opt, double* data, size_t size);
  /* One step: grads[i] is the gradient of param i (`count` must be the number of params), of the
   * param's size and dtype; a NULL grad skips that param this step. Everything is checked before
   * any param is written. 0 or -1. */
  int (*step)(PyoptOptimizer* opt, const void* const* grads, size_t count);
  /* Hyperparameters by their flat C++ name: lr, weight_decay, beta1, beta2, eps, ... (the
   * tuple betas is beta1, beta2; flags are 0/1). set checks the value and applies it from the
   * next step (schedules). 0 or -1. */
  int (*get_hyperparameter)(const PyoptOptimizer* opt, const char* name, double* value);
  int (*set_hyperparameter)(PyoptOptimizer* opt, const char* name, double value);
  /* Threads this optimizer's steps use: n >= 1, or 0 to follow pyopt.set_num_threads(). 0 or -1. */
  int (*set_num_threads)(PyoptOptimizer* opt, int n);
  int64_t (*num_params)(const PyoptOptimizer* opt); /* -1 for NULL */
  int64_t (*step_count)(const PyoptOptimizer* opt, int64_t param); /* steps param has taken, or -1 */
  /* The calling thread's message of its last failed call ("" if none): valid until that
   * thread's next failed call. */
  const char* (*last_error)(void);
} PyoptCApi;

/* The table itself, for programs linking the C++ library (pyopt::kernels / pyopt::pyopt). */
const PyoptCApi* pyopt_capi_table(void);

#ifdef __cplusplus
}
#endif

/* Per translation unit, as NumPy's PyArray_API: set by pyopt_import_capi(_from). */
static const PyoptCApi* pyopt_capi = NULL;

static inline const char* pyopt_not_imported_(void) {
  return "pyopt: the C API is not imported: call pyopt_import_capi() first (with the GIL)";
}

/* Uses `table` (after checking its version): 0, or -1 when it is too old or NULL. */
static inline int pyopt_import_capi_from(const PyoptCApi* table) {
  if (table == NULL || table->version < PYOPT_CAPI_VERSION) return -1;
  pyopt_capi = table;
  return 0;
}

#ifdef Py_PYTHON_H
/* Imports pyopt._core and takes its table; needs the GIL. 0, or -1 with a Python exception set. */
static inline int pyopt_import_capi(void) {
  const PyoptCApi* table;
  if (pyopt_capi != NULL) return 0;
  table = (const PyoptCApi*)PyCapsule_Import(PYOPT_CAPI_CAPSULE, 0);
  if (table == NULL) return -1;
  if (pyopt_import_capi_from(table) != 0) {
    PyErr_Format(PyExc_ImportError,
                 "pyopt: the installed pyopt._core has C API version %d; this module was compiled "
                 "against version %d: reinstall pyopt (or rebuild this module against the installed one)",
                 table->version, PYOPT_CAPI_VERSION);
    return -1;
  }
  return 0;
}
#endif

static inline PyoptOptimizer* pyopt_create(const char* json_config) {
  return pyopt_capi ? pyopt_capi->create(json_config) : NULL;
}
static inline void pyopt_destroy(PyoptOptimizer* opt) {
  if (pyopt_capi) pyopt_capi->destroy(opt);
}
static inline int64_t pyopt_add_param_f32(PyoptOptimizer* opt, float* data, size_t size) {
  return pyopt_capi ? pyopt_capi->add_param_f32(opt, data, size) : -1;
}
static inline int64_t pyopt_add_param_f64(PyoptOptimizer* opt, double* data, size_t size) {
  return pyopt_capi ? pyopt_capi->add_param_f64(opt, data, size) : -1;
}
static inline int pyopt_step(PyoptOptimizer* opt, const void* const* grads, size_t count) {
  return pyopt_capi ? pyopt_capi->step(opt, grads, count) : -1;
}
static inline int pyopt_get_hyperparameter(const PyoptOptimizer* opt, const char* name, double* value) {
  return pyopt_capi ? pyopt_capi->get_hyperparameter(opt, name, value) : -1;
}
static inline int pyopt_set_hyperparameter(PyoptOptimizer* opt, const char* name, double value) {
  return pyopt_capi ? pyopt_capi->set_hyperparameter(opt, name, value) : -1;
}
static inline int pyopt_set_num_threads(PyoptOptimizer* opt, int n) {
  return pyopt_capi ? pyopt_capi->set_num_threads(opt, n) : -1;
}
static inline int64_t pyopt_num_params(const PyoptOptimizer* opt) {
  return pyopt_capi ? pyopt_capi->num_params(opt) : -1;
}
static inline int64_t pyopt_step_count(const PyoptOptimizer* opt, int64_t param) {
  return pyopt_capi ? pyopt_capi->step_count(opt, param) : -1;
}
static inline const char* pyopt_last_error(void) {
  return pyopt_capi ? pyopt_capi->last_error() : pyopt_not_imported_();
}

#endif /* PYOPT_CAPI_H */
