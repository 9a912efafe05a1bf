#pragma once
// What every rule is made of: a table of hyperparameters, state-slot names, and the small
// element-wise helpers rules share. rules/adam.hpp shows the anatomy of a rule.
//
// Everything here sits inside the per-ISA namespace (see config.hpp). Kernel translation units
// only odr-use the rules' prepare()/update(), so validation code is only ever emitted in the
// generic copy.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>

#include "pyopt/config.hpp"
#include "pyopt/types.hpp"

PYOPT_KERNEL_NAMESPACE_BEGIN
namespace rules {

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
template <class T>
PYOPT_INLINE T nan_max(T a, T b) {
  return ((a != a) | (a > b)) ? a : b;
}

// a + w·(b − a), the form torch's lerp uses for weights below 0.5.
template <class T>
PYOPT_INLINE T lerp(T a, T b, T w) {
  return a + w * (b - a);
}

}  // namespace rules
PYOPT_KERNEL_NAMESPACE_END
