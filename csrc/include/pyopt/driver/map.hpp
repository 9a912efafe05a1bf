#pragma once
// Element-wise maps: target[i] ← Map::apply(target[i], source[i]) over all tensors of one call,
// with one coefficient per tensor (kernels.hpp lists them). The driver's chunking, threads and
// serial threshold (driver.hpp), without what only optimizer rules have: hyperparameter tables,
// state slots, step counters, gradient clipping.
//
// A map declares num_variants and variant(coeff) (compile-time specialisations, as a rule's),
// Coeffs<T> and prepare<T>(coeff), and apply<V>(k, target, source) returning the new target.
#include <memory>
#include <utility>

#include "pyopt/driver/driver.hpp"
#include "pyopt/kernels.hpp"
#include "pyopt/rules/common.hpp"

PYOPT_KERNEL_NAMESPACE_BEGIN
namespace maps {

// target ← lerp(target, source, w) in torch.lerp's rounding: the form (from the start or from the
// end) depends only on w, so it is a variant (see rules::lerp).
struct Lerp {
  static constexpr int num_variants = 2;
  static int variant(double w) { return rules::lerp_from_end(w) ? 1 : 0; }
  template <class T>
  struct Coeffs {
    T coeff;
  };
  template <class T>
  static Coeffs<T> prepare(double w) {
    return {rules::lerp_coeff<T>(w)};
  }
  template <int V, class T>
  static PYOPT_INLINE T apply(const Coeffs<T>& k, T target, T source) {
    return rules::lerp<V == 1>(target, source, k.coeff);
  }
};

// h ← h·β + (1 − β)·ĥ, as hess.mul_(β).add_(ĥ, alpha=1 − β) (SophiaG's Hessian EMA).
struct HessianEma {
  static constexpr int num_variants = 1;
  static int variant(double) { return 0; }
  template <class T>
  struct Coeffs {
    T beta, one_minus_beta;
  };
  template <class T>
  static Coeffs<T> prepare(double beta) {
    return {T(beta), T(1.0 - beta)};
  }
  template <int, class T>
  static PYOPT_INLINE T apply(const Coeffs<T>& k, T h, T estimate) {
    return rules::fmadd(k.one_minus_beta, estimate, h * k.beta);
  }
};

}  // namespace maps

namespace driver {

template <class Map, int V, class T>
void map_range(const MapArgs& a, const typename Map::template Coeffs<T>& k, int64_t begin, int64_t end) {
  T* __restrict target = static_cast<T*>(a.target);
  const T* __restrict source = static_cast<const T*>(a.source);
  PYOPT_VECTORIZE_LOOP
  for (int64_t i = begin; i < end; ++i) target[i] = Map::template apply<V>(k, target[i], source[i]);
}

template <class Map, class T>
struct PreparedMap {
  typename Map::template Coeffs<T> coeffs;
  int variant;
};

template <class Map, class T, int... Vs>
PYOPT_INLINE void map_variant(const MapArgs& a, const PreparedMap<Map, T>& k, int64_t begin, int64_t end,
                              std::integer_sequence<int, Vs...>) {
  ((k.variant == Vs ? (map_range<Map, Vs, T>(a, k.coeffs, begin, end), 0) : 0), ...);
}

// The map over `count` tensors: serial below kSerialThreshold elements in all, else one parallel
// region in which each thread takes its contiguous slice of the concatenated tensors, as run().
template <class Map, class T>
void run_map(const MapArgs* tensors, int64_t count, int num_threads) {
  using Variants = std::make_integer_sequence<int, Map::num_variants>;
  constexpr int64_t kStackTensors = 32;
  PreparedMap<Map, T> stack_buffer[kStackTensors];
  std::unique_ptr<PreparedMap<Map, T>[]> heap_buffer;
  PreparedMap<Map, T>* prepared = stack_buffer;
  if (count > kStackTensors) {
    heap_buffer.reset(new PreparedMap<Map, T>[count]);
    prepared = heap_buffer.get();
  }
  int64_t total = 0;
  for (int64_t i = 0; i < count; ++i) {
    prepared[i] = {Map::template prepare<T>(tensors[i].coeff), Map::variant(tensors[i].coeff)};
    total += tensors[i].size;
  }
  if (num_threads <= 1 || total < kSerialThreshold || omp_in_parallel()) {
    for (int64_t i = 0; i < count; ++i) map_variant(tensors[i], prepared[i], 0, tensors[i].size, Variants{});
    return;
  }
#pragma omp parallel num_threads(team_size(total, num_threads))
  for_my_chunk(count, total, [&](int64_t i) { return tensors[i].size; }, [&](int64_t i, int64_t begin, int64_t end) {
    map_variant(tensors[i], prepared[i], begin, end, Variants{});
  });
}

}  // namespace driver
PYOPT_KERNEL_NAMESPACE_END
