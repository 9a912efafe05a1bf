#pragma once
// LARS, layer-wise adaptive rate scaling (You, Gitman & Ginsburg, 2017, arXiv:1708.03888), in the
// form optax.lars implements it: add_decayed_weights → scale_by_trust_ratio(η, ε) → −lr → trace(μ).
//
//   g ← −g if maximize;  u ← g + wd·p
//   trust ← η‖p‖ / (‖u‖ + ε) per tensor (1 when either norm is 0);  u ← −lr·trust·u
//   b ← u + μ·b;  p ← p + (nesterov ? u + μ·b : b)
//
// optax's trace holds the already negated step, so b (momentum_buffer) is −1× torch's convention.
// Exclude biases and norm scales with a param group (pyopt.param_groups) as the paper does.
#include "pyopt/rules/base.hpp"

PYOPT_RULES_BEGIN

struct Lars : RuleBase {
  static constexpr const char* name = "lars";
  enum Hyper { lr, momentum, weight_decay, trust_coefficient, eps, nesterov, maximize, kNumHyper };
  static constexpr const char* slot_names[] = {"momentum_buffer"};
  static constexpr bool maximize_policy = true;
  static constexpr int num_reductions = 2;  // Σp², Σu²

  // Own weight decay: u = g + wd·p unfused (the reference's op), not the driver's fmadd.
  enum Variant { kDecay = 1, kMomentum = 2, kNesterov = 4 };
  static constexpr int num_variants = 8;
  static int variant(const double* h) {
    int v = h[weight_decay] != 0.0 ? kDecay : 0;
    if (h[momentum] != 0.0) v |= h[nesterov] != 0.0 ? (kMomentum | kNesterov) : kMomentum;
    return v;
  }
  static constexpr unsigned slot_mask(int v) { return (v & kMomentum) ? 0b1u : 0u; }

  template <class T> struct Coeffs {
    T weight_decay, momentum, neg_lr;
    T trust;  // set by finish()
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t, double*) {
    return {T(h[weight_decay]), T(h[momentum]), T(-h[lr]), T(1)};
  }

  template <int V, class T> static PYOPT_INLINE T direction(const Coeffs<T>& k, T p, T g) {
    if constexpr (V & kDecay) g = g + k.weight_decay * p;
    return g;
  }

  template <int V, class T> static PYOPT_INLINE void reduce(const Coeffs<T>& k, T p, T g, T*, T* r) {
    const T u = direction<V>(k, p, g);
    r[0] = p * p;
    r[1] = u * u;
  }

  template <class T> static void finish(Coeffs<T>& k, const double* h, const double* sums) {
    const double param_norm = std::sqrt(sums[0]);
    const double update_norm = std::sqrt(sums[1]);
    k.trust = (param_norm == 0.0 || update_norm == 0.0)
                  ? T(1)
                  : T(h[trust_coefficient] * param_norm / (update_norm + h[eps]));
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    const T u = (direction<V>(k, p, g) * k.trust) * k.neg_lr;
    if constexpr (V & kMomentum) {
      s[0] = u + k.momentum * s[0];
      p = p + ((V & kNesterov) ? u + k.momentum * s[0] : s[0]);
    } else {
      p = p + u;
    }
  }
};

PYOPT_RULES_END
