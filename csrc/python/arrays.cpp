#include "arrays.hpp"

namespace pyopt::python {
namespace {

std::string shape_str(const py::array& a) {  // numpy's spelling: (), (3,), (2, 3)
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

std::string dtype_str(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

bool same_shape(const py::array& a, const py::array& b) {
  if (a.ndim() != b.ndim()) return false;
  for (py::ssize_t i = 0; i < a.ndim(); ++i)
    if (a.shape(i) != b.shape(i)) return false;
  return true;
}

bool is_bfloat16(const py::dtype& dt) {
  return dt.itemsize() == 2 && dt.kind() == 'V' && py::str(dt).cast<std::string>() == "bfloat16";
}
bool is_float16(const py::dtype& dt) {  // native byte order only (kernels read uint16_t words)
  return dt.itemsize() == 2 && dt.kind() == 'f' && dt.attr("isnative").cast<bool>();
}

}  // namespace

Storage storage_of(const py::array& array) {
  const py::dtype dt = array.dtype();
  if (is_float16(dt)) return Storage::Float16;
  if (is_bfloat16(dt)) return Storage::BFloat16;
  return Storage::Compute;
}

StoredType stored_param_type(const py::array& param, const std::string& label) {
  const Storage storage = storage_of(param);
  if (storage != Storage::Compute) return {DType::Float32, storage};
  const py::dtype dt = param.dtype();
  if (dt.kind() == 'f' && dt.itemsize() == 4) return {DType::Float32, storage};
  if (dt.kind() == 'f' && dt.itemsize() == 8) return {DType::Float64, storage};
  throw py::type_error(label + ": dtype " + dtype_str(param) +
                       " is not supported; use float32, float64, float16 or bfloat16 (ml_dtypes)");
}

DType param_dtype(const py::array& param, const std::string& label) {
  const py::dtype dt = param.dtype();
  if (dt.kind() == 'f' && dt.itemsize() == 4) return DType::Float32;
  if (dt.kind() == 'f' && dt.itemsize() == 8) return DType::Float64;
  throw py::type_error(label + ": dtype " + dtype_str(param) + " is not supported; use float32 or float64");
}

void check_param(py::handle obj, const std::string& label, bool allow_16bit) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(label + ": expected a numpy.ndarray (updated in place), got " +
                         py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
  const auto param = py::reinterpret_borrow<py::array>(obj);
  if (allow_16bit)
    stored_param_type(param, label);
  else
    param_dtype(param, label);
  if (!(param.flags() & py::array::c_style))
    throw py::value_error(label + ": array is not C-contiguous; pass np.ascontiguousarray(x) and keep that array");
  if (!param.writeable()) throw py::value_error(label + ": array is read-only");
}

bool overlaps(const py::array& a, const py::array& b) {
  const char* pa = static_cast<const char*>(a.data());
  const char* pb = static_cast<const char*>(b.data());
  const py::ssize_t na = a.nbytes(), nb = b.nbytes();
  return na > 0 && nb > 0 && pa < pb + nb && pb < pa + na;
}

py::array grad_for(py::handle obj, const py::array& param, const std::string& label) {
  py::array grad;
  if (py::isinstance<py::array>(obj)) {
    grad = py::reinterpret_borrow<py::array>(obj);
  } else {
    grad = py::array::ensure(obj);
    if (!grad) {
      PyErr_Clear();
      throw py::type_error(label + ": cannot convert " +
                           py::str(py::type::of(obj).attr("__name__")).cast<std::string>() + " to an array");
    }
  }
  if (storage_of(param) != Storage::Compute) {
    const py::dtype dt = grad.dtype();
    if (!(dt.equal(param.dtype()) || (dt.kind() == 'f' && dt.itemsize() == 4)))
      throw py::type_error(label + ": gradient dtype " + dtype_str(grad) + " does not fit a " + dtype_str(param) +
                           " param; pass " + dtype_str(param) + " or float32");
    if (!same_shape(grad, param))
      throw py::value_error(label + ": gradient shape " + shape_str(grad) + " does not match param shape " +
                            shape_str(param));
    if (!(grad.flags() & py::array::c_style))
      grad = py::module_::import("numpy").attr("ascontiguousarray")(grad).cast<py::array>();
    else if (overlaps(grad, param))
      throw py::value_error(label + ": gradient shares memory with its param");
    return grad;
  }
  const char kind = grad.dtype().kind();
  if (kind != 'f' && kind != 'i' && kind != 'u')
    throw py::type_error(label + ": gradient dtype " + dtype_str(grad) + " is not a real number type");
  if (!same_shape(grad, param))
    throw py::value_error(label + ": gradient shape " + shape_str(grad) + " does not match param shape " +
                          shape_str(param));
  const bool exact = grad.dtype().is(param.dtype()) || grad.dtype().equal(param.dtype());
  if (!exact || !(grad.flags() & py::array::c_style)) {
    grad = param.dtype().itemsize() == 4
               ? py::array(py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(grad))
               : py::array(py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(grad));
    if (!grad) throw py::error_already_set();
  } else if (overlaps(grad, param)) {
    throw py::value_error(label + ": gradient shares memory with its param");
  }
  return grad;
}

namespace {

void check_writable_beside(const py::array& a, const py::array& param, const std::string& label) {
  if (!(a.flags() & py::array::c_style)) throw py::value_error(label + ": array is not C-contiguous");
  if (!a.writeable()) throw py::value_error(label + ": array is read-only");
  if (overlaps(a, param)) throw py::value_error(label + ": shares memory with its param");
}

bool is_float32(const py::dtype& dt) { return dt.kind() == 'f' && dt.itemsize() == 4; }

}  // namespace

Storage check_state(py::handle obj, const py::array& param, const std::string& label) {
  if (!py::isinstance<py::array>(obj)) throw py::type_error(label + ": expected a numpy.ndarray");
  const auto state = py::reinterpret_borrow<py::array>(obj);
  const bool float32_step = stored_param_type(param, label).compute == DType::Float32;
  const Storage storage = float32_step && is_bfloat16(state.dtype()) ? Storage::BFloat16 : Storage::Compute;
  if (storage_of(param) != Storage::Compute) {
    if (!is_float32(state.dtype()) && storage == Storage::Compute)
      throw py::type_error(label + ": dtype " + dtype_str(state) + " is not supported for a " + dtype_str(param) +
                           " param; its states are float32 or bfloat16");
  } else if (!state.dtype().equal(param.dtype()) && storage == Storage::Compute) {
    throw py::type_error(label + ": dtype " + dtype_str(state) + " does not match its param's " + dtype_str(param) +
                         (float32_step ? " (nor is it bfloat16)" : ""));
  }
  if (!same_shape(state, param))
    throw py::value_error(label + ": shape " + shape_str(state) + " does not match its param's " + shape_str(param));
  check_writable_beside(state, param, label);
  return storage;
}

Int8State check_int8_state(py::handle obj, const py::array& param, const std::string& label) {
  auto pair = py::reinterpret_borrow<py::tuple>(obj);
  if (pair.size() != 2 || !py::isinstance<py::array>(pair[0]) || !py::isinstance<py::array>(pair[1]))
    throw py::type_error(label + ": an 8-bit state is a pair (codes uint8 array, absmax float32 array)");
  Int8State s{pair[0].cast<py::array>(), pair[1].cast<py::array>()};
  if (stored_param_type(param, label).compute != DType::Float32)
    throw py::type_error(label + ": 8-bit states need a float32, float16 or bfloat16 param");
  if (!(s.codes.dtype().kind() == 'u' && s.codes.dtype().itemsize() == 1))
    throw py::type_error(label + ": codes dtype " + dtype_str(s.codes) + " is not uint8");
  if (!same_shape(s.codes, param))
    throw py::value_error(label + ": codes shape " + shape_str(s.codes) + " does not match its param's " +
                          shape_str(param));
  const py::ssize_t blocks = (param.size() + kQuantBlock - 1) / kQuantBlock;
  if (!is_float32(s.absmax.dtype()))
    throw py::type_error(label + ": absmax dtype " + dtype_str(s.absmax) + " is not float32");
  if (s.absmax.ndim() != 1 || s.absmax.shape(0) != blocks)
    throw py::value_error(label + ": absmax shape " + shape_str(s.absmax) + " is not (" + std::to_string(blocks) +
                          ",) (one per " + std::to_string(kQuantBlock) + " elements)");
  check_writable_beside(s.codes, param, label + " codes");
  check_writable_beside(s.absmax, param, label + " absmax");
  if (overlaps(s.codes, s.absmax)) throw py::value_error(label + ": codes and absmax share memory");
  return s;
}

py::array check_master(py::handle obj, const py::array& param, const std::string& label) {
  if (!py::isinstance<py::array>(obj)) throw py::type_error(label + ": expected a numpy.ndarray");
  auto master = py::reinterpret_borrow<py::array>(obj);
  if (storage_of(param) == Storage::Compute)
    throw py::type_error(label + ": only float16 and bfloat16 params have a float32 master copy");
  if (!is_float32(master.dtype()))
    throw py::type_error(label + ": dtype " + dtype_str(master) + " is not float32");
  if (!same_shape(master, param))
    throw py::value_error(label + ": shape " + shape_str(master) + " does not match its param's " + shape_str(param));
  check_writable_beside(master, param, label);
  return master;
}

}  // namespace pyopt::python
