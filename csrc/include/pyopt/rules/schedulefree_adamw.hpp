#pragma once
// Schedule-free AdamW (Defazio et al., 2024, arXiv:2405.15682). Reference: facebookresearch
// `schedulefree` 1.4.1 AdamWScheduleFree, foreach=False. The schedule, y/z/x: rules/schedulefree.hpp.
//
//   v ← β2·v + (1 − β2)·g²;  ĝ = g/(√(v/(1 − β2^(k+1))) + ε) + wd·y
//   y ← lerp(y, z, c);  y ← y + lr_k(β1(1 − c) − 1)·ĝ;  z ← z − lr_k·ĝ
#include "pyopt/rules/schedulefree.hpp"

PYOPT_RULES_BEGIN

struct ScheduleFreeAdamW : ScheduleFreeBase {
  static constexpr const char* name = "schedulefree_adamw";
  enum Hyper { lr, beta1, beta2, eps, weight_decay, warmup_steps, r, weight_lr_power, kNumHyper };
  static constexpr const char* slot_names[] = {"exp_avg_sq", "z"};
  // Own weight decay: added to the normalised update, not to g (the driver's coupled decay).
  enum Variant { kDecay = 1 };
  static constexpr int num_variants = 2;
  static int variant(const double* h) { return h[weight_decay] != 0.0 ? kDecay : 0; }
  static constexpr unsigned slot_mask(int) { return 0b11u; }

  template <class T> using Coeffs = ScheduleFreeCoeffs<T>;
  template <class T> static Coeffs<T> prepare(const double* h, int64_t t, double* scalars) {
    const auto s = ScheduleFreeStep::advance(h[lr], h[warmup_steps], h[r], h[weight_lr_power], t, scalars);
    const double bc2 = 1.0 - std::pow(h[beta2], double(t));
    return {T(h[beta2]), T(1.0 - h[beta2]), T(bc2), T(h[eps]), T(h[weight_decay]), lerp_coeff<T>(s.ckp1),
            T(s.lr * (h[beta1] * (1.0 - s.ckp1) - 1.0)), T(-s.lr), lerp_from_end(s.ckp1), t == 1};
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& y, T g, T* s) {
    T& v = s[0];
    v = fmadd(k.one_minus_beta2 * g, g, v * k.beta2);  // exp_avg_sq.mul_(β2).addcmul_(g, g, value=1 − β2)
    T update = g / (std::sqrt(v / k.bc2) + k.eps);      // grad.div_(exp_avg_sq.div(bc2).sqrt_().add_(eps))
    if constexpr (V & kDecay) update = fmadd(k.weight_decay, y, update);  // .add_(y, alpha=wd)
    schedulefree_move(k, y, update, s[1]);
  }
};

PYOPT_RULES_END
