#pragma once
// Training utilities that are not optimizer rules (pyopt.EMA, pyopt.Lookahead, the schedule-free
// train()/eval() swap, SophiaG.update_hessian and Adafactor use them).
#include <pybind11/pybind11.h>

namespace pyopt::python {

// Adds _core.ema_update, lerp_inplace, sophia_hessian_update and adafactor_step to the module.
void register_utilities(pybind11::module_& m);

}  // namespace pyopt::python
