#pragma once
// Training utilities that are not optimizer rules (pyopt.EMA, pyopt.Lookahead use them).
#include <pybind11/pybind11.h>

namespace pyopt::python {

// Adds _core.ema_update to the module.
void register_utilities(pybind11::module_& m);

}  // namespace pyopt::python
