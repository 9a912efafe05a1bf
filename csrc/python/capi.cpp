// Exports the C API's table (csrc/src/capi.cpp) as a capsule, the NumPy-C-API way: extensions
// built against pyopt/capi.h find the functions through `import pyopt._core`, with no link step.
#include "capi.hpp"

#include "pyopt/capi.h"

namespace pyopt::python {

void register_capi(pybind11::module_& m) {
  // The table is static and const: the capsule needs no destructor, and users never write it.
  PyObject* capsule = PyCapsule_New(const_cast<PyoptCApi*>(pyopt_capi_table()), PYOPT_CAPI_CAPSULE, nullptr);
  if (!capsule) throw pybind11::error_already_set();
  m.attr("_C_API") = pybind11::reinterpret_steal<pybind11::object>(capsule);
}

}  // namespace pyopt::python
