#pragma once
// AdamaxW, Adamax (Kingma & Ba, 2015, §7.1) with decoupled weight decay (Loshchilov & Hutter, 2019),
// as optax 0.2.8 composes it: optax.adamaxw = scale_by_adamax → add_decayed_weights → −lr.
//
//   g ← −g if maximize;  m ← (1 − β1)·g + β1·m;  u ← max(|g| + ε, β2·u)
//   r = (m / (1 − β1^t)) / u;  r ← r + wd·p (when wd ≠ 0);  p ← p + r·(−lr)
//
// Not an alias of pyopt's adamax (torch.optim.Adamax): the same rule mathematically (with wd = 0),
// but torch folds lr/(1 − β1^t) into one scalar and updates m with lerp, and its decay is coupled;
// this rule rounds in optax's order, so float64 runs match optax to the last few ulps.
#include "pyopt/rules/base.hpp"
#include "pyopt/rules/optax.hpp"

PYOPT_RULES_BEGIN

struct Adamaxw : RuleBase {
  static constexpr const char* name = "adamaxw";
  enum Hyper { lr, beta1, beta2, eps, weight_decay, maximize, kNumHyper };
  static constexpr const char* slot_names[] = {"mu", "nu"};
  static constexpr unsigned int8_slots = 0b11, nonnegative_slots = 0b10;
  static constexpr bool maximize_policy = true;

  // Own weight decay (optax adds wd·p to the update before the lr scaling; it skips a zero decay).
  enum Variant { kDecay = 1 };
  static constexpr int num_variants = 2;
  static int variant(const double* h) { return h[weight_decay] != 0.0 ? kDecay : 0; }
  static constexpr unsigned slot_mask(int) { return 0b11u; }

  template <class T> struct Coeffs {
    T beta1, one_minus_beta1, beta2, eps, inv_bc1, weight_decay, neg_lr;
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t t, double*) {
    return {T(h[beta1]), T(1.0 - h[beta1]), T(h[beta2]), T(h[eps]),
            optax_inverse_bias_correction<T>(h[beta1], t), T(h[weight_decay]), T(-h[lr])};
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    T& m = s[0];
    T& u = s[1];
    m = k.one_minus_beta1 * g + k.beta1 * m;
    u = nan_max(std::fabs(g) + k.eps, k.beta2 * u);
    T r = (m * k.inv_bc1) / u;  // m / (1 − β1^t): jax multiplies by the reciprocal
    if constexpr (V & kDecay) r = r + k.weight_decay * p;
    p = p + r * k.neg_lr;
  }
};

PYOPT_RULES_END
