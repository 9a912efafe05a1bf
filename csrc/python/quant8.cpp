// _core.quantize_blockwise / dequantize_blockwise / dynamic_map: the 8-bit block quantization the
// 8-bit optimizer states will use, run on the ISA path set_isa() selects, exposed for tests that
// compare it with bitsandbytes.functional.
#include "quant8.hpp"

#include <pybind11/numpy.h>

#include <cstdint>
#include <string>

#include "pyopt/kernels.hpp"

namespace py = pybind11;

namespace pyopt::python {
namespace {

constexpr int64_t kBlock = 256;  // driver/quant8.hpp kBlockSize (that header is per-ISA kernel code)

int64_t blocks_for(int64_t n) { return (n + kBlock - 1) / kBlock; }

py::array_t<float> float32_values(py::handle x) {
  if (!py::isinstance<py::array>(x) || py::array(py::reinterpret_borrow<py::object>(x)).dtype().kind() != 'f' ||
      py::array(py::reinterpret_borrow<py::object>(x)).itemsize() != 4)
    throw py::type_error("x: expected a float32 numpy array, got " +
                         std::string(py::str(py::type::of(x).attr("__name__"))) +
                         (py::isinstance<py::array>(x)
                              ? " of dtype " + std::string(py::str(py::array(py::reinterpret_borrow<py::object>(x)).dtype()))
                              : std::string()));
  return py::array_t<float, py::array::c_style>::ensure(x);
}

py::tuple quantize_blockwise(py::handle x_obj, bool is_signed) {
  const py::array_t<float> x = float32_values(x_obj);
  const int64_t n = int64_t(x.size());
  py::array_t<uint8_t> codes(x.request().shape);
  py::array_t<float> absmax(blocks_for(n));
  if (n > 0) {
    const float* in = x.data();
    uint8_t* out = codes.mutable_data();
    float* scale = absmax.mutable_data();
    py::gil_scoped_release release;
    run_quantize8(in, n, is_signed, out, scale);
  }
  return py::make_tuple(codes, absmax);
}

py::array_t<float> dequantize_blockwise(py::handle codes_obj, py::handle absmax_obj, bool is_signed) {
  if (!py::isinstance<py::array>(codes_obj) ||
      !py::array(py::reinterpret_borrow<py::object>(codes_obj)).dtype().is(py::dtype::of<uint8_t>()))
    throw py::type_error("codes: expected a uint8 numpy array");
  const auto codes = py::array_t<uint8_t, py::array::c_style>::ensure(codes_obj);
  const py::array_t<float> absmax = float32_values(absmax_obj);
  const int64_t n = int64_t(codes.size());
  if (int64_t(absmax.size()) != blocks_for(n))
    throw py::value_error("absmax: expected " + std::to_string(blocks_for(n)) + " values (one per block of " +
                          std::to_string(kBlock) + " codes), got " + std::to_string(absmax.size()));
  py::array_t<float> x(codes.request().shape);
  if (n > 0) {
    const uint8_t* in = codes.data();
    const float* scale = absmax.data();
    float* out = x.mutable_data();
    py::gil_scoped_release release;
    run_dequantize8(in, scale, n, is_signed, out);
  }
  return x;
}

// The map itself: dequantizing codes 0..255 with absmax 1.
py::array_t<float> dynamic_map(bool is_signed) {
  py::array_t<uint8_t> codes(256);
  for (int i = 0; i < 256; ++i) codes.mutable_data()[i] = uint8_t(i);
  py::array_t<float> one(1);
  one.mutable_data()[0] = 1.0f;
  return dequantize_blockwise(codes, one, is_signed);
}

}  // namespace

void register_quant8(py::module_& m) {
  m.def("quantize_blockwise", &quantize_blockwise, py::arg("x"), py::arg("signed") = true,
        "(codes uint8 of x's shape, absmax float32 per block of 256) as bitsandbytes 0.50's CPU "
        "quantize_blockwise(x, code=create_dynamic_map(signed), blocksize=256).");
  m.def("dequantize_blockwise", &dequantize_blockwise, py::arg("codes"), py::arg("absmax"), py::arg("signed") = true,
        "float32 map[codes] * absmax of each code's block of 256 (bitsandbytes' dequantize_blockwise).");
  m.def("dynamic_map", &dynamic_map, py::arg("signed") = true,
        "The 256 values of bitsandbytes.functional.create_dynamic_map(signed), ascending.");
}

}  // namespace pyopt::python
