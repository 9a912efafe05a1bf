#pragma once
// Optimistic Adam (Daskalakis et al., 2018, arXiv:1711.00141) as optax 0.2.8's
// optax.optimistic_adam_v2: scale_by_adam(nesterov) → scale_by_optimistic_gradient(α, β) → −lr.
//
//   g ← −g if maximize;  r = Adam's scaled direction (optax_adam_direction, rules/optax.hpp:
//   m, v, bias corrections, Nesterov momentum by default, ε outside and ε_root inside the root)
//   r_prev ← r at t = 1;  u = (α + β)·r − β·r_prev;  r_prev ← r;  p ← p + u·(−lr)
//
// optax 0.2.8 also keeps the deprecated optax.optimistic_adam(learning_rate, optimism): that is
// this rule with lr = 1, α = learning_rate and β = optimism (default: learning_rate). nesterov=True
// is optax's default here, unlike optax.adam's. optax's mu_dtype has no equivalent (see state_dtype).
#include "pyopt/rules/base.hpp"
#include "pyopt/rules/optax.hpp"

PYOPT_RULES_BEGIN

struct OptimisticAdam : RuleBase {
  static constexpr const char* name = "optimistic_adam";
  enum Hyper { lr, alpha, beta, beta1, beta2, eps, eps_root, nesterov, maximize, kNumHyper };
  static constexpr const char* slot_names[] = {"mu", "nu", "previous_gradient"};
  static constexpr bool maximize_policy = true;

  enum Variant { kNesterov = 1 };
  static constexpr int num_variants = 2;
  static int variant(const double* h) { return h[nesterov] != 0.0 ? kNesterov : 0; }
  static constexpr unsigned slot_mask(int) { return 0b111u; }

  template <class T> struct Coeffs {
    T beta1, one_minus_beta1, beta2, one_minus_beta2, inv_bc1, inv_bc1_next, inv_bc2, eps_root, eps;
    T alpha_plus_beta, beta, neg_lr;
    bool first;  // t = 1: the previous direction is the current one
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t t, double*) {
    return {T(h[beta1]), T(1.0 - h[beta1]), T(h[beta2]), T(1.0 - h[beta2]),
            optax_inverse_bias_correction<T>(h[beta1], t), optax_inverse_bias_correction<T>(h[beta1], t + 1),
            optax_inverse_bias_correction<T>(h[beta2], t), T(h[eps_root]), T(h[eps]),
            T(h[alpha] + h[beta]), T(h[beta]), T(-h[lr]), t == 1};
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    const T r = optax_adam_direction<(V & kNesterov) != 0>(g, s[0], s[1], k.beta1, k.one_minus_beta1, k.beta2,
                                                            k.one_minus_beta2, k.inv_bc1, k.inv_bc1_next, k.inv_bc2, k.eps_root,
                                                            k.eps);
    const T previous = k.first ? r : s[2];
    const T u = k.alpha_plus_beta * r - k.beta * previous;
    s[2] = r;
    p = p + u * k.neg_lr;
  }
};

PYOPT_RULES_END
