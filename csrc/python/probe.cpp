// _core.rmw_probe: one pass that reads and writes the same arrays an optimizer step does, with no
// math. Its time is the memory-traffic floor of that step, the yardstick pyopt.bench holds the
// kernels to ("fraction of the probe").
//
// It runs like the optimizer driver (pyopt/driver/driver.hpp): all tensors of the call are one
// concatenation, split into balanced contiguous chunks (multiples of kChunkAlign elements) over ONE
// OpenMP parallel region of team_size(total, num_threads()) threads, serially below
// kSerialThreshold elements, with the GIL released.
//
// Per element i of a tensor with read-write arrays w_0..w_{A-1} and read-only arrays r_0..r_{B-1}:
//     z = zero * (r_0[i]*r_0[i] + ... + r_{B-1}[i]*r_{B-1}[i])     (z = zero when B == 0)
//     w_k[i] = w_k[i] + z
// where `zero` is -0.0 computed at run time (the compiler cannot prove it, so it can neither drop
// the stores nor the reads). For finite read-only values z is -0.0 and x + (-0.0) == x bit for bit
// (also for x = -0.0, +-Inf and NaN): the read-write arrays come back unchanged. A NaN or Inf in a
// read-only array makes the read-write elements at that index NaN, which is how the tests see that
// every element of every array is really read.
//
// The _core module is compiled for the baseline ISA; the element loop is cloned for AVX2 and
// AVX-512 (GCC/Clang target_clones) so it moves data with the widest vectors the CPU has, whatever
// pyopt.set_isa says (it is a bandwidth yardstick, not a kernel under test).
#include "probe.hpp"

#include <omp.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "arrays.hpp"
#include "pyopt/driver/driver.hpp"
#include "pyopt/registry.hpp"

namespace py = pybind11;

namespace pyopt::python {
namespace {

constexpr int kMaxReadWrite = 1 + kMaxSlots;  // the param and every state slot
constexpr int kMaxReadOnly = 2;

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(_M_X64)) && defined(__linux__)
#define PYOPT_PROBE_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define PYOPT_PROBE_CLONES
#endif

struct Tensor {
  void* rw[kMaxReadWrite];
  const void* ro[kMaxReadOnly];
  int64_t size;
};

template <int A, int B, class T>
PYOPT_PROBE_CLONES void probe_range(const Tensor& t, int64_t begin, int64_t end, T zero) {
  T* w[kMaxReadWrite > A ? kMaxReadWrite : A] = {};
  const T* r[kMaxReadOnly > B ? kMaxReadOnly : B] = {};
  for (int k = 0; k < A; ++k) w[k] = static_cast<T*>(t.rw[k]);
  for (int k = 0; k < B; ++k) r[k] = static_cast<const T*>(t.ro[k]);
  T* __restrict w0 = w[0];
  T* __restrict w1 = w[1];
  T* __restrict w2 = w[2];
  T* __restrict w3 = w[3];
  T* __restrict w4 = w[4];
  T* __restrict w5 = w[5];
  const T* __restrict r0 = r[0];
  const T* __restrict r1 = r[1];
  PYOPT_VECTORIZE_LOOP
  for (int64_t i = begin; i < end; ++i) {
    T sq = T(0);
    if constexpr (B >= 1) sq = r0[i] * r0[i];
    if constexpr (B >= 2) sq = sq + r1[i] * r1[i];
    const T z = B > 0 ? zero * sq : zero;
    if constexpr (A >= 1) w0[i] = w0[i] + z;
    if constexpr (A >= 2) w1[i] = w1[i] + z;
    if constexpr (A >= 3) w2[i] = w2[i] + z;
    if constexpr (A >= 4) w3[i] = w3[i] + z;
    if constexpr (A >= 5) w4[i] = w4[i] + z;
    if constexpr (A >= 6) w5[i] = w5[i] + z;
  }
}

template <int A, int B, class T>
void probe_all(const std::vector<Tensor>& tensors, int64_t total, int num_threads) {
  // -0.0, but only known at run time: -0.0 * n is -0.0 for any n >= 1.
  const T zero = T(-0.0) * T(num_threads);
  const int64_t count = int64_t(tensors.size());
  if (num_threads <= 1 || total < driver::kSerialThreshold || omp_in_parallel()) {
    for (const Tensor& t : tensors) probe_range<A, B, T>(t, 0, t.size, zero);
    return;
  }
#pragma omp parallel num_threads(driver::team_size(total, num_threads))
  {
    // The driver's chunking: the rank-th contiguous slice of the concatenation.
    driver::for_my_chunk(
        count, total, [&](int64_t i) { return tensors[i].size; },
        [&](int64_t i, int64_t begin, int64_t end) { probe_range<A, B, T>(tensors[i], begin, end, zero); });
  }
}

template <class T>
void dispatch(int a, int b, const std::vector<Tensor>& tensors, int64_t total, int threads) {
  using Fn = void (*)(const std::vector<Tensor>&, int64_t, int);
  static const Fn table[kMaxReadWrite][kMaxReadOnly + 1] = {
      {probe_all<1, 0, T>, probe_all<1, 1, T>, probe_all<1, 2, T>},
      {probe_all<2, 0, T>, probe_all<2, 1, T>, probe_all<2, 2, T>},
      {probe_all<3, 0, T>, probe_all<3, 1, T>, probe_all<3, 2, T>},
      {probe_all<4, 0, T>, probe_all<4, 1, T>, probe_all<4, 2, T>},
      {probe_all<5, 0, T>, probe_all<5, 1, T>, probe_all<5, 2, T>},
      {probe_all<6, 0, T>, probe_all<6, 1, T>, probe_all<6, 2, T>},
  };
  static_assert(sizeof(table) / sizeof(table[0]) == kMaxReadWrite, "one row per read-write count");
  table[a - 1][b](tensors, total, threads);
}

std::string type_name(py::handle obj) { return py::str(py::type::of(obj).attr("__name__")).cast<std::string>(); }

std::string label(const char* what, int64_t i) {
  return std::string("rmw_probe: ") + what + "[" + std::to_string(i) + "]";
}

std::vector<py::array> as_arrays(const py::sequence& seq, const char* what) {
  std::vector<py::array> out;
  out.reserve(seq.size());
  for (size_t i = 0; i < seq.size(); ++i) {
    py::object obj = seq[i];
    if (!py::isinstance<py::array>(obj))
      throw py::type_error(label(what, int64_t(i)) + ": expected a numpy.ndarray, got " + type_name(obj));
    auto arr = py::reinterpret_borrow<py::array>(obj);
    const char kind = arr.dtype().kind();
    const auto itemsize = arr.itemsize();
    if (kind != 'f' || (itemsize != 4 && itemsize != 8)) param_dtype(arr, label(what, int64_t(i)));  // TypeError
    if (!(arr.flags() & py::array::c_style))
      throw py::value_error(label(what, int64_t(i)) + ": array is not C-contiguous");
    out.push_back(arr);
  }
  return out;
}

struct Span {
  uintptr_t start, end;
  bool written;
  int64_t index;  // into read_write (written) or read_only
};

std::string span_name(const Span& s) { return s.written ? label("read_write", s.index) : label("read_only", s.index); }

// A written array may share memory with no other array (the probe would read what it wrote).
void check_no_alias(std::vector<Span> spans) {
  std::sort(spans.begin(), spans.end(), [](const Span& x, const Span& y) { return x.start < y.start; });
  const Span* far_any = nullptr;
  const Span* far_written = nullptr;
  for (const Span& s : spans) {
    const Span* other = s.written ? far_any : far_written;
    if (other && s.start < other->end)
      throw py::value_error(span_name(*other) + " and " + span_name(s) + " share memory");
    if (!far_any || s.end > far_any->end) far_any = &s;
    if (s.written && (!far_written || s.end > far_written->end)) far_written = &s;
  }
}

void rmw_probe(const py::sequence& read_write, const py::sequence& read_only, int64_t tensors) {
  if (py::isinstance<py::str>(read_write) || py::isinstance<py::str>(read_only))
    throw py::type_error("rmw_probe: read_write and read_only must be lists of arrays");
  if (tensors < 1) throw py::value_error("rmw_probe: tensors must be >= 1, got " + std::to_string(tensors));
  const std::vector<py::array> rw = as_arrays(read_write, "read_write");
  const std::vector<py::array> ro = as_arrays(read_only, "read_only");
  const int64_t n_rw = int64_t(rw.size()), n_ro = int64_t(ro.size());
  if (n_rw == 0 || n_rw % tensors != 0 || n_ro % tensors != 0)
    throw py::value_error("rmw_probe: " + std::to_string(n_rw) + " read-write and " + std::to_string(n_ro) +
                          " read-only arrays do not split into " + std::to_string(tensors) +
                          " tensors of at least one read-write array each");
  const int a = int(n_rw / tensors), b = int(n_ro / tensors);
  if (a > kMaxReadWrite || b > kMaxReadOnly)
    throw py::value_error("rmw_probe: at most " + std::to_string(kMaxReadWrite) + " read-write and " +
                          std::to_string(kMaxReadOnly) + " read-only arrays per tensor, got " + std::to_string(a) +
                          " and " + std::to_string(b));
  const py::dtype dtype = rw[0].dtype();
  std::vector<Tensor> out(size_t(tensors), Tensor{});
  std::vector<Span> spans;
  spans.reserve(rw.size() + ro.size());
  int64_t total = 0;
  for (int64_t t = 0; t < tensors; ++t) {
    const int64_t size = int64_t(rw[size_t(t * a)].size());
    auto check = [&](const py::array& arr, const char* what, int64_t index) {
      if (arr.itemsize() != dtype.itemsize())
        throw py::type_error(label(what, index) + ": dtype " + py::str(arr.dtype()).cast<std::string>() +
                             " differs from " + py::str(dtype).cast<std::string>() + " (read_write[0])");
      if (int64_t(arr.size()) != size)
        throw py::value_error(label(what, index) + ": " + std::to_string(arr.size()) + " elements, but tensor " +
                              std::to_string(t) + " has " + std::to_string(size));
    };
    for (int k = 0; k < a; ++k) {
      const int64_t index = t * a + k;
      const py::array& arr = rw[size_t(index)];
      check(arr, "read_write", index);
      if (!arr.writeable()) throw py::value_error(label("read_write", index) + ": array is read-only");
      out[size_t(t)].rw[k] = const_cast<void*>(arr.data());
      if (arr.nbytes() > 0) {
        const auto s = reinterpret_cast<uintptr_t>(arr.data());
        spans.push_back({s, s + uintptr_t(arr.nbytes()), true, index});
      }
    }
    for (int k = 0; k < b; ++k) {
      const int64_t index = t * b + k;
      const py::array& arr = ro[size_t(index)];
      check(arr, "read_only", index);
      out[size_t(t)].ro[k] = arr.data();
      if (arr.nbytes() > 0) {
        const auto s = reinterpret_cast<uintptr_t>(arr.data());
        spans.push_back({s, s + uintptr_t(arr.nbytes()), false, index});
      }
    }
    out[size_t(t)].size = size;
    total += size;
  }
  check_no_alias(std::move(spans));
  const bool f64 = dtype.itemsize() == 8;
  const int threads = num_threads();
  py::gil_scoped_release release;
  if (f64)
    dispatch<double>(a, b, out, total, threads);
  else
    dispatch<float>(a, b, out, total, threads);
}

}  // namespace

void register_probe(py::module_& m) {
  m.def("rmw_probe", &rmw_probe, py::arg("read_write"), py::arg("read_only"), py::arg("tensors") = 1,
        "The memory traffic of an optimizer step without its math: for every element, read every array and write "
        "the read-write ones back unchanged (for finite read-only values; a NaN/Inf read-only value makes the "
        "read-write elements at that index NaN). Arrays are tensor-major: tensor t owns read_write[t*A:(t+1)*A] "
        "and read_only[t*B:(t+1)*B] with A = len(read_write)/tensors, B = len(read_only)/tensors; the arrays of a "
        "tensor have the same size, all the same dtype (float32/float64), C-contiguous, no written array aliasing "
        "another. One OpenMP region over all tensors, chunked like the optimizer driver, pyopt.num_threads() "
        "threads, the GIL released. Every array is checked before any is touched.");
}

}  // namespace pyopt::python
