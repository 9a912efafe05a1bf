// Training utilities that are not optimizer steps, run by the element-wise maps of
// driver/map.hpp (on the ISA path set_isa() selects, with the driver's threads and chunking):
//   ema_update             avg <- lerp(avg, param, 1 - decay)       (pyopt.EMA, pyopt.Lookahead)
//   lerp_inplace           target <- lerp(target, end, weight)      (schedule-free train()/eval())
//   sophia_hessian_update  h <- beta2*h + (1 - beta2)*estimate       (SophiaG.update_hessian)
// and adafactor_step, Adafactor's per-ISA kernel for one param.
//
// Rounding follows torch.lerp on CPU (ATen's lerp_vec and its scalar lerp, both one fused
// multiply-add): with w = T(weight) (for ema_update, T(1 - decay)),
//   |w| <  0.5:  start + w·(end − start)          as fma(w, end − start, start)
//   |w| >= 0.5:  end − (1 − w)·(end − start)      as fma(w − 1, end − start, end)
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
#include "pyopt/kernels.hpp"
#include "pyopt/rules/common.hpp"

namespace py = pybind11;

namespace pyopt::python {
namespace {

struct Pair {
  void* target;
  const void* source;
  int64_t size;
  bool f64;
  double coeff;
};

// Runs `map` over every pair with size > 0, one call per dtype.
void run_pairs(ElementMap map, const std::vector<Pair>& pairs) {
  std::vector<MapArgs> by_dtype[kNumDTypes];
  for (const Pair& p : pairs)
    if (p.size > 0) by_dtype[p.f64 ? 1 : 0].push_back(MapArgs{p.target, p.source, p.size, p.coeff});
  for (int d = 0; d < kNumDTypes; ++d)
    if (!by_dtype[d].empty()) run_map(map, DType(d), by_dtype[d].data(), int64_t(by_dtype[d].size()));
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

void add_span(std::vector<Span>& spans, const py::array& a, bool written, size_t index) {
  if (a.nbytes() > 0) {
    const auto s = reinterpret_cast<uintptr_t>(a.data());
    spans.push_back({s, s + static_cast<uintptr_t>(a.nbytes()), written, index});
  }
}

// No written array may share memory with any other array (read ones may share among themselves):
// the map would read values it has already written, or write one element twice. Calls
// overlap(earlier, later) (it throws) for the first overlap found in address order.
template <class OnOverlap>
void check_no_alias(std::vector<Span> spans, OnOverlap overlap) {
  std::sort(spans.begin(), spans.end(), [](const Span& x, const Span& y) { return x.start < y.start; });
  const Span* far_any = nullptr;      // the span seen so far reaching furthest
  const Span* far_written = nullptr;  // the written span seen so far reaching furthest
  for (const Span& s : spans) {
    const Span* other = s.written ? far_any : far_written;
    if (other && s.start < other->end) overlap(*other, s);
    if (!far_any || s.end > far_any->end) far_any = &s;
    if (s.written && (!far_written || s.end > far_written->end)) far_written = &s;
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
  std::vector<Span> spans;
  for (size_t i = 0; i < avgs.size(); ++i) {
    const std::string idx = "[" + std::to_string(i) + "]";
    check_param(avgs[i], "ema_update: averages" + idx);  // float32/64, C-contiguous, writeable
    const py::array& p = prms[i];
    const std::string plabel = "ema_update: params" + idx;
    param_dtype(p, plabel);
    if (!(p.flags() & py::array::c_style)) throw py::value_error(plabel + ": array is not C-contiguous");
    // dtype, shape, contiguity and writeability of the average against its param
    check_state(avgs[i], p, "ema_update: averages" + idx);
    pairs.push_back({avgs[i].mutable_data(), p.data(), static_cast<int64_t>(p.size()), p.itemsize() == 8, 1.0 - decay});
  }
  for (size_t i = 0; i < avgs.size(); ++i) add_span(spans, avgs[i], true, i);
  for (size_t i = 0; i < prms.size(); ++i) add_span(spans, prms[i], false, i);
  auto name = [](const Span& s) {
    return std::string(s.written ? "averages[" : "params[") + std::to_string(s.index) + "]";
  };
  check_no_alias(spans, [&](const Span& a, const Span& b) {
    throw py::value_error("ema_update: " + name(a) + " and " + name(b) + " share memory");
  });
  py::gil_scoped_release release;
  run_pairs(ElementMap::Lerp, pairs);
}

// lerp_inplace and sophia_hessian_update: `tensors` are (label, group, target array) tuples and
// `sources` holds one array (or None: skip the target) per tensor; target <- map(target, source,
// coeffs[group]). The checks and messages are an optimizer step's (engine.cpp), all before any
// array is written.
void run_labeled_map(ElementMap map, const std::vector<double>& group_coeffs, void (*check_coeff)(double),
                     const py::list& tensors, const py::sequence& sources) {
  for (double c : group_coeffs) check_coeff(c);
  struct Target {
    std::string label;
    int group;
    py::array array;
  };
  std::vector<Target> targets;
  std::vector<Span> spans;
  for (py::handle item : tensors) {
    auto t = item.cast<py::tuple>();
    if (t.size() != 3)
      throw py::value_error("tensors[" + std::to_string(targets.size()) + "]: expected (label, group, array)");
    Target target{t[0].cast<std::string>(), t[1].cast<int>(), {}};
    if (target.group < 0 || std::size_t(target.group) >= group_coeffs.size())
      throw std::invalid_argument(target.label + ": bad group index");
    check_param(t[2], target.label);
    target.array = t[2].cast<py::array>();
    add_span(spans, target.array, true, targets.size());
    targets.push_back(std::move(target));
  }
  check_no_alias(spans, [&](const Span& a, const Span& b) {
    throw py::value_error(targets[a.index].label + " and " + targets[b.index].label + " share memory");
  });
  const std::size_t n = targets.size();
  if (std::size_t(py::len(sources)) != n)
    throw std::invalid_argument("expected " + std::to_string(n) + " gradients (one per param), got " +
                                std::to_string(py::len(sources)));
  std::vector<py::array> held;  // sources converted to their target's dtype stay alive until the run
  std::vector<Pair> pairs;
  for (std::size_t i = 0; i < n; ++i) {
    py::handle source = sources[i];
    if (source.is_none()) continue;
    Target& t = targets[i];
    held.push_back(grad_for(source, t.array, t.label));
    add_span(spans, held.back(), false, i);
    pairs.push_back({t.array.mutable_data(), held.back().data(), int64_t(t.array.size()), t.array.itemsize() == 8,
                     group_coeffs[std::size_t(t.group)]});
  }
  check_no_alias(spans, [&](const Span& a, const Span& b) {  // targets are disjoint: one is a source
    const Span& read = a.written ? b : a;
    const Span& written = a.written ? a : b;
    throw py::value_error(targets[read.index].label + ": gradient shares memory with " +
                          (read.index == written.index ? std::string("its param") : targets[written.index].label));
  });
  py::gil_scoped_release release;
  run_pairs(map, pairs);
}

void lerp_inplace(const std::vector<double>& weights, const py::list& tensors, const py::sequence& ends) {
  run_labeled_map(ElementMap::Lerp, weights, [](double w) { rules::require_finite("weight", w); }, tensors, ends);
}

void sophia_hessian_update(const std::vector<double>& beta2, const py::list& tensors, const py::sequence& estimates) {
  run_labeled_map(ElementMap::HessianEma, beta2, [](double b) { rules::require_beta("beta2", b); }, tensors,
                  estimates);
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
  m.def("lerp_inplace", &lerp_inplace, py::arg("weights"), py::arg("tensors"), py::arg("ends"),
        "For each (label, group, target) of `tensors`: target <- lerp(target, ends[i], weights[group]) in place, "
        "rounded as torch's target.lerp_(end, weight); a None end skips its target. Every array is checked before "
        "any is written.");
  m.def("sophia_hessian_update", &sophia_hessian_update, py::arg("beta2"), py::arg("tensors"), py::arg("estimates"),
        "For each (label, group, hessian) of `tensors`: hessian <- beta2[group]*hessian + (1 - beta2[group])*"
        "estimates[i] in place, as hess.mul_(beta2).add_(estimate, alpha=1 - beta2); a None estimate skips its "
        "hessian. Every array is checked before any is written.");
}

}  // namespace pyopt::python
