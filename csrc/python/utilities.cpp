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
#include "utilities.hpp"

#include <omp.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "arrays.hpp"
#include "pyopt/driver/driver.hpp"
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

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(_M_X64))
#define PYOPT_UTIL_X86_FMA_CLONE 1
#define PYOPT_UTIL_TARGET_FMA __attribute__((target("avx2,fma")))
#else
#define PYOPT_UTIL_X86_FMA_CLONE 0
#define PYOPT_UTIL_TARGET_FMA
#endif

// The element loops. `Fused`: one rounding for the multiply-add (hardware FMA); `FromEnd`: which
// of torch's two forms (depends only on w, so it is hoisted out of the loop).
template <bool Fused, bool FromEnd, class T>
PYOPT_INLINE void lerp_loop(T* __restrict a, const T* __restrict b, T coeff, int64_t begin, int64_t end) {
  PYOPT_VECTORIZE_LOOP
  for (int64_t i = begin; i < end; ++i) {
    const T d = b[i] - a[i];
    const T base = FromEnd ? b[i] : a[i];
    if constexpr (Fused)
      a[i] = std::fma(coeff, d, base);
    else
      a[i] = coeff * d + base;
  }
}

template <bool Fused, bool FromEnd>
PYOPT_INLINE void lerp_range(const Pair& p, float c32, double c64, int64_t begin, int64_t end) {
  if (p.f64)
    lerp_loop<Fused, FromEnd>(static_cast<double*>(p.avg), static_cast<const double*>(p.param), c64, begin, end);
  else
    lerp_loop<Fused, FromEnd>(static_cast<float*>(p.avg), static_cast<const float*>(p.param), c32, begin, end);
}

void lerp_plain(const Pair& p, bool from_end, float c32, double c64, int64_t begin, int64_t end) {
#if defined(__FMA__) || defined(__ARM_FEATURE_FMA)
  constexpr bool kFused = true;  // the whole module is built with FMA: no separate clone needed
#else
  constexpr bool kFused = false;
#endif
  from_end ? lerp_range<kFused, true>(p, c32, c64, begin, end) : lerp_range<kFused, false>(p, c32, c64, begin, end);
}

#if PYOPT_UTIL_X86_FMA_CLONE
PYOPT_UTIL_TARGET_FMA void lerp_fma(const Pair& p, bool from_end, float c32, double c64, int64_t begin, int64_t end) {
  from_end ? lerp_range<true, true>(p, c32, c64, begin, end) : lerp_range<true, false>(p, c32, c64, begin, end);
}
#endif

using RangeFn = void (*)(const Pair&, bool, float, double, int64_t, int64_t);

RangeFn pick_range_fn() {
#if PYOPT_UTIL_X86_FMA_CLONE
  if (pyopt::isa() != "baseline") return lerp_fma;  // avx2 / avx512: the CPU has FMA
#endif
  return lerp_plain;
}

// Every average / param pair in one parallel region: thread r takes the r-th contiguous slice
// of the concatenation, as the optimizer driver does (same thresholds).
void run_pairs(const std::vector<Pair>& pairs, double weight) {
  const RangeFn fn = pick_range_fn();
  const float w32 = static_cast<float>(weight);
  const double w64 = weight;
  // torch's is_lerp_weight_small tests the weight after its conversion to the tensor's dtype;
  // for the weights used here (in [0, 1]) both dtypes agree unless float32 rounds a weight just
  // below 0.5 up to 0.5, so each dtype decides for itself.
  const bool from_end32 = !(std::fabs(w32) < 0.5f), from_end64 = !(std::fabs(w64) < 0.5);
  const float c32 = from_end32 ? w32 - 1.0f : w32;
  const double c64 = from_end64 ? w64 - 1.0 : w64;
  auto call = [&](const Pair& p, int64_t begin, int64_t end) {
    fn(p, p.f64 ? from_end64 : from_end32, c32, c64, begin, end);
  };

  int64_t total = 0;
  for (const Pair& p : pairs) total += p.size;
  const int threads = pyopt::num_threads();
  if (threads <= 1 || total < driver::kSerialThreshold || omp_in_parallel()) {
    for (const Pair& p : pairs) call(p, 0, p.size);
    return;
  }
  const int64_t count = static_cast<int64_t>(pairs.size());
  const int64_t max_useful = (total + driver::kSerialThreshold - 1) / driver::kSerialThreshold;
  const int team = int(threads < max_useful ? threads : max_useful);
#pragma omp parallel num_threads(team)
  {
    const int64_t nthreads = omp_get_num_threads();
    const int64_t rank = omp_get_thread_num();
    int64_t per_thread = (total + nthreads - 1) / nthreads;
    per_thread = (per_thread + driver::kChunkAlign - 1) / driver::kChunkAlign * driver::kChunkAlign;
    const int64_t lo = rank * per_thread < total ? rank * per_thread : total;
    const int64_t hi = lo + per_thread < total ? lo + per_thread : total;
    int64_t offset = 0;
    for (int64_t i = 0; i < count && offset < hi; ++i) {
      const int64_t size = pairs[i].size;
      const int64_t begin = lo > offset ? lo - offset : 0;
      const int64_t end = hi < offset + size ? hi - offset : size;
      if (begin < end) call(pairs[i], begin, end);
      offset += size;
    }
  }
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

}  // namespace

void register_utilities(py::module_& m) {
  m.def("ema_update", &ema_update, py::arg("averages"), py::arg("params"), py::arg("decay"),
        "averages[i] <- averages[i] + (1 - decay) * (params[i] - averages[i]) for every i, in place, in torch.lerp's "
        "rounding (weight 1 - decay). Every array is checked before any is written.");
}

}  // namespace pyopt::python
