#pragma once
// Tiger, "Tight-fisted Optimizer" (Su, 2023, github.com/bojone/tiger): the sign of an EMA of the
// gradient, i.e. Lion with one β. Reference: pytorch-optimizer 4.1.0 Tiger (optimizer/tiger.py,
// _step_per_param).
//
//   g ← −g if maximize;  wd ≠ 0: weight_decouple ? p ← p·(1 − wd·(fixed_decay ? 1 : lr)) : g ← g + wd·p
//   m ← lerp(m, g, 1 − β);  p ← p − lr·sign(m)                     (sign(0) = sign(NaN) = 0)
//
// Defaults as the reference: lr 1e-3, β 0.965, weight_decay 0.01, decoupled. No sqrt: bit for bit
// on the FMA paths. p.add_(sign(m), alpha=−lr) is fmadd(−lr, sign(m), p), which is exact for
// sign ±1 only up to the rounding of the add, as in torch.
#include "pyopt/rules/base.hpp"
#include "pyopt/rules/sign.hpp"

PYOPT_RULES_BEGIN

struct Tiger : RuleBase {
  static constexpr const char* name = "tiger";
  enum Hyper { lr, beta, weight_decay, weight_decouple, fixed_decay, maximize, kNumHyper };
  static constexpr const char* slot_names[] = {"exp_avg"};
  static constexpr bool maximize_policy = true;
  static constexpr Decay decay_policy = Decay::WeightDecouple;

  enum Variant { kLerpFromEnd = 1 };
  static constexpr int num_variants = 2;
  static int variant(const double* h) { return lerp_from_end(1.0 - h[beta]) ? kLerpFromEnd : 0; }
  static constexpr unsigned slot_mask(int) { return 0b1u; }

  template <class T> struct Coeffs {
    T beta_weight, neg_lr;
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t, double*) {
    return {lerp_coeff<T>(1.0 - h[beta]), T(-h[lr])};
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    T& m = s[0];
    m = lerp<(V & kLerpFromEnd) != 0>(m, g, k.beta_weight);             // exp_avg.lerp_(grad, 1 − β)
    p = fmadd(k.neg_lr, sign(m), p);                                    // p.add_(sign(m), alpha=−lr)
  }
};

PYOPT_RULES_END
