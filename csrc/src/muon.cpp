// Muon's step (equations in pyopt/muon.hpp), with the numerics of pyopt.Muon (pyopt/muon.py, which
// models torch 2.13): torch's lerp, the Newton-Schulz iteration in bfloat16 held in float32 (every
// GEMM a float32 sgemm on bfloat16 values, rounded to bfloat16; every addmm one float64 sum rounded
// to float32, then to bfloat16), and the final add in float64. Compiled with -ffp-contract=off:
// the additions are those of numpy, never fused.
#include "pyopt/muon.hpp"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "pyopt/registry.hpp"

#if defined(PYOPT_HAVE_BLAS)
// The Fortran BLAS (OpenBLAS, the reference BLAS, ...): column-major, arguments by reference, and
// gfortran's hidden lengths of the character arguments last (ignored by C implementations).
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                       const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                       const float* beta, float* c, const int* ldc, std::size_t transa_len, std::size_t transb_len);
#endif

namespace pyopt {

bool have_blas() {
#if defined(PYOPT_HAVE_BLAS)
  return true;
#else
  return false;
#endif
}

const char* muon_adjust_lr_name(MuonAdjustLr a) {
  switch (a) {
    case MuonAdjustLr::None: return "";
    case MuonAdjustLr::Original: return "original";
    case MuonAdjustLr::MatchRmsAdamW: return "match_rms_adamw";
  }
  return "";
}

namespace {

// float32 -> the nearest bfloat16 (ties to even; NaN stays NaN), as a float32.
float bf16(float x) {
  if (std::isnan(x)) return x;
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  u = (u + (((u >> 16) & 1u) + 0x7FFFu)) & 0xFFFF0000u;
  float r;
  std::memcpy(&r, &u, sizeof r);
  return r;
}

// torch.lerp(start, end, w) as its vectorized CPU kernel (and pyopt.muon._lerp): with the weight
// in T, fma(w, end − start, start) for |w| < 0.5, else fma(w − 1, end − start, end); float32 as one
// float64 multiply-add rounded once (what numpy computes), float64 unfused.
template <class T>
T lerp(T start, T end, T w) {
  const bool small = std::abs(w) < T(0.5);
  const T coeff = small ? w : w - T(1);
  const T base = small ? start : end;
  const T diff = end - start;
  if constexpr (sizeof(T) == sizeof(float)) return float(double(coeff) * double(diff) + double(base));
  else return coeff * diff + base;
}

#if defined(PYOPT_HAVE_BLAS)
int blas_int(int64_t n) {
  if (n > INT_MAX) throw std::invalid_argument("muon: a dimension of " + std::to_string(n) + " exceeds the BLAS's int");
  return int(n);
}

// Row-major c (m × n) = a (m × k) · op(b), op(b) = b (k × n) or, transpose_b, bᵀ (b n × k).
void gemm(const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t k, bool transpose_b) {
  // Column-major, this is cᵀ = op(b)ᵀ · aᵀ, and a row-major buffer is its transpose column-major.
  const int mi = blas_int(m), ni = blas_int(n), ki = blas_int(k);
  const int ldb = transpose_b ? std::max(ki, 1) : std::max(ni, 1), lda = std::max(ki, 1), ldc = std::max(ni, 1);
  const float one = 1.0f, zero = 0.0f;
  sgemm_(transpose_b ? "T" : "N", "N", &ni, &mi, &ki, &one, b, &ldb, a, &lda, &zero, c, &ldc, 1, 1);
}

// torch's norm of a bfloat16 matrix (pyopt.muon._bf16_norm): float32 squares summed (in float64
// here), the sum a float32, its square root rounded to bfloat16; one element: |x|.
float bf16_norm(const std::vector<float>& x) {
  if (x.size() == 1) return std::abs(x[0]);
  double total = 0.0;
  for (float v : x) total += double(v * v);
  return bf16(std::sqrt(float(total)));
}
#endif

// _zeropower_via_newtonschulz on a rows × cols matrix (row-major, bfloat16 values in float32), in place.
void newton_schulz(std::vector<float>& x, int64_t rows, int64_t cols, const MuonHyper& h) {
#if defined(PYOPT_HAVE_BLAS)
  const bool transposed = rows > cols;
  int64_t r = rows, c = cols;
  if (transposed) {  // work on xᵀ (r ≤ c): the Gram matrix is the small one
    std::vector<float> t(x.size());
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) t[std::size_t(j * rows + i)] = x[std::size_t(i * cols + j)];
    x.swap(t);
    std::swap(r, c);
  }
  const float norm = bf16(std::max(bf16_norm(x), float(h.eps)));  // NaN propagates, as np.maximum
  for (float& v : x) v = bf16(v / norm);
  const float a = float(h.ns_a), b = float(h.ns_b), cc = float(h.ns_c);
  std::vector<float> gram(std::size_t(r * r)), gram2(std::size_t(r * r)), next(x.size());
  for (int step = 0; step < h.ns_steps; ++step) {
    gemm(x.data(), x.data(), gram.data(), r, r, c, true);  // x xᵀ
    for (float& v : gram) v = bf16(v);
    gemm(gram.data(), gram.data(), gram2.data(), r, r, r, false);
    for (std::size_t i = 0; i < gram.size(); ++i)  // addmm(gram, gram, gram, beta=b, alpha=c)
      gram2[i] = bf16(float(double(b) * double(gram[i]) + double(cc * gram2[i])));
    gemm(gram2.data(), x.data(), next.data(), r, c, r, false);
    for (std::size_t i = 0; i < x.size(); ++i)  // addmm(x, gram_update, x, beta=a)
      x[i] = bf16(float(double(a) * double(x[i]) + double(next[i])));
  }
  if (transposed) {
    std::vector<float> t(x.size());
    for (int64_t i = 0; i < r; ++i)
      for (int64_t j = 0; j < c; ++j) t[std::size_t(j * r + i)] = x[std::size_t(i * c + j)];
    x.swap(t);
  }
#else
  (void)x, (void)rows, (void)cols, (void)h;
  throw std::logic_error("pyopt was built without a BLAS: no Muon");
#endif
}

}  // namespace

template <class T>
void muon_step(T* p, const T* g, T* buf, int64_t rows, int64_t cols, const MuonHyper& h) {
  if (!have_blas()) throw std::logic_error("pyopt was built without a BLAS: no Muon");
  const int64_t n = rows * cols;
  const T weight = T(1.0 - h.momentum), momentum = T(h.momentum);
  std::vector<float> x(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    buf[i] = lerp(buf[i], g[i], weight);  // buf.lerp_(grad, 1 − momentum)
    const T update = h.nesterov ? lerp(g[i], buf[i], momentum) : buf[i];
    x[std::size_t(i)] = bf16(float(update));  // .bfloat16(): float64 goes through float32
  }
  if (n == 0) return;
  newton_schulz(x, rows, cols, h);
  const double ratio = h.adjust_lr == MuonAdjustLr::MatchRmsAdamW
                           ? 0.2 * std::sqrt(double(std::max(rows, cols)))
                           : (cols ? std::sqrt(std::max(1.0, double(rows) / double(cols))) : 1.0);
  const double adjusted_lr = h.lr * ratio;
  const T decay = T(1.0 - h.lr * h.weight_decay);
  // p.mul_(1 − lr·wd); p.add_(X, alpha=−adjusted_lr), as pyopt.Muon: one float64 sum per element.
  const double alpha = sizeof(T) == sizeof(float) ? double(float(-adjusted_lr)) : -adjusted_lr;
  for (int64_t i = 0; i < n; ++i) {
    const T decayed = p[i] * decay;
    const double step = alpha * double(x[std::size_t(i)]);
    p[i] = T(double(decayed) + step);
  }
}

template void muon_step<float>(float*, const float*, float*, int64_t, int64_t, const MuonHyper&);
template void muon_step<double>(double*, const double*, double*, int64_t, int64_t, const MuonHyper&);

}  // namespace pyopt
