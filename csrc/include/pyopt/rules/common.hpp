#pragma once
// The small element-wise helpers rules share. rules/base.hpp shows the anatomy of a rule.
//
// Everything here sits inside the per-ISA namespace (see config.hpp). Kernel translation units
// only odr-use the rules' prepare()/update(), so check code is only ever emitted in the generic copy.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>

#include "pyopt/config.hpp"
#include "pyopt/types.hpp"

PYOPT_RULES_BEGIN

// Hyperparameter checks. Messages name the hyperparameter and the bad value;
// `!(x >= lo)` is written so that NaN is rejected too.
inline std::string format_value(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}
inline void require_nonnegative(const char* name, double v) {
  if (!(v >= 0.0))
    throw std::invalid_argument(std::string("invalid ") + name + ": " + format_value(v) + " (must be >= 0)");
}
inline void require_beta(const char* name, double v) {
  if (!(v >= 0.0 && v < 1.0))
    throw std::invalid_argument(std::string("invalid ") + name + ": " + format_value(v) + " (must be in [0, 1))");
}
inline void require_closed_unit(const char* name, double v) {
  if (!(v >= 0.0 && v <= 1.0))
    throw std::invalid_argument(std::string("invalid ") + name + ": " + format_value(v) + " (must be in [0, 1])");
}
inline void require_finite(const char* name, double v) {
  if (!std::isfinite(v))
    throw std::invalid_argument(std::string("invalid ") + name + ": " + format_value(v) + " (must be finite)");
}

// max that returns NaN when either side is NaN, as torch.maximum does (std::max does not).
// Both comparisons are always evaluated (`|`, not `||`): a comparison that only runs when the
// other is false may trap on NaN, so GCC would not if-convert it and the loop would not vectorize
// on AVX2 or SSE.
template <class T> PYOPT_INLINE T nan_max(T a, T b) {
  return ((a != a) | (a > b)) ? a : b;
}

// Matching torch's rounding. The kernels are built with -ffp-contract=off, so every fused
// multiply-add is deliberate: fmadd() is one where torch's CPU kernels fuse (their Vectorized
// fmadd, and GCC contracting their scalar tails). Verified bit for bit against torch 2.13 on
// float32 and float64, tensor sizes 1 to 100003:
//   t.add_(x, alpha=a)              fmadd(a, x, t)
//   s.addcmul_(x, y, value=c)       fmadd(c·x, y, s)         (c·x rounded first)
//   p.addcdiv_(x, y, value=c)       p + (c·x)/y               (not c·(x/y), and not fused)
//   a.lerp_(b, w)                   see lerp() below
//   x * c, x / c, x.div(c)          x·T(c), x/T(c)            (a Python double rounded to T first)
//   c / x                           (1/x)·T(c)                (Tensor.__rtruediv__ is reciprocal() * c)
// Without hardware FMA (the x86-64-v2 baseline build) fmadd() is a multiply and an add, as torch's
// Vectorized fmadd is on such a CPU; a libm fma call per element would be ~10x slower.
#if defined(__FMA__) || defined(__ARM_FEATURE_FMA) || (defined(_MSC_VER) && defined(__AVX2__))
#define PYOPT_RULES_FUSED_MULTIPLY_ADD 1
#else
#define PYOPT_RULES_FUSED_MULTIPLY_ADD 0
#endif

// a·b + c, rounded once where the hardware has FMA, twice where it does not.
template <class T> PYOPT_INLINE T fmadd(T a, T b, T c) {
#if PYOPT_RULES_FUSED_MULTIPLY_ADD
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}

// lerp(a, b, w) = a + w·(b − a), rounded as torch.lerp rounds it. torch has two forms, both one
// fused multiply-add: a + w·(b − a) for |w| < 0.5, else b − (1 − w)·(b − a), which it computes as
// b + (w − 1)·(b − a). The form depends only on w, so rules make it a variant bit (a compile-time
// specialisation: a per-element select costs ~10% on the SSE path): lerp_from_end(w) picks the
// form, lerp_coeff<T>(w) is its coefficient, T(w) or T(w) − 1 computed in T, as torch does.
// The form is chosen by the float32 weight, as torch's float32 lerp chooses it; a float64 weight
// within 2^-26 below 0.5 (it rounds to 0.5f) takes the other form than torch's float64 lerp.
inline bool lerp_from_end(double w) { return !(std::fabs(float(w)) < 0.5f); }
template <class T> T lerp_coeff(double w) {
  return lerp_from_end(w) ? T(w) - T(1) : T(w);
}
template <bool FromEnd, class T> PYOPT_INLINE T lerp(T a, T b, T coeff) {
  return fmadd(coeff, b - a, FromEnd ? b : a);
}

// lerp whose weight changes with the step (QHAdam's 1/Σβ^i, AdEMAMix's scheduled β3, StableAdamW's
// debiased β1), so its form can too: `from_end` is a per-step (loop-invariant) flag from prepare(),
// and `coeff` is lerp_coeff of the weight, or, for a weight already in T (a 0-dim tensor weight),
// tensor_lerp_coeff.
template <class T> PYOPT_INLINE T lerp_step(T a, T b, T coeff, bool from_end) {
  return fmadd(coeff, b - a, from_end ? b : a);
}
template <class T> bool tensor_lerp_from_end(T w) {
  return !(std::fabs(w) < T(0.5));
}
template <class T> T tensor_lerp_coeff(T w) {
  return tensor_lerp_from_end(w) ? w - T(1) : w;
}

PYOPT_RULES_END
