#pragma once
// What the rules that follow optax 0.2.8 (adamaxw, optax_nadamw, optimistic_adam) share: optax's
// bias correction and its Adam direction, rounded as optax computes them on jax's CPU backend, op
// by op (unjitted; under jit XLA may contract a·b + c into an FMA). Two jax/XLA habits matter for
// the last bit: β^t with an integer t is binary exponentiation in the array's dtype, and a
// division by a scalar (a 0-d array, like a bias correction) is a multiply by its reciprocal,
// rounded in that dtype (x / y of two arrays is IEEE division).
#include "pyopt/rules/common.hpp"

PYOPT_RULES_BEGIN

// 1 − β^t as optax.tree.bias_correction computes it: `1 - decay**count`, with the int32 count,
// which jax evaluates by binary exponentiation in the moment's dtype (float32 without x64).
template <class T> T optax_bias_correction(double beta, int64_t t) {
  T base = T(beta), power = T(1);
  for (uint64_t n = uint64_t(t); n != 0; n >>= 1) {
    if (n & 1u) power = power * base;
    base = base * base;
  }
  return T(1) - power;
}

// 1 / (1 − β^t) in T: x / bias_correction is x · this on jax's CPU backend.
template <class T> T optax_inverse_bias_correction(double beta, int64_t t) {
  return T(1) / optax_bias_correction<T>(beta, t);
}

// optax.scale_by_adam (transform.py) for one element: updates m and v and returns the scaled
// direction m̂ / (√(v̂ + ε_root) + ε), every operation in optax's order. inv_bc1, inv_bc1_next,
// inv_bc2 are optax_inverse_bias_correction(β1, t), (β1, t + 1), (β2, t).
template <bool Nesterov, class T>
PYOPT_INLINE T optax_adam_direction(T g, T& m, T& v, T beta1, T one_minus_beta1, T beta2, T one_minus_beta2,
                                    T inv_bc1, T inv_bc1_next, T inv_bc2, T eps_root, T eps) {
  m = one_minus_beta1 * g + beta1 * m;
  v = one_minus_beta2 * (g * g) + beta2 * v;
  T m_hat;
  if constexpr (Nesterov)
    m_hat = beta1 * (m * inv_bc1_next) + one_minus_beta1 * (g * inv_bc1);
  else
    m_hat = m * inv_bc1;
  return m_hat / (std::sqrt(v * inv_bc2 + eps_root) + eps);
}

PYOPT_RULES_END
