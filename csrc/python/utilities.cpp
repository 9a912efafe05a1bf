// _core.ema_update: avg <- lerp(avg, param, 1 - decay) over many tensors in one OpenMP region.
//
// Rounding follows torch.lerp on CPU (ATen's lerp_vec and its scalar lerp, both one fused
// multiply-add): with w = T(1 - decay),
//   |w| <  0.5:  avg + w·(param − avg)          as fma(w, param − avg, avg)
//   |w| >= 0.5:  param − (1 − w)·(param − avg)  as fma(w − 1, param − avg, param)
// so torch.optim.swa_utils.get_ema_multi_avg_fn / timm's `ema.lerp_(p, 1 - decay)` and
// pytorch-optimizer's Lookahead `p.lerp_(slow, 1 - alpha)` are matched bit for bit where the CPU
// has FMA (the avx2 / avx512 ISA paths). Under the baseline ISA (set_isa("baseline") or a CPU
// without FMA) the fused multiply-add is a multiply and an add, as in the optimizer kernels.
// The form is chosen by the float32 weight for both dtypes (see lerp_from_end in rules/common.hpp).
#include "utilities.hpp"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "arrays.hpp"
#include "pyopt/adafactor.hpp"
#include "pyopt/registry.hpp"

namespace py = pybind11;

namespace pyopt::python {
namespace {

struct Pair {
  void* avg;
  const void* param;
  int64_t size;
  bool f64;
};

// The optimizers' own "lerp" rule (rules/schedulefree.hpp) does the work: the "param" is the
// average and the "grad" the param, so the ISA dispatch, threads and chunking are the driver's.
void run_pairs(const std::vector<Pair>& pairs, double weight) {
  const RuleInfo& lerp = *find_optimizer("lerp").rule;
  std::vector<TensorArgs> by_dtype[kNumDTypes];
  for (const Pair& p : pairs)
    if (p.size > 0) by_dtype[p.f64 ? 1 : 0].push_back(TensorArgs{p.avg, p.param, {}, p.size, 1, &weight, nullptr});
  for (int d = 0; d < kNumDTypes; ++d)
    if (!by_dtype[d].empty()) run_kernel(lerp, DType(d), by_dtype[d].data(), int64_t(by_dtype[d].size()));
}

std::string type_name(py::handle obj) { return py::str(py::type::of(obj).attr("__name__")).cast<std::string>(); }

std::vector<py::array> as_arrays(const py::sequence& seq, const char* what) {
  std::vector<py::array> out;
  out.reserve(seq.size());
  for (size_t i = 0; i < seq.size(); ++i) {
    py::object obj = seq[i];
    const std::string label = std::string("ema_update: ") + what + "[" + std::to_string(i) + "]";
    if (!py::isinstance<py::array>(obj))
      throw py::type_error(label + ": expected a numpy.ndarray, got " + type_name(obj));
    out.push_back(py::reinterpret_borrow<py::array>(obj));
  }
  return out;
}

struct Span {
  uintptr_t start, end;
  bool written;
  size_t index;
};

// No average may share memory with another average or with any param: the update would read
// values it has already written (or write one element twice).
void check_no_alias(const std::vector<py::array>& avgs, const std::vector<py::array>& params) {
  std::vector<Span> spans;
  auto add = [&](const py::array& a, bool written, size_t i) {
    if (a.nbytes() > 0) {
      const auto s = reinterpret_cast<uintptr_t>(a.data());
      spans.push_back({s, s + static_cast<uintptr_t>(a.nbytes()), written, i});
    }
  };
  for (size_t i = 0; i < avgs.size(); ++i) add(avgs[i], true, i);
  for (size_t i = 0; i < params.size(); ++i) add(params[i], false, i);
  std::sort(spans.begin(), spans.end(), [](const Span& x, const Span& y) { return x.start < y.start; });
  const Span* far_any = nullptr;   // the span seen so far reaching furthest
  const Span* far_avg = nullptr;   // the average seen so far reaching furthest
  auto name = [](const Span& s) {
    return std::string(s.written ? "averages[" : "params[") + std::to_string(s.index) + "]";
  };
  for (const Span& s : spans) {
    const Span* other = s.written ? far_any : far_avg;
    if (other && s.start < other->end)
      throw py::value_error("ema_update: " + name(*other) + " and " + name(s) + " share memory");
    if (!far_any || s.end > far_any->end) far_any = &s;
    if (s.written && (!far_avg || s.end > far_avg->end)) far_avg = &s;
  }
}

void ema_update(const py::sequence& averages, const py::sequence& params, double decay) {
  if (py::isinstance<py::str>(averages) || py::isinstance<py::str>(params))
    throw py::type_error("ema_update: averages and params must be lists of arrays");
  if (!std::isfinite(decay) || decay < 0.0 || decay > 1.0)
    throw py::value_error("ema_update: decay must be in [0, 1], got " + std::to_string(decay));
  if (averages.size() != params.size())
    throw py::value_error("ema_update: " + std::to_string(averages.size()) + " averages but " +
                          std::to_string(params.size()) + " params");
  std::vector<py::array> avgs = as_arrays(averages, "averages");
  const std::vector<py::array> prms = as_arrays(params, "params");
  std::vector<Pair> pairs;
  pairs.reserve(avgs.size());
  for (size_t i = 0; i < avgs.size(); ++i) {
    const std::string idx = "[" + std::to_string(i) + "]";
    check_param(avgs[i], "ema_update: averages" + idx);  // float32/64, C-contiguous, writeable
    const py::array& p = prms[i];
    const std::string plabel = "ema_update: params" + idx;
    param_dtype(p, plabel);
    if (!(p.flags() & py::array::c_style)) throw py::value_error(plabel + ": array is not C-contiguous");
    // dtype, shape, contiguity and writeability of the average against its param
    check_state(avgs[i], p, "ema_update: averages" + idx);
    pairs.push_back({avgs[i].mutable_data(), p.data(), static_cast<int64_t>(p.size()), p.itemsize() == 8});
  }
  check_no_alias(avgs, prms);
  py::gil_scoped_release release;
  run_pairs(pairs, 1.0 - decay);
}

void adafactor_step(py::handle param_obj, py::handle grad_obj, py::object row_obj, py::object col_obj,
                    py::object variance_obj, int64_t step, double lr, double beta2_decay, py::object eps1, double eps2,
                    double d, double weight_decay, bool maximize, const std::string& label) {
  AdafactorHyper h;
  h.lr = lr;
  h.beta2_decay = beta2_decay;
  h.eps1 = eps1.is_none() ? -1.0 : eps1.cast<double>();
  h.eps2 = eps2;
  h.d = d;
  h.weight_decay = weight_decay;
  h.maximize = maximize;
  validate_adafactor(h);
  if (step < 1) throw std::invalid_argument("step must be >= 1");
  check_param(param_obj, label);
  auto param = py::reinterpret_borrow<py::array>(param_obj);
  const DType dtype = param_dtype(param, label);
  py::array grad = grad_for(grad_obj, param, label);
  const bool factored = param.ndim() > 1;
  int64_t rows = 0, cols = 0, batch = 0;
  auto state = [&](py::object obj, int64_t size, const char* name) -> void* {
    const std::string what = label + " state '" + name + "'";
    if (obj.is_none()) throw std::invalid_argument(what + " is missing");
    check_param(obj, what);
    auto arr = obj.cast<py::array>();
    if (param_dtype(arr, what) != dtype) throw py::type_error(what + ": dtype differs from the param's");
    if (int64_t(arr.size()) != size)
      throw std::invalid_argument(what + ": " + std::to_string(arr.size()) + " elements, expected " + std::to_string(size));
    return arr.mutable_data();
  };
  void *row = nullptr, *col = nullptr, *var = nullptr;
  if (factored) {
    rows = param.shape(param.ndim() - 2);
    cols = param.shape(param.ndim() - 1);
    batch = 1;  // the leading axes (not size / (rows·cols): that is 0/0 for an empty param)
    for (py::ssize_t axis = 0; axis + 2 < param.ndim(); ++axis) batch *= param.shape(axis);
    row = state(row_obj, batch * rows, "row_var");
    col = state(col_obj, batch * cols, "col_var");
  } else {
    var = state(variance_obj, int64_t(param.size()), "variance");
  }
  const int64_t n = int64_t(param.size());
  if (n == 0) return;  // an empty param: nothing to update (its state stays as it is)
  void* p = param.mutable_data();
  const void* g = grad.data();
  py::gil_scoped_release release;
  if (dtype == DType::Float32)
    pyopt::adafactor_step<float>(static_cast<float*>(p), static_cast<const float*>(g), static_cast<float*>(row),
                                 static_cast<float*>(col), static_cast<float*>(var), batch, rows, cols, n, step, h);
  else
    pyopt::adafactor_step<double>(static_cast<double*>(p), static_cast<const double*>(g), static_cast<double*>(row),
                                  static_cast<double*>(col), static_cast<double*>(var), batch, rows, cols, n, step, h);
}

}  // namespace

void register_utilities(py::module_& m) {
  m.def("adafactor_step", &adafactor_step, py::arg("param"), py::arg("grad"), py::arg("row_var"), py::arg("col_var"),
        py::arg("variance"), py::arg("step"), py::arg("lr"), py::arg("beta2_decay"), py::arg("eps1"), py::arg("eps2"),
        py::arg("d"), py::arg("weight_decay"), py::arg("maximize"), py::arg("label") = "param",
        "One Adafactor step of one param (torch.optim.Adafactor 2.13); see pyopt/adafactor.hpp.");
  m.def("ema_update", &ema_update, py::arg("averages"), py::arg("params"), py::arg("decay"),
        "averages[i] <- averages[i] + (1 - decay) * (params[i] - averages[i]) for every i, in place, in torch.lerp's "
        "rounding (weight 1 - decay). Every array is checked before any is written.");
}

}  // namespace pyopt::python
