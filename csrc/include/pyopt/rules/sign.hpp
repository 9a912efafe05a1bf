#pragma once
// sign(x) for the sign-based rules (Lion, Grams, signSGD): +1, −1, or 0 for ±0 — and 0 for NaN,
// as torch.sign / Tensor.sgn_ give on CPU (torch 2.13: sign(nan) = 0). Written as two compares
// converted to T and subtracted: branch-free, no libm call, so the loops stay vectorized.
#include "pyopt/rules/common.hpp"

PYOPT_RULES_BEGIN

template <class T> PYOPT_INLINE T sign(T x) {
  return T(x > T(0)) - T(x < T(0));
}

PYOPT_RULES_END
