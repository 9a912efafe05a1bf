#pragma once
// Sums in a fixed order, so that a sum never depends on the thread count or the ISA path.
#include <omp.h>

#include <cstdint>
#include <vector>

#include "pyopt/config.hpp"

PYOPT_KERNEL_NAMESPACE_BEGIN
namespace driver {

// Σ f(i) for i in [begin, end), in double, left to right.
template <class F>
PYOPT_INLINE double sum_in_order(int64_t begin, int64_t end, F f) {
  double sum = 0.0;
  for (int64_t i = begin; i < end; ++i) sum += f(i);
  return sum;
}

// Σ f(i) for i in [0, n) with `team` threads: each block of `block` elements summed in order, then
// the blocks in order.
template <class F>
double blocked_sum(int64_t n, int64_t block, int team, F f) {
  const int64_t blocks = (n + block - 1) / block;
  std::vector<double> partial(size_t(blocks), 0.0);
#pragma omp parallel for num_threads(team) schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = b * block, end = begin + block < n ? begin + block : n;
    partial[b] = sum_in_order(begin, end, f);
  }
  return sum_in_order(0, blocks, [&](int64_t b) { return partial[b]; });
}

}  // namespace driver
PYOPT_KERNEL_NAMESPACE_END
