#pragma once
// Lion, EvoLved Sign Momentum (Chen et al., 2023, arXiv:2302.06675). Reference: lucidrains
// lion-pytorch 0.2.5 (lion_pytorch.py update_fn; pytorch-optimizer's Lion matches it bit for bit).
//
//   g ← −g if maximize;  p ← p·(1 − lr·wd)
//   c ← β1·m + (1 − β1)·g;   p ← p − lr·sign(c)   (sign(0) = 0, sign(NaN) = 0 as torch's sgn)
//   m ← β2·m + (1 − β2)·g
//
// Operation order as lion-pytorch's torch calls: exp_avg.clone().mul_(β1).add(g, alpha=1 − β1).sgn_(),
// p.add_(update, alpha=−lr), exp_avg.mul_(β2).add_(g, alpha=1 − β2). No sqrt, so the FMA paths
// match it bit for bit. lion-pytorch's decoupled_weight_decay (wd divided by the initial lr) is not
// offered: pass weight_decay/lr instead.
#include "pyopt/rules/base.hpp"
#include "pyopt/rules/sign.hpp"

PYOPT_RULES_BEGIN

struct Lion : RuleBase {
  static constexpr const char* name = "lion";
  enum Hyper { lr, beta1, beta2, weight_decay, maximize, cautious, kNumHyper };
  static constexpr const char* slot_names[] = {"exp_avg"};
  static constexpr unsigned int8_slots = 0b1, nonnegative_slots = 0b0;
  static constexpr bool fused_bfloat16 = true;  // bfloat16 params/states in its own loop (driver.hpp)
  static constexpr bool maximize_policy = true;
  // lion-pytorch multiplies by 1 − lr·wd even when wd = 0; p·1 = p exactly, so skipping it is the same.
  static constexpr Decay decay_policy = Decay::Decoupled;
  // cautious: sign(c) masked where sign(c)·g ≤ 0 (pytorch-optimizer 4.1.0 Lion(cautious=True)).
  static constexpr bool cautious_policy = true;
  static constexpr unsigned slot_mask(int) { return 0b1u; }

  template <class T> struct Coeffs {
    T beta1, one_minus_beta1, beta2, one_minus_beta2, neg_lr;
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t, double*) {
    return {T(h[beta1]), T(1.0 - h[beta1]), T(h[beta2]), T(1.0 - h[beta2]), T(-h[lr])};
  }

  // The direction sign(c) and the momentum's update (p does not enter either).
  template <int V, class T> static PYOPT_INLINE T direction(const Coeffs<T>& k, T, T g, T* s) {
    T& m = s[0];
    const T c = fmadd(k.one_minus_beta1, g, m * k.beta1);        // exp_avg·β1, .add(g, alpha=1 − β1)
    m = fmadd(k.one_minus_beta2, g, m * k.beta2);                // exp_avg.mul_(β2).add_(g, alpha=1 − β2)
    return sign(c);                                               // update.sgn_()
  }
  template <int V, class T> static PYOPT_INLINE void apply(const Coeffs<T>& k, T& p, T, T*, T u) {
    p = fmadd(k.neg_lr, u, p);                                    // p.add_(update, alpha=−lr)
  }
  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    apply<V>(k, p, g, s, direction<V>(k, p, g, s));
  }
};

PYOPT_RULES_END
