#pragma once
// _core.rmw_probe: the memory-traffic floor of an optimizer step (used by pyopt.bench).
#include <pybind11/pybind11.h>

namespace pyopt::python {

// Adds _core.rmw_probe to the module.
void register_probe(pybind11::module_& m);

}  // namespace pyopt::python
