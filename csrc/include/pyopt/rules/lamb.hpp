#pragma once
// LAMB, layer-wise adaptive moments (You et al., 2020, arXiv:1904.00962, Algorithm 2), in the form
// optax.lamb implements it: scale_by_adam → add_decayed_weights → scale_by_trust_ratio → −lr.
//
//   g ← −g if maximize;  m ← (1 − β1)·g + β1·m;  v ← (1 − β2)·g² + β2·v
//   u ← (m / (1 − β1^t)) / (√(v / (1 − β2^t)) + ε) + wd·p
//   trust ← ‖p‖ / ‖u‖ per tensor (1 when either norm is 0);  p ← p − lr·trust·u
//
// The norms need the whole tensor's u, so this rule has a reduction pass (reduce: update m and v,
// yield p² and u²) before the update pass (recompute u from the new m and v, apply it).
// pytorch-optimizer's Lamb differs (no second bias correction, decay before the ratio, ‖p‖
// clamped at 10); this is the paper's and optax's rule.
#include "pyopt/rules/base.hpp"

PYOPT_RULES_BEGIN

struct Lamb : RuleBase {
  static constexpr const char* name = "lamb";
  enum Hyper { lr, beta1, beta2, eps, weight_decay, maximize, kNumHyper };
  static constexpr const char* slot_names[] = {"exp_avg", "exp_avg_sq"};
  static constexpr bool maximize_policy = true;
  static constexpr int num_reductions = 2;  // Σp², Σu²

  // Own weight decay: added to the Adam direction u (unfused), not to g.
  enum Variant { kDecay = 1 };
  static constexpr int num_variants = 2;
  static int variant(const double* h) { return h[weight_decay] != 0.0 ? kDecay : 0; }
  static constexpr unsigned slot_mask(int) { return 0b11u; }

  template <class T> struct Coeffs {
    T beta1, one_minus_beta1, beta2, one_minus_beta2, bc1, bc2, eps, weight_decay;
    T trust, neg_lr;  // set by finish()
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t t, double*) {
    return {T(h[beta1]), T(1.0 - h[beta1]), T(h[beta2]), T(1.0 - h[beta2]),
            T(1.0 - std::pow(h[beta1], double(t))), T(1.0 - std::pow(h[beta2], double(t))), T(h[eps]),
            T(h[weight_decay]), T(1), T(-h[lr])};
  }

  template <int V, class T> static PYOPT_INLINE T direction(const Coeffs<T>& k, T p, const T* s) {
    T u = (s[0] / k.bc1) / (std::sqrt(s[1] / k.bc2) + k.eps);
    if constexpr (V & kDecay) u = u + k.weight_decay * p;
    return u;
  }

  template <int V, class T> static PYOPT_INLINE void reduce(const Coeffs<T>& k, T p, T g, T* s, T* r) {
    s[0] = k.one_minus_beta1 * g + k.beta1 * s[0];
    s[1] = k.one_minus_beta2 * (g * g) + k.beta2 * s[1];
    const T u = direction<V>(k, p, s);
    r[0] = p * p;
    r[1] = u * u;
  }

  template <class T> static void finish(Coeffs<T>& k, const double*, const double* sums) {
    const double param_norm = std::sqrt(sums[0]);
    const double update_norm = std::sqrt(sums[1]);
    k.trust = (param_norm == 0.0 || update_norm == 0.0) ? T(1) : T(param_norm / update_norm);
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T, T* s) {
    p = p + (direction<V>(k, p, s) * k.trust) * k.neg_lr;
  }
};

PYOPT_RULES_END
