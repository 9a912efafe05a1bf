#pragma once
// Adamax, the infinity-norm variant of Adam (Kingma & Ba, 2015, §7). Reference: torch.optim.Adamax 2.13.
//
//   g ← −g if maximize;  g ← g + wd·p;  m ← lerp(m, g, 1 − β1);  u ← max(β2·u, |g| + ε)
//   p ← p − (lr / (1 − β1^t)) · m / u
#include "pyopt/rules/base.hpp"

PYOPT_RULES_BEGIN

struct Adamax : RuleBase {
  static constexpr const char* name = "adamax";
  enum Hyper { lr, beta1, beta2, eps, weight_decay, maximize, kNumHyper };
  static constexpr const char* slot_names[] = {"exp_avg", "exp_inf"};
  static constexpr bool maximize_policy = true;
  static constexpr Decay decay_policy = Decay::Coupled;

  enum Variant { kLerpFromEnd = 1 };
  static constexpr int num_variants = 2;
  static int variant(const double* h) { return lerp_from_end(1.0 - h[beta1]) ? kLerpFromEnd : 0; }
  static constexpr unsigned slot_mask(int) { return 0b11u; }

  template <class T> struct Coeffs {
    T beta1_weight, beta2, eps, neg_clr;
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t t, double*) {
    const double bc1 = 1.0 - std::pow(h[beta1], double(t));
    return {lerp_coeff<T>(1.0 - h[beta1]), T(h[beta2]), T(h[eps]), T(-(h[lr] / bc1))};
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    T& m = s[0];
    T& u = s[1];
    m = lerp<(V & kLerpFromEnd) != 0>(m, g, k.beta1_weight);
    u = nan_max(u * k.beta2, std::fabs(g) + k.eps);
    p = p + (k.neg_clr * m) / u;  // param.addcdiv_(exp_avg, exp_inf, value=−clr)
  }
};

PYOPT_RULES_END
