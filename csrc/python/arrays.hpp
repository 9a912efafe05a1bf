#pragma once
// Checks and conversions between numpy arrays and the driver's TensorArgs, shared by the
// stateful Engine and the functional entry point. All of them run before any array is written.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "pyopt/types.hpp"

namespace pyopt::python {

namespace py = pybind11;

// The dtype of a param array, or a TypeError naming it (ints, complex, object, float16, ...).
DType param_dtype(const py::array& param, const std::string& label);
// A param must be a writeable, C-contiguous float32/float64 ndarray; with allow_16bit (the
// optimizers' update kernels) also float16 or ml_dtypes.bfloat16.
void check_param(py::handle param, const std::string& label, bool allow_16bit = false);

// How a param accepted by check_param(..., true) is stored and computed: float16 and bfloat16
// params compute in float32.
struct StoredType {
  DType compute;
  Storage storage;
};
StoredType stored_param_type(const py::array& param, const std::string& label);
// Storage::Compute, or the 16-bit storage of a float16/bfloat16 array.
Storage storage_of(const py::array& array);

// The gradient for `param` as an array of the param's dtype and shape, converted only if needed.
// A float16/bfloat16 param takes a gradient of its own dtype or float32 (never converted: a
// TypeError otherwise); check with storage_of() which one it is.
py::array grad_for(py::handle grad, const py::array& param, const std::string& label);
// A state array must have its param's compute dtype (float32 for 16-bit params) or be bfloat16
// (params of float32 steps), have the param's shape, be C-contiguous and writeable, and not alias
// the param. Returns its storage (Compute or BFloat16).
Storage check_state(py::handle state, const py::array& param, const std::string& label);
// An 8-bit state: (codes uint8 of the param's shape, absmax float32 of ceil(size / 256)), both
// C-contiguous, writeable and apart from the param and each other. Params of float32 steps only.
struct Int8State {
  py::array codes, absmax;
};
Int8State check_int8_state(py::handle pair, const py::array& param, const std::string& label);
// The float32 master copy of a float16/bfloat16 param: its shape, C-contiguous, writeable.
py::array check_master(py::handle master, const py::array& param, const std::string& label);

bool overlaps(const py::array& a, const py::array& b);

}  // namespace pyopt::python
