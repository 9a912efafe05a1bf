#pragma once
// Adafactor's kernel (the equations are in pyopt/adafactor.hpp), compiled once per ISA like the
// rules. Its state is not shaped like the param, so it is not an element-wise rule: for each
// tensor, a reduction pass (‖p‖, row and column means of g², ‖update‖) and the update pass. Sums
// are taken in double in a fixed order (ordered_sum.hpp; rows in order, column partials per fixed
// block of rows), so the bits never depend on the thread count.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "pyopt/driver/driver.hpp"
#include "pyopt/driver/ordered_sum.hpp"
#include "pyopt/kernels.hpp"
#include "pyopt/rules/common.hpp"

PYOPT_KERNEL_NAMESPACE_BEGIN
namespace driver {

template <class T>
void adafactor(const AdafactorArgs& a, int num_threads) {
  constexpr int64_t kRowBlock = 32;  // column partial sums are kept per block of this many rows
  const int64_t n = a.size, batch = a.batch, rows = a.rows, cols = a.cols;
  if (n == 0) return;
  const AdafactorHyper& h = a.hyper;
  T* p = static_cast<T*>(a.param);
  const T* g = static_cast<const T*>(a.grad);
  T* row_var = static_cast<T*>(a.row_var);
  T* col_var = static_cast<T*>(a.col_var);
  T* variance = static_cast<T*>(a.variance);

  const double t = double(a.step);
  const double eps1 = h.eps1 < 0.0 ? double(std::numeric_limits<T>::epsilon()) : h.eps1;
  const double beta2 = std::pow(t, h.beta2_decay);  // the EMA weight β̂ = t^beta2_decay, as lerp_'s weight
  const bool ema_from_end = rules::lerp_from_end(beta2);
  const T ema_coeff = rules::lerp_coeff<T>(beta2);
  auto ema = [&](T old, T now) { return rules::lerp_step(old, now, ema_coeff, ema_from_end); };
  const double rho = std::min(h.lr, 1.0 / std::pow(t, 0.5));
  const T sign = h.maximize ? T(-1) : T(1);
  const int team = num_threads <= 1 || n < kSerialThreshold || omp_in_parallel() ? 1 : team_size(n, num_threads);

  // α from ‖p‖ before the decay.
  const double p_norm =
      std::sqrt(blocked_sum(n, kReduceBlock, team, [&](int64_t i) { return double(p[i]) * double(p[i]); }));
  const double alpha = std::max(h.eps2, p_norm / std::sqrt(double(n))) * rho;
  if (h.weight_decay != 0.0) {
    const T decay = T(1.0 - h.lr * h.weight_decay);
#pragma omp parallel for num_threads(team) schedule(static)
    for (int64_t i = 0; i < n; ++i) p[i] = p[i] * decay;
  }

  const T floor = T(eps1 * eps1);
  std::vector<T> row_mean_floor(size_t(rows > 0 ? batch : 0));  // max(mean_r R[b, :], eps1) per batch
  if (rows > 0) {
    // Row means of g² (one row per iteration) and column sums per fixed block of rows.
    const int64_t blocks_per_batch = (rows + kRowBlock - 1) / kRowBlock;
    std::vector<double> col_partial(size_t(batch * blocks_per_batch * cols), 0.0);
#pragma omp parallel for num_threads(team) schedule(static)
    for (int64_t blk = 0; blk < batch * blocks_per_batch; ++blk) {
      const int64_t b = blk / blocks_per_batch;
      const int64_t r0 = (blk % blocks_per_batch) * kRowBlock, r1 = std::min(rows, r0 + kRowBlock);
      double* partial = &col_partial[size_t(blk * cols)];
      for (int64_t r = r0; r < r1; ++r) {
        const T* gr = g + (b * rows + r) * cols;
        for (int64_t c = 0; c < cols; ++c) partial[c] += double(gr[c]) * double(gr[c]);
        const double s = sum_in_order(0, cols, [&](int64_t c) { return double(gr[c]) * double(gr[c]); });
        T& rv = row_var[b * rows + r];
        rv = ema(rv, T(s / double(cols)));  // row_var.lerp_(norm(g, dim=-1)² / cols, β̂)
      }
    }
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t c = 0; c < cols; ++c) {
        const double s = sum_in_order(0, blocks_per_batch, [&](int64_t k) {
          return col_partial[size_t((b * blocks_per_batch + k) * cols + c)];
        });
        T& cv = col_var[b * cols + c];
        cv = ema(cv, T(s / double(rows)));  // col_var.lerp_(norm(g, dim=-2)² / rows, β̂)
      }
      const double row_sum = sum_in_order(0, rows, [&](int64_t r) { return double(row_var[b * rows + r]); });
      const double mean = row_sum / double(rows);
      row_mean_floor[size_t(b)] = T(std::max(mean, eps1));  // row_var.mean(-2).clamp_(min=eps1)
    }
  } else {
#pragma omp parallel for num_threads(team) schedule(static)
    for (int64_t i = 0; i < n; ++i) variance[i] = ema(variance[i], g[i] * g[i]);  // variance.lerp_(g², β̂)
  }

  // u = g / √max(V, eps1²), V = (R[r]·C[c]) / max(mean R, eps1) or the variance.
  auto update_of = [&](int64_t i) -> T {
    T v;
    if (rows > 0) {
      const int64_t row = i / cols, b = row / rows;
      v = (row_var[row] * col_var[b * cols + i % cols]) / row_mean_floor[size_t(b)];
    } else {
      v = variance[i];
    }
    v = v < floor ? floor : v;                     // var_estimate.clamp_(min=eps1²), NaN kept
    return (T(1) / std::sqrt(v)) * (g[i] * sign);  // .rsqrt_().mul_(grad)
  };
  const double u_norm = std::sqrt(blocked_sum(n, kReduceBlock, team, [&](int64_t i) {
    const double u = double(update_of(i));
    return u * u;
  }));
  const double denom = std::max(1.0, u_norm / (std::sqrt(double(n)) * h.d));
  const T coeff = T(-alpha / denom);
#pragma omp parallel for num_threads(team) schedule(static)
  for (int64_t i = 0; i < n; ++i) p[i] = rules::fmadd(coeff, update_of(i), p[i]);  // p.add_(u, alpha=−α/denom)
}

}  // namespace driver
PYOPT_KERNEL_NAMESPACE_END
