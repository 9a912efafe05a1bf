#pragma once
// Adan, Adaptive Nesterov momentum (Xie et al., 2022/2024, arXiv:2208.06677). Reference: the
// official sail-sg/Adan adan.py, _single_tensor_adan (foreach=False, max_grad_norm=0, so the
// gradient clip factor is 1). betas follow the code's convention (1 − β of the paper).
//
//   g ← −g if maximize;  Δ = g − g_prev (0 at t = 1: the code sets g_prev = g at the first step)
//   m ← β1·m + (1 − β1)·g;  d ← β2·d + (1 − β2)·Δ;  n ← β3·n + (1 − β3)·(g + β2·Δ)²
//   denom = √n / √(1 − β3^t) + ε
//   no_prox: p ← p·(1 − lr·wd) first;  p ← p − (lr/(1 − β1^t))·m/denom − (lr·β2/(1 − β2^t))·d/denom;
//   else (default) p ← p / (1 + lr·wd) last.  g_prev ← g.
//
// The code keeps −g_prev ("neg_pre_grad"); pyopt keeps g_prev as the slot "pre_grad" (same values,
// negated: g + (−g_prev) and g − g_prev round identically). The first step's Δ = 0 is a per-step
// gate from prepare() (Δ = g·γ − g_prev·γ, γ = 0 at t = 1, else 1), not a per-element branch.
// The step counter is per tensor; the code's is per group, the same when every param steps together.
// pytorch-optimizer 4.1.0's Adan is a different rule (it differs from this one in ~1% of elements).
#include "pyopt/rules/base.hpp"

PYOPT_RULES_BEGIN

struct Adan : RuleBase {
  static constexpr const char* name = "adan";
  enum Hyper { lr, beta1, beta2, beta3, eps, weight_decay, no_prox, maximize, kNumHyper };
  static constexpr const char* slot_names[] = {"exp_avg", "exp_avg_sq", "exp_avg_diff", "pre_grad"};
  // pre_grad stays float32 in 8-bit mode: it enters g − g_prev, which quantization noise would swamp.
  static constexpr unsigned int8_slots = 0b111, nonnegative_slots = 0b10;
  static constexpr bool maximize_policy = true;

  // With wd = 0 the code multiplies or divides by exactly 1: skipping it is the same.
  // Own weight decay: no_prox decays p before the step, the default divides by 1 + lr·wd after it.
  enum Variant { kProxDecay = 1, kNoProxDecay = 2 };
  static constexpr int num_variants = 4;
  static int variant(const double* h) {
    if (h[weight_decay] == 0.0) return 0;
    return h[no_prox] != 0.0 ? kNoProxDecay : kProxDecay;
  }
  static constexpr unsigned slot_mask(int) { return 0b1111u; }

  template <class T> struct Coeffs {
    T diff_gate, beta1, one_minus_beta1, beta2, one_minus_beta2, beta3, one_minus_beta3,
        bc3_sqrt, eps, neg_step_size, neg_step_size_diff, decay, prox_divisor;
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t t, double*) {
    const double bc1 = 1.0 - std::pow(h[beta1], double(t));
    const double bc2 = 1.0 - std::pow(h[beta2], double(t));
    const double bc3 = 1.0 - std::pow(h[beta3], double(t));
    return {T(t == 1 ? 0.0 : 1.0),
            T(h[beta1]),
            T(1.0 - h[beta1]),
            T(h[beta2]),
            T(1.0 - h[beta2]),
            T(h[beta3]),
            T(1.0 - h[beta3]),
            T(std::sqrt(bc3)),                 // math.sqrt(bias_correction3)
            T(h[eps]),
            T(-(h[lr] / bc1)),                 // −step_size
            T(-(h[lr] * h[beta2] / bc2)),      // −step_size_diff
            T(1.0 - h[lr] * h[weight_decay]),  // no_prox
            T(1.0 + h[lr] * h[weight_decay])};
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    T& m = s[0];
    T& n = s[1];
    T& d = s[2];
    T& g_prev = s[3];
    const T diff = g * k.diff_gate - g_prev * k.diff_gate;   // neg_grad_or_diff.add_(grad)
    m = fmadd(k.one_minus_beta1, g, m * k.beta1);           // exp_avg.mul_(β1).add_(g, alpha=1 − β1)
    d = fmadd(k.one_minus_beta2, diff, d * k.beta2);        // exp_avg_diff.mul_(β2).add_(diff, alpha=1 − β2)
    const T u = diff * k.beta2 + g;                          // neg_grad_or_diff.mul_(β2).add_(grad)
    n = fmadd(k.one_minus_beta3 * u, u, n * k.beta3);       // exp_avg_sq.mul_(β3).addcmul_(u, u, 1 − β3)
    const T denom = std::sqrt(n) / k.bc3_sqrt + k.eps;      // (sqrt() / bc3_sqrt).add_(eps)
    if constexpr (V & kNoProxDecay) p = p * k.decay;        // param.mul_(1 − lr·wd)
    p = p + (k.neg_step_size * m) / denom;                  // param.addcdiv_(exp_avg, denom, −step_size)
    p = p + (k.neg_step_size_diff * d) / denom;             // param.addcdiv_(exp_avg_diff, denom, −step_size_diff)
    if constexpr (V & kProxDecay) p = p / k.prox_divisor;   // param.div_(1 + lr·wd)
    g_prev = g;
  }
};

PYOPT_RULES_END
