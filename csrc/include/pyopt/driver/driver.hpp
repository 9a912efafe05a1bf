#pragma once
// The one driver every rule runs through. It owns what rules should never think about:
// per-step scalars computed once per tensor, the split of all tensors of a step into balanced
// contiguous chunks over one OpenMP parallel region, and the per-element loop that loads each
// slot once, calls the rule, and stores it once.
#include <omp.h>

#include <cstdint>
#include <memory>
#include <utility>

#include "pyopt/config.hpp"
#include "pyopt/types.hpp"

PYOPT_KERNEL_NAMESPACE_BEGIN
namespace driver {

// Below this many elements in a whole step, one thread is faster than waking the team.
constexpr int64_t kSerialThreshold = int64_t(1) << 15;
// Chunk boundaries are multiples of 16 elements (64 bytes of float32): threads do not share lines.
constexpr int64_t kChunkAlign = 16;

template <class Rule, int V, class T>
void update_range(const TensorArgs& a, const typename Rule::template Coeffs<T>& k, int64_t begin, int64_t end) {
  constexpr unsigned mask = Rule::slot_mask(V);
  T* __restrict p = static_cast<T*>(a.param);
  const T* __restrict g = static_cast<const T*>(a.grad);
  T* __restrict s0 = static_cast<T*>(a.slots[0]);
  T* __restrict s1 = static_cast<T*>(a.slots[1]);
  T* __restrict s2 = static_cast<T*>(a.slots[2]);
  T* __restrict s3 = static_cast<T*>(a.slots[3]);
  PYOPT_VECTORIZE_LOOP
  for (int64_t i = begin; i < end; ++i) {
    T s[kMaxSlots] = {};
    if constexpr (mask & 1u) s[0] = s0[i];
    if constexpr (mask & 2u) s[1] = s1[i];
    if constexpr (mask & 4u) s[2] = s2[i];
    if constexpr (mask & 8u) s[3] = s3[i];
    T param = p[i];
    Rule::template update<V>(k, param, g[i], s);
    p[i] = param;
    if constexpr (mask & 1u) s0[i] = s[0];
    if constexpr (mask & 2u) s1[i] = s[1];
    if constexpr (mask & 4u) s2[i] = s[2];
    if constexpr (mask & 8u) s3[i] = s[3];
  }
}

template <class Rule, class T, int... Vs>
PYOPT_INLINE void update_variant(int variant, const TensorArgs& a, const typename Rule::template Coeffs<T>& k,
                                 int64_t begin, int64_t end, std::integer_sequence<int, Vs...>) {
  ((variant == Vs ? (update_range<Rule, Vs, T>(a, k, begin, end), 0) : 0), ...);
}

template <class Rule, class T>
struct Prepared {
  typename Rule::template Coeffs<T> coeffs;
  int variant;
};

template <class Rule, class T>
void run(const TensorArgs* tensors, int64_t count, int num_threads) {
  using Variants = std::make_integer_sequence<int, Rule::num_variants>;
  constexpr int64_t kStackTensors = 32;
  Prepared<Rule, T> stack_buffer[kStackTensors];
  std::unique_ptr<Prepared<Rule, T>[]> heap_buffer;
  Prepared<Rule, T>* prepared = stack_buffer;
  if (count > kStackTensors) {
    heap_buffer.reset(new Prepared<Rule, T>[count]);
    prepared = heap_buffer.get();
  }

  // Per-step scalars, once per tensor, in double. Tensors of the same group at the same step share
  // them unless the rule keeps scalar state of its own.
  int64_t total = 0;
  for (int64_t i = 0; i < count; ++i) {
    const TensorArgs& a = tensors[i];
    if (Rule::num_scalars == 0 && i > 0 && a.hyper == tensors[i - 1].hyper && a.step == tensors[i - 1].step)
      prepared[i] = prepared[i - 1];
    else
      prepared[i] = {Rule::template prepare<T>(a.hyper, a.step, a.scalars), Rule::variant(a.hyper)};
    total += a.size;
  }

  if (num_threads <= 1 || total < kSerialThreshold || omp_in_parallel()) {
    for (int64_t i = 0; i < count; ++i)
      update_variant<Rule, T>(prepared[i].variant, tensors[i], prepared[i].coeffs, 0, tensors[i].size, Variants{});
    return;
  }

  // One region for the whole step: thread r takes the r-th contiguous slice of the concatenation
  // of all tensors, so many small tensors and one large tensor balance the same way.
  const int64_t max_useful = (total + kSerialThreshold - 1) / kSerialThreshold;
  const int team = int(num_threads < max_useful ? num_threads : max_useful);
#pragma omp parallel num_threads(team)
  {
    const int64_t nthreads = omp_get_num_threads();
    const int64_t rank = omp_get_thread_num();
    int64_t per_thread = (total + nthreads - 1) / nthreads;
    per_thread = (per_thread + kChunkAlign - 1) / kChunkAlign * kChunkAlign;
    const int64_t lo = rank * per_thread < total ? rank * per_thread : total;
    const int64_t hi = lo + per_thread < total ? lo + per_thread : total;
    int64_t offset = 0;
    for (int64_t i = 0; i < count && offset < hi; ++i) {
      const int64_t size = tensors[i].size;
      const int64_t begin = lo > offset ? lo - offset : 0;
      const int64_t end = hi < offset + size ? hi - offset : size;
      if (begin < end)
        update_variant<Rule, T>(prepared[i].variant, tensors[i], prepared[i].coeffs, begin, end, Variants{});
      offset += size;
    }
  }
}

}  // namespace driver
PYOPT_KERNEL_NAMESPACE_END
