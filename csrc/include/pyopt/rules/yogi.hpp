#pragma once
// Yogi (Zaheer et al., NeurIPS 2018): Adam whose second moment moves additively toward g²,
// v ← v − (1 − β2)·sign(v − g²)·g². Reference: pytorch-optimizer 4.1.0 Yogi (optimizer/yogi.py,
// per-param path, adam_debias=False).
//
//   g ← −g if maximize;  wd ≠ 0: weight_decouple ? p ← p·(1 − wd·(fixed_decay ? 1 : lr)) : g ← g + wd·p
//   m ← lerp(m, g, 1 − β1);  v ← v − (1 − β2)·sign(v − g²)·g²      (m, v start at initial_accumulator)
//   p ← p − (lr/(1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)             (ε = 1e-3 by default, outside)
#include "pyopt/rules/base.hpp"
#include "pyopt/rules/sign.hpp"

PYOPT_RULES_BEGIN

struct Yogi : RuleBase {
  static constexpr const char* name = "yogi";
  enum Hyper {
    lr, beta1, beta2, initial_accumulator, weight_decay, weight_decouple, fixed_decay, eps, maximize, kNumHyper
  };
  static constexpr const char* slot_names[] = {"exp_avg", "exp_avg_sq"};
  static constexpr bool maximize_policy = true;
  static constexpr Decay decay_policy = Decay::WeightDecouple;
  static double initial_state(int, const double* h) { return h[initial_accumulator]; }

  enum Variant { kLerpFromEnd = 1 };
  static constexpr int num_variants = 2;
  static int variant(const double* h) { return lerp_from_end(1.0 - h[beta1]) ? kLerpFromEnd : 0; }
  static constexpr unsigned slot_mask(int) { return 0b11u; }

  template <class T> struct Coeffs {
    T beta1_weight, neg_one_minus_beta2, bc2_sqrt, eps, neg_step_size;
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t t, double*) {
    const double bc1 = 1.0 - std::pow(h[beta1], double(t));
    const double bc2 = 1.0 - std::pow(h[beta2], double(t));
    return {lerp_coeff<T>(1.0 - h[beta1]), T(-(1.0 - h[beta2])), T(std::sqrt(bc2)), T(h[eps]),
            T(-(h[lr] / bc1))};
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    T& m = s[0];
    T& v = s[1];
    const T g2 = g * g;                                          // grad.mul(grad)
    m = lerp<(V & kLerpFromEnd) != 0>(m, g, k.beta1_weight);     // exp_avg.lerp_(grad, 1 − β1)
    v = fmadd(k.neg_one_minus_beta2 * sign(v - g2), g2, v);     // addcmul_((v − g²).sign_(), g², −(1 − β2))
    const T denom = std::sqrt(v) / k.bc2_sqrt + k.eps;          // sqrt().div_(bc2_sq).add_(eps)
    p = p + (k.neg_step_size * m) / denom;                      // p.addcdiv_(exp_avg, de_nom, −step_size)
  }
};

PYOPT_RULES_END
