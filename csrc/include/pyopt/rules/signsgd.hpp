#pragma once
// signSGD and Signum (Bernstein et al., 2018, arXiv:1802.04434): the sign of the gradient, or of
// its momentum. Reference: pytorch-optimizer 4.1.0 SignSGD (optimizer/sgd.py, per-param path).
//
//   g ← −g if maximize;  weight_decouple: p ← p·(1 − lr·wd)   else  g ← g + wd·p      (only when wd ≠ 0)
//   momentum μ > 0: b ← lerp(b, g, 1 − μ), u = b   else u = g     (b starts at 0, no special first step)
//   p ← p − lr·sign(u)                                            (sign(0) = sign(NaN) = 0, as torch.sign)
//
// pytorch-optimizer's SignSGD defaults to momentum=0.9 (Signum): pyopt's `signum` is that, `signsgd`
// has momentum=0. No sqrt: bit for bit against it on the FMA paths.
#include "pyopt/rules/base.hpp"
#include "pyopt/rules/sign.hpp"

PYOPT_RULES_BEGIN

struct SignSgd : RuleBase {
  static constexpr const char* name = "signsgd";
  enum Hyper { lr, momentum, weight_decay, weight_decouple, maximize, kNumHyper };
  static constexpr const char* slot_names[] = {"momentum_buffer"};
  static constexpr bool maximize_policy = true;
  static constexpr Decay decay_policy = Decay::WeightDecouple;

  enum Variant { kMomentum = 1, kLerpFromEnd = 2 };
  static constexpr int num_variants = 4;
  static int variant(const double* h) {
    if (!(h[momentum] > 0.0)) return 0;
    return kMomentum | (lerp_from_end(1.0 - h[momentum]) ? kLerpFromEnd : 0);
  }
  static constexpr unsigned slot_mask(int v) { return (v & kMomentum) ? 0b1u : 0u; }

  template <class T> struct Coeffs {
    T momentum_weight, neg_lr;
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t, double*) {
    return {lerp_coeff<T>(1.0 - h[momentum]), T(-h[lr])};
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    T u = g;
    if constexpr (V & kMomentum) {
      s[0] = lerp<(V & kLerpFromEnd) != 0>(s[0], g, k.momentum_weight);  // buf.lerp_(grad, 1 − μ)
      u = s[0];
    }
    p = fmadd(k.neg_lr, sign(u), p);  // p.add_(torch.sign(buf), alpha=−lr)
  }
};

PYOPT_RULES_END
