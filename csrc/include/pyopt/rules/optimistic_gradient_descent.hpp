#pragma once
// Optimistic gradient descent (Popov, 1980; Mokhtari, Ozdaglar & Pattathil, 2019,
// arXiv:1901.08511), generalized with α and β as optax 0.2.8's optax.optimistic_gradient_descent:
// scale_by_optimistic_gradient(α, β) → −lr.
//
//   g ← −g if maximize;  g_prev ← g at t = 1;  u = (α + β)·g − β·g_prev;  g_prev ← g
//   p ← p + u·(−lr)
//
// At the first step optax uses the current gradient as the previous one (optax issue #1082), so
// the step is α·g (rounded as (α + β)·g − β·g). α and β are constants here (optax also takes
// schedules: set them per step through param_groups).
#include "pyopt/rules/base.hpp"

PYOPT_RULES_BEGIN

struct OptimisticGradientDescent : RuleBase {
  static constexpr const char* name = "optimistic_gradient_descent";
  enum Hyper { lr, alpha, beta, maximize, kNumHyper };
  static constexpr const char* slot_names[] = {"previous_gradient"};
  static constexpr bool maximize_policy = true;
  static constexpr unsigned slot_mask(int) { return 0b1u; }

  template <class T> struct Coeffs {
    T alpha_plus_beta, beta, neg_lr;
    bool first;  // t = 1: the previous gradient is the current one
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t t, double*) {
    return {T(h[alpha] + h[beta]), T(h[beta]), T(-h[lr]), t == 1};
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    const T previous = k.first ? g : s[0];
    const T u = k.alpha_plus_beta * g - k.beta * previous;
    s[0] = g;
    p = p + u * k.neg_lr;
  }
};

PYOPT_RULES_END
