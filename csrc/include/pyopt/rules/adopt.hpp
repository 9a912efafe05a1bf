#pragma once
// ADOPT (Taniguchi et al., NeurIPS 2024, arXiv:2411.02853): normalise the gradient by the second
// moment of the *previous* steps, then take momentum. Reference: pytorch-optimizer 4.1.0 ADOPT
// (optimizer/adopt.py, per-param path, default clip_lambda = step^0.25).
//
//   g ← −g if maximize
//   wd ≠ 0: weight_decouple ? p ← p·(1 − wd·(fixed_decay ? 1 : lr)) : g ← g + wd·p   (at t = 1 too)
//   t = 1:  v ← v + g²  (v starts at 0), nothing else
//   t > 1:  ĝ = clamp(g / max(√v, ε), −t^¼, t^¼);  m ← lerp(m, ĝ, 1 − β1);  p ← p − lr·m;
//           v ← β2·v + (1 − β2)·g²
//
// The first step is one loop with per-step coefficients from prepare(), not a branch: at t = 1 the
// v update's β2 and 1 − β2 are 1 and 1, and m and p must stay put whatever g is (g/ε would be 0/0
// for g = 0 with ε = 0, or NaN for a NaN g, and NaN·0 is NaN). So at t = 1 the division reads m
// instead of g and ε is 1: m and v are 0 then, so ĝ = m / max(√0, 1) = m, m ← lerp(m, m, ·) = m,
// and the lr is −0, so p + (−0)·m = p exactly. Only an input is selected: selecting the result
// would put the division under a branch, which GCC then does not vectorize on AVX2 or SSE.
#include "pyopt/rules/base.hpp"

PYOPT_RULES_BEGIN

struct Adopt : RuleBase {
  static constexpr const char* name = "adopt";
  enum Hyper { lr, beta1, beta2, weight_decay, weight_decouple, fixed_decay, eps, maximize, kNumHyper };
  static constexpr const char* slot_names[] = {"exp_avg", "exp_avg_sq"};
  static constexpr bool maximize_policy = true;
  static constexpr Decay decay_policy = Decay::WeightDecouple;

  enum Variant { kLerpFromEnd = 1 };
  static constexpr int num_variants = 2;
  static int variant(const double* h) { return lerp_from_end(1.0 - h[beta1]) ? kLerpFromEnd : 0; }
  static constexpr unsigned slot_mask(int) { return 0b11u; }

  template <class T> struct Coeffs {
    T eps, clip, neg_clip, beta1_weight;
    T takes_step;  // 0 at t = 1, else 1 (a T: GCC vectorizes a select on a T compare, not on a bool)
    T beta2, one_minus_beta2, neg_lr;
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t t, double*) {
    const bool first = t == 1;
    const double clip = std::pow(double(t), 0.25);  // math.pow(step, 0.25)
    return {T(first ? 1.0 : h[eps]), T(clip), T(-clip), lerp_coeff<T>(1.0 - h[beta1]), T(first ? 0.0 : 1.0),
            T(first ? 1.0 : h[beta2]), T(first ? 1.0 : 1.0 - h[beta2]), T(first ? -0.0 : -h[lr])};
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    T& m = s[0];
    T& v = s[1];
    const T numerator = k.takes_step != T(0) ? g : m;
    const T denom = nan_max(std::sqrt(v), k.eps);                 // sqrt().clamp_(min=eps)
    T ng = numerator / denom;
    ng = ng < k.neg_clip ? k.neg_clip : ng;                        // clamp_(−clip, clip), NaN stays NaN
    ng = ng > k.clip ? k.clip : ng;
    m = lerp<(V & kLerpFromEnd) != 0>(m, ng, k.beta1_weight);      // exp_avg.lerp_(ĝ, 1 − β1)
    p = fmadd(k.neg_lr, m, p);                                     // p.add_(exp_avg, alpha=−lr)
    v = fmadd(k.one_minus_beta2 * g, g, v * k.beta2);              // v.mul_(β2).addcmul_(g, g, 1 − β2)
  }
};

PYOPT_RULES_END
