#pragma once
// NAdamW as optax 0.2.8 has it (optax.nadamw = optax.adamw(nesterov=True)): Adam with Dozat's
// (2016) Nesterov momentum at a constant β1, bias corrected, and decoupled weight decay
// (Loshchilov & Hutter, 2019): scale_by_adam(nesterov=True) → add_decayed_weights → −lr.
//
//   g ← −g if maximize;  m ← (1 − β1)·g + β1·m;  v ← (1 − β2)·g² + β2·v
//   m̂ = β1·m / (1 − β1^(t+1)) + (1 − β1)·g / (1 − β1^t);  v̂ = v / (1 − β2^t)
//   r = m̂ / (√(v̂ + ε_root) + ε);  r ← r + wd·p (when wd ≠ 0);  p ← p + r·(−lr)
//
// Named optax_nadamw because it is not torch's NAdam with decoupled decay (pyopt's nadam with
// decoupled_weight_decay=True): torch warms β1 up with its momentum_decay schedule
// μ_t = β1·(1 − ½·0.96^(t·ψ)) and keeps their running product; optax uses β1 itself. ε is
// outside the root as in torch, ε_root inside it; v̂ is v divided by its correction before the
// root (torch divides the root). optax's mu_dtype has no equivalent here (see state_dtype).
#include "pyopt/rules/base.hpp"
#include "pyopt/rules/optax.hpp"

PYOPT_RULES_BEGIN

struct OptaxNadamw : RuleBase {
  static constexpr const char* name = "optax_nadamw";
  enum Hyper { lr, beta1, beta2, eps, eps_root, weight_decay, maximize, kNumHyper };
  static constexpr const char* slot_names[] = {"mu", "nu"};
  static constexpr unsigned int8_slots = 0b11, nonnegative_slots = 0b10;
  static constexpr bool maximize_policy = true;

  // Own weight decay (optax adds wd·p to the update before the lr scaling; it skips a zero decay).
  enum Variant { kDecay = 1 };
  static constexpr int num_variants = 2;
  static int variant(const double* h) { return h[weight_decay] != 0.0 ? kDecay : 0; }
  static constexpr unsigned slot_mask(int) { return 0b11u; }

  template <class T> struct Coeffs {
    T beta1, one_minus_beta1, beta2, one_minus_beta2, inv_bc1, inv_bc1_next, inv_bc2, eps_root, eps, weight_decay, neg_lr;
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t t, double*) {
    return {T(h[beta1]), T(1.0 - h[beta1]), T(h[beta2]), T(1.0 - h[beta2]),
            optax_inverse_bias_correction<T>(h[beta1], t), optax_inverse_bias_correction<T>(h[beta1], t + 1),
            optax_inverse_bias_correction<T>(h[beta2], t), T(h[eps_root]), T(h[eps]), T(h[weight_decay]), T(-h[lr])};
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    T r = optax_adam_direction<true>(g, s[0], s[1], k.beta1, k.one_minus_beta1, k.beta2, k.one_minus_beta2, k.inv_bc1,
                                     k.inv_bc1_next, k.inv_bc2, k.eps_root, k.eps);
    if constexpr (V & kDecay) r = r + k.weight_decay * p;
    p = p + r * k.neg_lr;
  }
};

PYOPT_RULES_END
