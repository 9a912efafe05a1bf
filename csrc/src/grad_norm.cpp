#include "pyopt/grad_norm.hpp"

#include <omp.h>

#include <type_traits>
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
  const driver::Blocks blocks(tensors, count);
  int64_t total = 0;
  for (int64_t i = 0; i < count; ++i) total += tensors[i].size;
  std::vector<double> block_sums(size_t(blocks.size()), 0.0);
  auto run = [&](int64_t b_lo, int64_t b_hi) {
    blocks.visit(tensors, b_lo, b_hi, [&](int64_t i, int64_t begin, int64_t end, int64_t b) {
      const TensorArgs& a = tensors[i];
      if constexpr (std::is_same<T, float>::value) {
        if (a.grad_storage != Storage::Compute) {  // 16-bit grads: the sums of their float32 values
          float values[driver::kReduceBlock];
          storage::load_floats(a.grad_storage, a.grad, begin, end - begin, values);
          block_sums[b] = block_sq_sum(values, 0, end - begin, float(a.grad_clip));
          return;
        }
      }
      block_sums[b] = block_sq_sum(static_cast<const T*>(a.grad), begin, end, T(a.grad_clip));
    });
  };
  const int threads = num_threads();
  if (threads <= 1 || total < driver::kSerialThreshold || omp_in_parallel()) {
    run(0, blocks.size());
  } else {
#pragma omp parallel num_threads(driver::team_size(total, threads))
    {
      int64_t lo, hi;
      blocks.my_share(lo, hi);
      run(lo, hi);
    }
  }
  for (int64_t i = 0; i < count; ++i) {
    double sum = 0.0;
    for (int64_t b = blocks.first[i]; b < blocks.first[i + 1]; ++b) sum += block_sums[b];
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
