#pragma once
// The C API (pyopt/capi.h) for Cython and C extensions: its table as the capsule _core._C_API.
#include <pybind11/pybind11.h>

namespace pyopt::python {

// Adds _core._C_API, the PyCapsule "pyopt._core._C_API" holding pyopt_capi_table().
void register_capi(pybind11::module_& m);

}  // namespace pyopt::python
