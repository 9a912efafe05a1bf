#pragma once
// The one driver every rule runs through. It owns what rules should never think about:
// per-step scalars computed once per tensor, the split of all tensors of a step into balanced
// contiguous chunks over one OpenMP parallel region, and the per-element loop that loads each
// slot once, calls the rule, and stores it once.
#include <omp.h>

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "pyopt/config.hpp"
#include "pyopt/types.hpp"

PYOPT_KERNEL_NAMESPACE_BEGIN
namespace driver {

// Below this many elements in a whole step, one thread is faster than waking the team.
constexpr int64_t kSerialThreshold = int64_t(1) << 15;
// Chunk boundaries are multiples of 16 elements (64 bytes of float32): threads do not share lines.
constexpr int64_t kChunkAlign = 16;
// Rules with per-tensor reductions (norms) sum each block of this many elements in kReduceLanes
// fixed lanes, then the blocks of a tensor in order: a sum never depends on the thread count, the
// chunking or the vector width, so every ISA path and thread count gives the same bits.
constexpr int64_t kReduceBlock = 4096;
constexpr int kReduceLanes = 16;

// The gradient as the rule sees it: clipped by value, then scaled (see TensorArgs).
template <class T>
PYOPT_INLINE T clipped_grad(T g, T clip, T scale) {
  g = g < -clip ? -clip : g;  // NaN compares false: it stays NaN, as torch.clamp keeps it
  g = g > clip ? clip : g;
  return g * scale;
}

template <class Rule, int V, class T>
void update_range(const TensorArgs& a, const typename Rule::template Coeffs<T>& k, int64_t begin, int64_t end) {
  constexpr unsigned mask = Rule::slot_mask(V);
  T* __restrict p = static_cast<T*>(a.param);
  const T* __restrict g = static_cast<const T*>(a.grad);
  T* __restrict s0 = static_cast<T*>(a.slots[0]);
  T* __restrict s1 = static_cast<T*>(a.slots[1]);
  T* __restrict s2 = static_cast<T*>(a.slots[2]);
  T* __restrict s3 = static_cast<T*>(a.slots[3]);
  const T clip = T(a.grad_clip), scale = T(a.grad_scale);
  PYOPT_VECTORIZE_LOOP
  for (int64_t i = begin; i < end; ++i) {
    T s[kMaxSlots] = {};
    if constexpr (mask & 1u) s[0] = s0[i];
    if constexpr (mask & 2u) s[1] = s1[i];
    if constexpr (mask & 4u) s[2] = s2[i];
    if constexpr (mask & 8u) s[3] = s3[i];
    T param = p[i];
    Rule::template update<V>(k, param, clipped_grad(g[i], clip, scale), s);
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

// The reduction pass of a rule with num_reductions > 0: Rule::reduce<V> sees each element once
// (it may update the state slots, not the param) and yields num_reductions values to be summed in
// double. Elements [begin, end) lie in one block; the block's sums go to out[0..R).
template <class Rule, int V, class T>
void reduce_block(const TensorArgs& a, const typename Rule::template Coeffs<T>& k, int64_t begin, int64_t end,
                  double* out) {
  constexpr int R = Rule::num_reductions;
  constexpr unsigned mask = Rule::slot_mask(V);
  const T* __restrict p = static_cast<const T*>(a.param);
  const T* __restrict g = static_cast<const T*>(a.grad);
  T* __restrict s0 = static_cast<T*>(a.slots[0]);
  T* __restrict s1 = static_cast<T*>(a.slots[1]);
  T* __restrict s2 = static_cast<T*>(a.slots[2]);
  T* __restrict s3 = static_cast<T*>(a.slots[3]);
  const T clip = T(a.grad_clip), scale = T(a.grad_scale);
  double lanes[R][kReduceLanes] = {};
  auto one = [&](int64_t i, int lane) PYOPT_LAMBDA_INLINE {
    T s[kMaxSlots] = {};
    if constexpr (mask & 1u) s[0] = s0[i];
    if constexpr (mask & 2u) s[1] = s1[i];
    if constexpr (mask & 4u) s[2] = s2[i];
    if constexpr (mask & 8u) s[3] = s3[i];
    T r[R];
    Rule::template reduce<V>(k, p[i], clipped_grad(g[i], clip, scale), s, r);
    if constexpr (mask & 1u) s0[i] = s[0];
    if constexpr (mask & 2u) s1[i] = s[1];
    if constexpr (mask & 4u) s2[i] = s[2];
    if constexpr (mask & 8u) s3[i] = s[3];
    for (int q = 0; q < R; ++q) lanes[q][lane] += double(r[q]);
  };
  int64_t i = begin;
  for (; i + kReduceLanes <= end; i += kReduceLanes) {
    PYOPT_VECTORIZE_LOOP
    for (int lane = 0; lane < kReduceLanes; ++lane) one(i + lane, lane);
  }
  for (int lane = 0; i + lane < end; ++lane) one(i + lane, lane);
  for (int q = 0; q < R; ++q) {
    // Pairwise over the lanes, in a fixed order.
    double l[kReduceLanes];
    for (int j = 0; j < kReduceLanes; ++j) l[j] = lanes[q][j];
    for (int width = kReduceLanes / 2; width >= 1; width /= 2)
      for (int j = 0; j < width; ++j) l[j] = l[j] + l[j + width];
    out[q] = l[0];
  }
}

template <class Rule, class T, int... Vs>
PYOPT_INLINE void reduce_variant(int variant, const TensorArgs& a, const typename Rule::template Coeffs<T>& k,
                                 int64_t begin, int64_t end, double* out, std::integer_sequence<int, Vs...>) {
  ((variant == Vs ? (reduce_block<Rule, Vs, T>(a, k, begin, end, out), 0) : 0), ...);
}

template <class Rule, class T>
struct Prepared {
  typename Rule::template Coeffs<T> coeffs;
  int variant;
};

inline int team_size(int64_t total, int num_threads) {
  const int64_t max_useful = (total + kSerialThreshold - 1) / kSerialThreshold;
  return int(num_threads < max_useful ? num_threads : max_useful);
}

// Inside a parallel region: thread r takes the r-th contiguous slice of the concatenation of
// `count` tensors (sizes from size_of(i)), so many small tensors and one large tensor balance the
// same way; visit(i, begin, end) for each piece of it.
template <class SizeOf, class Visit>
void for_my_chunk(int64_t count, int64_t total, SizeOf size_of, Visit visit) {
  const int64_t nthreads = omp_get_num_threads();
  const int64_t rank = omp_get_thread_num();
  int64_t per_thread = (total + nthreads - 1) / nthreads;
  per_thread = (per_thread + kChunkAlign - 1) / kChunkAlign * kChunkAlign;
  const int64_t lo = rank * per_thread < total ? rank * per_thread : total;
  const int64_t hi = lo + per_thread < total ? lo + per_thread : total;
  int64_t offset = 0;
  for (int64_t i = 0; i < count && offset < hi; ++i) {
    const int64_t size = size_of(i);
    const int64_t begin = lo > offset ? lo - offset : 0;
    const int64_t end = hi < offset + size ? hi - offset : size;
    if (begin < end) visit(i, begin, end);
    offset += size;
  }
}

template <class Rule, class T>
void update_my_chunk(const TensorArgs* tensors, int64_t count, const Prepared<Rule, T>* prepared, int64_t total) {
  using Variants = std::make_integer_sequence<int, Rule::num_variants>;
  for_my_chunk(count, total, [&](int64_t i) { return tensors[i].size; }, [&](int64_t i, int64_t begin, int64_t end) {
    update_variant<Rule, T>(prepared[i].variant, tensors[i], prepared[i].coeffs, begin, end, Variants{});
  });
}

// The fixed reduction blocks of a step's tensors (kReduceBlock elements; a tensor's last block may
// be shorter): tensor i owns blocks [first[i], first[i + 1]). Sums are taken per block and then
// added per tensor in block order, so they do not depend on how blocks are shared among threads.
struct Blocks {
  std::vector<int64_t> first;
  Blocks(const TensorArgs* tensors, int64_t count) : first(size_t(count) + 1, 0) {
    for (int64_t i = 0; i < count; ++i)
      first[i + 1] = first[i] + (tensors[i].size + kReduceBlock - 1) / kReduceBlock;
  }
  int64_t size() const { return first.back(); }
  // f(tensor index, begin, end, block index) for blocks [b_lo, b_hi), in order.
  template <class F>
  void visit(const TensorArgs* tensors, int64_t b_lo, int64_t b_hi, F&& f) const {
    int64_t i = 0;
    for (int64_t b = b_lo; b < b_hi; ++b) {
      while (first[i + 1] <= b) ++i;
      const int64_t begin = (b - first[i]) * kReduceBlock;
      const int64_t end = begin + kReduceBlock < tensors[i].size ? begin + kReduceBlock : tensors[i].size;
      f(i, begin, end, b);
    }
  }
  // Inside a parallel region: this thread's contiguous share [lo, hi) of the blocks.
  void my_share(int64_t& lo, int64_t& hi) const {
    const int64_t n = omp_get_num_threads(), rank = omp_get_thread_num();
    const int64_t per = (size() + n - 1) / n;
    lo = rank * per < size() ? rank * per : size();
    hi = lo + per < size() ? lo + per : size();
  }
};

// Rules with per-tensor reductions (LAMB's and LARS's norms): a reduction pass over fixed blocks,
// Rule::finish turning each tensor's sums into its coefficients, then the update pass, all in one
// parallel region (two barriers).
template <class Rule, class T>
void run_reduced(const TensorArgs* tensors, int64_t count, Prepared<Rule, T>* prepared, int64_t total,
                 int num_threads) {
  using Variants = std::make_integer_sequence<int, Rule::num_variants>;
  constexpr int R = Rule::num_reductions;
  const Blocks blocks(tensors, count);
  std::vector<double> block_sums(size_t(blocks.size() * R));
  auto reduce_blocks = [&](int64_t b_lo, int64_t b_hi) {
    blocks.visit(tensors, b_lo, b_hi, [&](int64_t i, int64_t begin, int64_t end, int64_t b) {
      reduce_variant<Rule, T>(prepared[i].variant, tensors[i], prepared[i].coeffs, begin, end, &block_sums[b * R],
                              Variants{});
    });
  };
  auto finish_all = [&] {
    for (int64_t i = 0; i < count; ++i) {
      double sums[R] = {};
      for (int64_t b = blocks.first[i]; b < blocks.first[i + 1]; ++b)
        for (int q = 0; q < R; ++q) sums[q] += block_sums[b * R + q];
      Rule::template finish<T>(prepared[i].coeffs, tensors[i].hyper, sums);
    }
  };

  if (num_threads <= 1 || total < kSerialThreshold || omp_in_parallel()) {
    reduce_blocks(0, blocks.size());
    finish_all();
    for (int64_t i = 0; i < count; ++i)
      update_variant<Rule, T>(prepared[i].variant, tensors[i], prepared[i].coeffs, 0, tensors[i].size, Variants{});
    return;
  }
#pragma omp parallel num_threads(team_size(total, num_threads))
  {
    int64_t b_lo, b_hi;
    blocks.my_share(b_lo, b_hi);
    reduce_blocks(b_lo, b_hi);
#pragma omp barrier
#pragma omp single
    finish_all();  // implicit barrier after single
    update_my_chunk<Rule, T>(tensors, count, prepared, total);
  }
}

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

  if constexpr (Rule::num_reductions > 0) {
    run_reduced<Rule, T>(tensors, count, prepared, total, num_threads);
    return;
  }
  const bool serial = num_threads <= 1 || total < kSerialThreshold || omp_in_parallel();
  if (serial) {
    for (int64_t i = 0; i < count; ++i)
      update_variant<Rule, T>(prepared[i].variant, tensors[i], prepared[i].coeffs, 0, tensors[i].size, Variants{});
    return;
  }
#pragma omp parallel num_threads(team_size(total, num_threads))
  update_my_chunk<Rule, T>(tensors, count, prepared, total);
}

}  // namespace driver
PYOPT_KERNEL_NAMESPACE_END
