#pragma once
// QHAdam, quasi-hyperbolic Adam (Ma & Yarats, ICLR 2019, arXiv:1810.06801). Reference:
// pytorch-optimizer 4.1.0 QHAdam (optimizer/qhadam.py, per-param path).
//
//   g ← −g if maximize;  wd ≠ 0: weight_decouple ? p ← p·(1 − wd·(fixed_decay ? 1 : lr)) : g ← g + wd·p
//   w1 ← w1·β1 + 1;  w2 ← w2·β2 + 1          (per-tensor scalars, in float32 as the reference's
//                                             (1,)-shaped float32 state: w = Σ_{i<t} β^i)
//   m ← lerp(m, g, 1/w1);  v ← lerp(v, g², 1/w2)          (= bias-corrected EMAs, no separate debias)
//   u = ν1·m + (1 − ν1)·g  (only when ν1 ≠ 1; else u = m)
//   r = ν2·v (+ (1 − ν2)·g² when ν2 ≠ 1);  p ← p − lr·u / (√r + ε)
//
// Rounding: the lerp weights are reciprocal() of the float32 scalars, cast to the param dtype, so
// the lerp's form (|w| < 0.5 or not) changes over the steps (w = 1 at t = 1): it is a per-step flag.
// avg_grad = exp_avg.mul(ν1).add_(g, alpha=1 − ν1) = fmadd(1 − ν1, g, m·ν1);
// avg_grad_rms = exp_avg_sq.mul(ν2).add_(g², alpha=1 − ν2); p.addcdiv_(u, rms, value=−lr).
#include "pyopt/rules/base.hpp"

PYOPT_RULES_BEGIN

struct QHAdam : RuleBase {
  static constexpr const char* name = "qhadam";
  enum Hyper { lr, beta1, beta2, nu1, nu2, weight_decay, weight_decouple, fixed_decay, eps, maximize, kNumHyper };
  static constexpr const char* slot_names[] = {"exp_avg", "exp_avg_sq"};
  static constexpr bool maximize_policy = true;
  static constexpr Decay decay_policy = Decay::WeightDecouple;
  static constexpr int num_scalars = 2;
  static constexpr const char* scalar_name_list[] = {"beta1_weight", "beta2_weight"};
  static constexpr const char* const* scalar_names = scalar_name_list;

  enum Variant { kNu1 = 1, kNu2 = 2 };
  static constexpr int num_variants = 4;
  static int variant(const double* h) { return (h[nu1] != 1.0 ? kNu1 : 0) | (h[nu2] != 1.0 ? kNu2 : 0); }
  static constexpr unsigned slot_mask(int) { return 0b11u; }

  template <class T> struct Coeffs {
    T w1, w2, nu1, one_minus_nu1, nu2, one_minus_nu2, eps, neg_lr;
    bool w1_from_end, w2_from_end;
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t, double* scalars) {
    // beta_weight.mul_(β).add_(1.0), then .reciprocal(), all in float32; then .to(param dtype)
    const float w1 = float(scalars[0]) * float(h[beta1]) + 1.0f;
    const float w2 = float(scalars[1]) * float(h[beta2]) + 1.0f;
    scalars[0] = w1;
    scalars[1] = w2;
    const T r1 = T(1.0f / w1), r2 = T(1.0f / w2);
    return {tensor_lerp_coeff(r1), tensor_lerp_coeff(r2), T(h[nu1]), T(1.0 - h[nu1]), T(h[nu2]),
            T(1.0 - h[nu2]), T(h[eps]), T(-h[lr]), tensor_lerp_from_end(r1), tensor_lerp_from_end(r2)};
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    T& m = s[0];
    T& v = s[1];
    const T g2 = g * g;                                  // grad.pow(2)
    m = lerp_step(m, g, k.w1, k.w1_from_end);            // exp_avg.lerp_(grad, 1/w1)
    v = lerp_step(v, g2, k.w2, k.w2_from_end);           // exp_avg_sq.lerp_(grad_p2, 1/w2)
    T u = m;
    if constexpr (V & kNu1) u = fmadd(k.one_minus_nu1, g, m * k.nu1);  // exp_avg.mul(ν1).add_(g, 1 − ν1)
    T r = v * k.nu2;                                                    // exp_avg_sq.mul(ν2)
    if constexpr (V & kNu2) r = fmadd(k.one_minus_nu2, g2, r);          // .add_(grad_p2, 1 − ν2)
    const T denom = std::sqrt(r) + k.eps;
    p = p + (k.neg_lr * u) / denom;                                     // p.addcdiv_(u, rms, value=−lr)
  }
};

PYOPT_RULES_END
