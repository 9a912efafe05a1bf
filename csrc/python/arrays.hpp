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
// A param must be a writeable, C-contiguous float32/float64 ndarray.
void check_param(py::handle param, const std::string& label);
// The gradient for `param` as an array of the param's dtype and shape, converted only if needed.
py::array grad_for(py::handle grad, const py::array& param, const std::string& label);
// A state array must match its param exactly (dtype, shape, contiguity, writeable) and not alias it.
void check_state(py::handle state, const py::array& param, const std::string& label);

bool overlaps(const py::array& a, const py::array& b);

}  // namespace pyopt::python
