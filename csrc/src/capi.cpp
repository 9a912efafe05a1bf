// The C API's table (pyopt/capi.h): pyopt::Optimizer behind C functions that never throw. Every
// failure becomes -1 / NULL and the calling thread's message; the Python module exports the table
// as the capsule pyopt._core._C_API.
#include "pyopt/capi.h"

#include <cstdint>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "pyopt/factory.hpp"
#include "pyopt/optimizer.hpp"
#include "pyopt/registry.hpp"

struct PyoptOptimizer {
  pyopt::Optimizer optimizer;
  std::vector<pyopt::DType> param_dtypes;  // the grads' dtypes, in registration order
  int num_threads = 0;                     // 0: the global setting
};

namespace {

thread_local std::string last_error_message;

int fail(const std::string& message) {
  try {
    last_error_message = message;
  } catch (...) {  // no memory for the message: keep the previous one rather than throw
  }
  return -1;
}

// Runs f, turning any exception into fail(who: what); returns f's value or `error`.
template <class T, class F>
T guarded(const char* who, T error, F&& f) noexcept {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    fail(std::string(who) + ": out of memory");
  } catch (const std::exception& e) {
    fail(std::string(who) + ": " + e.what());
  } catch (...) {
    fail(std::string(who) + ": unknown C++ exception");
  }
  return error;
}

bool check_handle(const PyoptOptimizer* opt, const char* who) {
  if (opt) return true;
  fail(std::string(who) + ": the optimizer is NULL");
  return false;
}

PyoptOptimizer* create(const char* json_config) {
  if (!json_config) {
    fail("pyopt_create: json_config is NULL");
    return nullptr;
  }
  return guarded<PyoptOptimizer*>("pyopt_create", nullptr, [&] {
    return new PyoptOptimizer{pyopt::make_optimizer_from_json(json_config), {}, 0};
  });
}

void destroy(PyoptOptimizer* opt) { delete opt; }

template <class T>
int64_t add_param(PyoptOptimizer* opt, T* data, size_t size, const char* who) {
  if (!check_handle(opt, who)) return -1;
  if (!data && size > 0) return fail(std::string(who) + ": data is NULL for a param of " + std::to_string(size) + " elements");
  // No buffer can be that large: a size from garbage, which would overflow the end pointer.
  const uintptr_t begin = reinterpret_cast<uintptr_t>(data);
  if (size > std::size_t(PTRDIFF_MAX) / sizeof(T) || begin + size * sizeof(T) < begin)
    return fail(std::string(who) + ": size " + std::to_string(size) + " is larger than any buffer at that address");
  return guarded<int64_t>(who, -1, [&] {
    opt->param_dtypes.reserve(opt->param_dtypes.size() + 1);  // so the push_back below cannot throw
    const std::size_t index = opt->optimizer.add_param(data, size);
    opt->param_dtypes.push_back(std::is_same<T, float>::value ? pyopt::DType::Float32 : pyopt::DType::Float64);
    return int64_t(index);
  });
}

int64_t add_param_f32(PyoptOptimizer* opt, float* data, size_t size) {
  return add_param(opt, data, size, "pyopt_add_param_f32");
}

int64_t add_param_f64(PyoptOptimizer* opt, double* data, size_t size) {
  return add_param(opt, data, size, "pyopt_add_param_f64");
}

int step(PyoptOptimizer* opt, const void* const* grads, size_t count) {
  const char* who = "pyopt_step";
  if (!check_handle(opt, who)) return -1;
  const std::size_t n = opt->param_dtypes.size();
  if (count != n)
    return fail(std::string(who) + ": got " + std::to_string(count) + " grads for " + std::to_string(n) +
                " params (one per param, NULL to skip one)");
  if (!grads && n > 0) return fail(std::string(who) + ": grads is NULL");
  return guarded<int>(who, -1, [&] {
    std::vector<pyopt::GradRef> refs;
    refs.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      if (!grads[i]) refs.emplace_back(nullptr);
      else if (opt->param_dtypes[i] == pyopt::DType::Float32) refs.emplace_back(static_cast<const float*>(grads[i]));
      else refs.emplace_back(static_cast<const double*>(grads[i]));
    }
    const pyopt::ThreadCountScope threads(opt->num_threads);
    opt->optimizer.step(refs);
    return 0;
  });
}

int get_hyperparameter(const PyoptOptimizer* opt, const char* name, double* value) {
  const char* who = "pyopt_get_hyperparameter";
  if (!check_handle(opt, who)) return -1;
  if (!name || !value) return fail(std::string(who) + ": name and value must not be NULL");
  return guarded<int>(who, -1, [&] {
    *value = opt->optimizer.get(name);
    return 0;
  });
}

int set_hyperparameter(PyoptOptimizer* opt, const char* name, double value) {
  const char* who = "pyopt_set_hyperparameter";
  if (!check_handle(opt, who)) return -1;
  if (!name) return fail(std::string(who) + ": name is NULL");
  return guarded<int>(who, -1, [&] {
    opt->optimizer.set(name, value);
    return 0;
  });
}

int set_num_threads(PyoptOptimizer* opt, int n) {
  const char* who = "pyopt_set_num_threads";
  if (!check_handle(opt, who)) return -1;
  if (n < 0) return fail(std::string(who) + ": n must be >= 1 (or 0: pyopt.set_num_threads()'s setting), got " + std::to_string(n));
  opt->num_threads = n;
  return 0;
}

int64_t num_params(const PyoptOptimizer* opt) {
  if (!check_handle(opt, "pyopt_num_params")) return -1;
  return int64_t(opt->param_dtypes.size());
}

int64_t step_count(const PyoptOptimizer* opt, int64_t param) {
  const char* who = "pyopt_step_count";
  if (!check_handle(opt, who)) return -1;
  if (param < 0 || uint64_t(param) >= opt->param_dtypes.size())
    return fail(std::string(who) + ": param " + std::to_string(param) + " out of range (the optimizer has " +
                std::to_string(opt->param_dtypes.size()) + " params)");
  return opt->optimizer.step_count(std::size_t(param));
}

const char* last_error() { return last_error_message.c_str(); }

const PyoptCApi table = {
    PYOPT_CAPI_VERSION, create,     destroy,   add_param_f32, add_param_f64, step, get_hyperparameter,
    set_hyperparameter, set_num_threads, num_params, step_count, last_error,
};

}  // namespace

extern "C" const PyoptCApi* pyopt_capi_table(void) { return &table; }
