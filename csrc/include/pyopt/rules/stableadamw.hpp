#pragma once
// StableAdamW (Wortsman et al., 2023, "Stable and low-precision training for large-scale
// vision-language models", arXiv:2304.13013): AdamW with debiased betas and an update clipped per
// tensor by the RMS of g²/v. Reference: pytorch-optimizer 4.1.0 StableAdamW (optimizer/adamw.py,
// _step_per_param).
//
//   β̂(β, t) = (β^t − β)/(β^t − 1)   (debias_beta: 0 at t = 1)
//   g ← −g if maximize;  not weight_decouple and wd > 0: g ← g + wd·p
//   m ← lerp(m, g, 1 − β̂1);  v ← β̂2·v + (1 − β̂2)·g²
//   rms = max(1, √(mean(g² / max(v, ε²))))   (per tensor: the reduction pass)
//   η = lr / rms;  weight_decouple and wd ≠ 0: p ← p·(1 − wd·η)
//   p ← p + m / ((√v + ε) / −η)
//
// Rounding: rms is a 0-dim tensor in the param dtype, so η = lr / rms is (1/rms)·lr in that dtype
// (Tensor.__rtruediv__), the decay factor 1 − T(wd)·η too. The mean is summed in double here
// (torch sums in the param dtype, pairwise), so η may differ from the reference's by an ulp: not
// bit for bit. The lerp weight 1 − β̂1 is 1 at t = 1 and falls to 1 − β1: its lerp form is a
// per-step flag. kahan_sum only applies to float16/bfloat16 params in the reference: not exposed.
// Quirk kept: with weight_decouple the decay is scaled by the RMS-clipped η, not lr.
#include "pyopt/rules/base.hpp"

PYOPT_RULES_BEGIN

struct StableAdamW : RuleBase {
  static constexpr const char* name = "stableadamw";
  enum Hyper { lr, beta1, beta2, weight_decay, weight_decouple, eps, maximize, kNumHyper };
  static constexpr const char* slot_names[] = {"exp_avg", "exp_avg_sq"};
  static constexpr bool maximize_policy = true;
  static constexpr int num_reductions = 2;  // Σ g²/max(v, ε²), and the element count

  // Own weight decay: coupled in the reduction pass, decoupled scaled by the RMS-clipped η.
  enum Variant { kCoupledDecay = 1, kDecoupledDecay = 2 };
  static constexpr int num_variants = 4;
  static int variant(const double* h) {
    if (h[weight_decay] == 0.0) return 0;
    return h[weight_decouple] != 0.0 ? kDecoupledDecay : kCoupledDecay;
  }
  static constexpr unsigned slot_mask(int) { return 0b11u; }

  static double debias_beta(double beta, int64_t t) {
    const double beta_n = std::pow(beta, double(t));
    return (beta_n - beta) / (beta_n - 1.0);
  }

  template <class T> struct Coeffs {
    T weight_decay, beta1_weight, beta2_hat, one_minus_beta2_hat, eps_sq, eps, lr;
    bool beta1_from_end;
    T decay, neg_step;  // set by finish()
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t t, double*) {
    const double beta1_comp = 1.0 - debias_beta(h[beta1], t);
    const double beta2_hat = debias_beta(h[beta2], t);
    return {T(h[weight_decay]),
            lerp_coeff<T>(beta1_comp),
            T(beta2_hat),
            T(1.0 - beta2_hat),
            T(std::pow(h[eps], 2.0)),  // math.pow(eps, 2)
            T(h[eps]),
            T(h[lr]),
            lerp_from_end(beta1_comp),
            T(1),
            T(-h[lr])};
  }

  template <int V, class T> static PYOPT_INLINE void reduce(const Coeffs<T>& k, T p, T g, T* s, T* r) {
    T& m = s[0];
    T& v = s[1];
    if constexpr (V & kCoupledDecay) g = fmadd(k.weight_decay, p, g);  // grad.add_(p, alpha=wd)
    m = lerp_step(m, g, k.beta1_weight, k.beta1_from_end);              // exp_avg.lerp_(grad, 1 − β̂1)
    v = fmadd(k.one_minus_beta2_hat * g, g, v * k.beta2_hat);           // mul_(β̂2).addcmul_(g, g, 1 − β̂2)
    r[0] = (g * g) / nan_max(v, k.eps_sq);                               // grad.pow(2).div_(v.clip(min=ε²))
    r[1] = T(1);
  }

  template <class T> static void finish(Coeffs<T>& k, const double*, const double* sums) {
    const T mean = T(sums[0]) / T(sums[1]);                 // .mean()
    T rms = std::sqrt(mean);                                // .sqrt_()
    rms = (rms != rms) ? rms : (rms < T(1) ? T(1) : rms);   // .clip_(min=1.0)
    const T step = (T(1) / rms) * k.lr;                     // lr / rms (Tensor.__rtruediv__)
    k.decay = T(1) - k.weight_decay * step;                 // 1.0 − wd·lr
    k.neg_step = -step;
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T, T* s) {
    if constexpr (V & kDecoupledDecay) p = p * k.decay;    // p.mul_(1 − wd·η)
    const T denom = (std::sqrt(s[1]) + k.eps) / k.neg_step;  // sqrt().add_(ε).div_(−η)
    p = p + s[0] / denom;                                     // p.addcdiv_(exp_avg, de_nom)
  }
};

PYOPT_RULES_END
