#pragma once
// Schedule-free SGD (Defazio et al., 2024, arXiv:2405.15682). Reference: facebookresearch
// `schedulefree` 1.4.1 SGDScheduleFree, foreach=False. The schedule, y/z/x: rules/schedulefree.hpp.
//
//   ĝ = g + wd·y
//   y ← lerp(y, z, c);  y ← y + lr_k(momentum(1 − c) − 1)·ĝ;  z ← z − lr_k·ĝ
#include "pyopt/rules/schedulefree.hpp"

PYOPT_RULES_BEGIN

struct ScheduleFreeSgd : ScheduleFreeBase {
  static constexpr const char* name = "schedulefree_sgd";
  enum Hyper { lr, momentum, weight_decay, warmup_steps, r, weight_lr_power, kNumHyper };
  static constexpr const char* slot_names[] = {"z"};
  static constexpr Decay decay_policy = Decay::Coupled;  // grad.add_(y, alpha=wd): y is the param array
  static constexpr unsigned slot_mask(int) { return 0b1u; }

  template <class T> using Coeffs = ScheduleFreeCoeffs<T>;
  template <class T> static Coeffs<T> prepare(const double* h, int64_t t, double* scalars) {
    const auto s = ScheduleFreeStep::advance(h[lr], h[warmup_steps], h[r], h[weight_lr_power], t, scalars);
    return {T(0), T(0), T(1), T(0), T(0), lerp_coeff<T>(s.ckp1),
            T(s.lr * (h[momentum] * (1.0 - s.ckp1) - 1.0)), T(-s.lr), lerp_from_end(s.ckp1), t == 1};
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& y, T g, T* s) {
    schedulefree_move(k, y, g, s[0]);
  }
};

PYOPT_RULES_END
