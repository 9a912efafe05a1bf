#include "pyopt/adafactor.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "pyopt/driver/driver.hpp"
#include "pyopt/registry.hpp"

namespace pyopt {
namespace {

constexpr int64_t kRowBlock = 32;  // column partial sums are kept per block of this many rows

// torch.lerp's rounding (rules/common.hpp): start + w·(end − start), or end − (1 − w)·(end − start).
template <class T>
struct Lerp {
  bool from_end;
  T coeff;
  explicit Lerp(double w) : from_end(!(std::fabs(float(w)) < 0.5f)), coeff(from_end ? T(w) - T(1) : T(w)) {}
  T operator()(T start, T end) const { return std::fma(coeff, end - start, from_end ? end : start); }
};

int team_for(int64_t work) {
  const int threads = num_threads();
  if (threads <= 1 || work < driver::kSerialThreshold || omp_in_parallel()) return 1;
  return driver::team_size(work, threads);
}

// Sum of f(i) over [0, n) in double, in fixed blocks summed in order (thread-count independent).
template <class F>
double ordered_sum(int64_t n, int team, F f) {
  constexpr int64_t B = driver::kReduceBlock;
  const int64_t blocks = (n + B - 1) / B;
  std::vector<double> partial(size_t(blocks), 0.0);
#pragma omp parallel for num_threads(team) schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    double s = 0.0;
    const int64_t end = std::min(n, (b + 1) * B);
    for (int64_t i = b * B; i < end; ++i) s += f(i);
    partial[b] = s;
  }
  double total = 0.0;
  for (double s : partial) total += s;
  return total;
}

}  // namespace

void validate_adafactor(const AdafactorHyper& h) {
  auto bad = [](const char* name, double v, const char* rule) {
    throw std::invalid_argument(std::string("invalid ") + name + ": " + std::to_string(v) + " (" + rule + ")");
  };
  if (!(h.lr >= 0.0)) bad("lr", h.lr, "must be >= 0");
  if (!(h.beta2_decay <= 0.0)) bad("beta2_decay", h.beta2_decay, "must be <= 0");
  if (!(h.eps1 >= 0.0) && h.eps1 != -1.0) bad("eps[0]", h.eps1, "must be >= 0 or None");
  if (!(h.eps2 >= 0.0)) bad("eps[1]", h.eps2, "must be >= 0");
  if (!(h.d >= 1.0)) bad("d", h.d, "must be >= 1, the clipping threshold");
  if (!(h.weight_decay >= 0.0)) bad("weight_decay", h.weight_decay, "must be >= 0");
}

template <class T>
void adafactor_step(T* p, const T* g, T* row_var, T* col_var, T* variance, int64_t batch, int64_t rows,
                    int64_t cols, int64_t n, int64_t step, const AdafactorHyper& h) {
  if (n == 0) return;
  const double t = double(step);
  const double eps1 = h.eps1 < 0.0 ? double(std::numeric_limits<T>::epsilon()) : h.eps1;
  const Lerp<T> ema(std::pow(t, h.beta2_decay));  // weight β̂ = t^beta2_decay
  const double rho = std::min(h.lr, 1.0 / std::pow(t, 0.5));
  const T sign = h.maximize ? T(-1) : T(1);
  const int team = team_for(n);

  // α from ‖p‖ before the decay.
  const double p_norm = std::sqrt(ordered_sum(n, team, [&](int64_t i) { return double(p[i]) * double(p[i]); }));
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
        double s = 0.0;
        for (int64_t c = 0; c < cols; ++c) {
          const double x = double(gr[c]) * double(gr[c]);
          s += x;
          partial[c] += x;
        }
        T& rv = row_var[b * rows + r];
        rv = ema(rv, T(s / double(cols)));  // row_var.lerp_(norm(g, dim=-1)² / cols, β̂)
      }
    }
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t c = 0; c < cols; ++c) {
        double s = 0.0;
        for (int64_t k = 0; k < blocks_per_batch; ++k) s += col_partial[size_t((b * blocks_per_batch + k) * cols + c)];
        T& cv = col_var[b * cols + c];
        cv = ema(cv, T(s / double(rows)));  // col_var.lerp_(norm(g, dim=-2)² / rows, β̂)
      }
      double mean = 0.0;
      for (int64_t r = 0; r < rows; ++r) mean += double(row_var[b * rows + r]);
      row_mean_floor[size_t(b)] = T(std::max(mean / double(rows), eps1));  // row_var.mean(-2).clamp_(min=eps1)
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
    v = v < floor ? floor : v;               // var_estimate.clamp_(min=eps1²), NaN kept
    return (T(1) / std::sqrt(v)) * (g[i] * sign);  // .rsqrt_().mul_(grad)
  };
  const double u_norm = std::sqrt(ordered_sum(n, team, [&](int64_t i) {
    const double u = double(update_of(i));
    return u * u;
  }));
  const double denom = std::max(1.0, u_norm / (std::sqrt(double(n)) * h.d));
  const T coeff = T(-alpha / denom);
#pragma omp parallel for num_threads(team) schedule(static)
  for (int64_t i = 0; i < n; ++i) p[i] = std::fma(coeff, update_of(i), p[i]);  // p.add_(u, alpha=−α/denom)
}

template void adafactor_step<float>(float*, const float*, float*, float*, float*, int64_t, int64_t, int64_t, int64_t,
                                    int64_t, const AdafactorHyper&);
template void adafactor_step<double>(double*, const double*, double*, double*, double*, int64_t, int64_t, int64_t,
                                     int64_t, int64_t, const AdafactorHyper&);

}  // namespace pyopt
