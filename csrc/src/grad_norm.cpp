#include "pyopt/grad_norm.hpp"

#include <omp.h>

#include <vector>

#include "pyopt/driver/driver.hpp"
#include "pyopt/registry.hpp"

namespace pyopt {
namespace {

template <class T>
double block_sq_sum(const T* __restrict g, int64_t begin, int64_t end, T clip) {
  constexpr int L = driver::kReduceLanes;
  double lanes[L] = {};
  int64_t i = begin;
  for (; i + L <= end; i += L)
    for (int j = 0; j < L; ++j) {
      const double x = double(driver::clipped_grad(g[i + j], clip, T(1)));
      lanes[j] += x * x;
    }
  for (int j = 0; i + j < end; ++j) {
    const double x = double(driver::clipped_grad(g[i + j], clip, T(1)));
    lanes[j] += x * x;
  }
  for (int width = L / 2; width >= 1; width /= 2)
    for (int j = 0; j < width; ++j) lanes[j] = lanes[j] + lanes[j + width];
  return lanes[0];
}

template <class T>
void sq_sums(const TensorArgs* tensors, int64_t count, double* out) {
  constexpr int64_t B = driver::kReduceBlock;
  std::vector<int64_t> first_block(size_t(count) + 1, 0);
  int64_t total = 0;
  for (int64_t i = 0; i < count; ++i) {
    first_block[i + 1] = first_block[i] + (tensors[i].size + B - 1) / B;
    total += tensors[i].size;
  }
  const int64_t num_blocks = first_block[count];
  std::vector<double> block_sums(size_t(num_blocks), 0.0);
  auto run = [&](int64_t b_lo, int64_t b_hi) {
    int64_t i = 0;
    for (int64_t b = b_lo; b < b_hi; ++b) {
      while (first_block[i + 1] <= b) ++i;
      const int64_t begin = (b - first_block[i]) * B;
      const int64_t end = begin + B < tensors[i].size ? begin + B : tensors[i].size;
      block_sums[b] = block_sq_sum(static_cast<const T*>(tensors[i].grad), begin, end, T(tensors[i].grad_clip));
    }
  };
  const int threads = num_threads();
  if (threads <= 1 || total < driver::kSerialThreshold || omp_in_parallel()) {
    run(0, num_blocks);
  } else {
#pragma omp parallel num_threads(driver::team_size(total, threads))
    {
      const int64_t n = omp_get_num_threads(), rank = omp_get_thread_num();
      const int64_t per = (num_blocks + n - 1) / n;
      const int64_t lo = rank * per < num_blocks ? rank * per : num_blocks;
      run(lo, lo + per < num_blocks ? lo + per : num_blocks);
    }
  }
  for (int64_t i = 0; i < count; ++i) {
    double sum = 0.0;
    for (int64_t b = first_block[i]; b < first_block[i + 1]; ++b) sum += block_sums[b];
    out[i] = sum;
  }
}

}  // namespace

void grad_sq_sums(DType dtype, const TensorArgs* tensors, int64_t count, double* out) {
  if (dtype == DType::Float32)
    sq_sums<float>(tensors, count, out);
  else
    sq_sums<double>(tensors, count, out);
}

}  // namespace pyopt
