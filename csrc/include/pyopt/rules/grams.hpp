#pragma once
// Grams, Gradient Descent with Adaptive Momentum Scaling (Cao, Li & Song, 2024, arXiv:2412.17107).
// Reference: the official code, Gunale0926/Grams grams.py (PyPI grams-pytorch 0.0.2), correct_bias=True.
//
//   g ← −g if maximize;  p ← p − lr·wd·p (decoupled, before the moments)
//   m ← β1·m + (1 − β1)·g;  v ← β2·v + (1 − β2)·g²;  denom = √v + ε   (ε outside, not bias-corrected)
//   p ← p − (lr·√(1 − β2^t)/(1 − β1^t)) · sign(g)·|m| / denom
//
// The paper puts ε after the bias correction (√v̂ + ε); the official code is the form above.
// Operation order as its torch calls: p.add_(p, alpha=−lr·wd), exp_avg.mul_(β1).add_(g, alpha=1 − β1),
// exp_avg_sq.mul_(β2).addcmul_(g, g, value=1 − β2), exp_avg_sq.sqrt().add_(ε),
// g.sign_().mul_(exp_avg.abs()), p.addcdiv_(g, denom, value=−step_size).
#include "pyopt/rules/base.hpp"
#include "pyopt/rules/sign.hpp"

PYOPT_RULES_BEGIN

struct Grams : RuleBase {
  static constexpr const char* name = "grams";
  enum Hyper { lr, beta1, beta2, eps, weight_decay, maximize, kNumHyper };
  static constexpr const char* slot_names[] = {"exp_avg", "exp_avg_sq"};
  static constexpr bool maximize_policy = true;

  // The official code decays only when weight_decay > 0.
  // Own weight decay: p + (−lr·wd)·p in one fma, not the driver's p·(1 − lr·wd).
  enum Variant { kDecay = 1 };
  static constexpr int num_variants = 2;
  static int variant(const double* h) { return h[weight_decay] > 0.0 ? kDecay : 0; }
  static constexpr unsigned slot_mask(int) { return 0b11u; }

  template <class T> struct Coeffs {
    T neg_lr_wd, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, neg_step_size;
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t t, double*) {
    const double bc1 = 1.0 - std::pow(h[beta1], double(t));
    const double bc2 = 1.0 - std::pow(h[beta2], double(t));
    return {T(-h[lr] * h[weight_decay]),
            T(h[beta1]),
            T(1.0 - h[beta1]),
            T(h[beta2]),
            T(1.0 - h[beta2]),
            T(h[eps]),
            T(-(h[lr] * std::sqrt(bc2) / bc1))};  // step_size * math.sqrt(bc2) / bc1
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    T& m = s[0];
    T& v = s[1];
    if constexpr (V & kDecay) p = fmadd(k.neg_lr_wd, p, p);      // p.add_(p, alpha=−lr·wd)
    m = fmadd(k.one_minus_beta1, g, m * k.beta1);               // exp_avg.mul_(β1).add_(g, alpha=1 − β1)
    v = fmadd(k.one_minus_beta2 * g, g, v * k.beta2);           // exp_avg_sq.mul_(β2).addcmul_(g, g, 1 − β2)
    const T denom = std::sqrt(v) + k.eps;
    const T u = sign(g) * std::fabs(m);                         // g.sign_().mul_(exp_avg.abs())
    p = p + (k.neg_step_size * u) / denom;                      // p.addcdiv_(u, denom, value=−step_size)
  }
};

PYOPT_RULES_END
