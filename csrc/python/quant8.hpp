#pragma once
// Test bindings of the blockwise 8-bit quantization of driver/quant8.hpp (bitsandbytes-compatible).
#include <pybind11/pybind11.h>

namespace pyopt::python {

// Adds _core.quantize_blockwise, dequantize_blockwise and dynamic_map to the module.
void register_quant8(pybind11::module_& m);

}  // namespace pyopt::python
