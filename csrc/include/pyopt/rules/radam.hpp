#pragma once
// RAdam, Adam with a rectified adaptive learning rate (Liu et al., 2020, arXiv:1908.03265).
// Reference: torch.optim.RAdam 2.13, single-tensor path.
//
//   m ← lerp(m, g, 1 − β1);  v ← β2·v + (1 − β2)·g²;  m̂ = m / (1 − β1^t)
//   ρ∞ = 2/(1 − β2) − 1;  ρ_t = ρ∞ − 2t·β2^t / (1 − β2^t)
//   ρ_t > 5: r = √((ρ_t − 4)(ρ_t − 2)ρ∞ / ((ρ∞ − 4)(ρ∞ − 2)ρ_t)),  p ← p − m̂·lr · √(1 − β2^t)/(√v + ε) · r
//   else:    p ← p − m̂·lr
#include "pyopt/rules/base.hpp"

PYOPT_RULES_BEGIN

struct Radam : RuleBase {
  static constexpr const char* name = "radam";
  enum Hyper { lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay, maximize, kNumHyper };
  static constexpr const char* slot_names[] = {"exp_avg", "exp_avg_sq"};
  static constexpr bool maximize_policy = true;
  static constexpr Decay decay_policy = Decay::TorchFlag;

  enum Variant { kLerpFromEnd = 1 };
  static constexpr int num_variants = 2;
  static int variant(const double* h) { return lerp_from_end(1.0 - h[beta1]) ? kLerpFromEnd : 0; }
  static constexpr unsigned slot_mask(int) { return 0b11u; }

  template <class T> struct Coeffs {
    T beta1_weight, beta2, one_minus_beta2, bc1, lr, bc2_sqrt, eps, rect;
    T rectified;   // 1 if ρ_t > 5, else 0 (a T: GCC vectorizes a select on a T compare, not on a bool)
    T v_stand_in;  // 1, read instead of v in unrectified steps
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t t, double*) {
    const double b2 = h[beta2];
    const double bc1 = 1.0 - std::pow(h[beta1], double(t));
    const double bc2 = 1.0 - std::pow(b2, double(t));
    const double rho_inf = 2.0 / (1.0 - b2) - 1.0;
    const double rho_t = rho_inf - 2.0 * double(t) * std::pow(b2, double(t)) / bc2;
    const bool rectified = rho_t > 5.0;
    // `**0.5` in torch's Python, so pow rather than sqrt (they can differ in the last bit).
    // Unrectified steps run the same loop with neutral scalars (see update()).
    const double rect =
        rectified ? std::pow((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t), 0.5)
                  : 1.0;
    return {lerp_coeff<T>(1.0 - h[beta1]), T(b2), T(1.0 - b2), T(bc1), T(h[lr]),
            T(rectified ? std::pow(bc2, 0.5) : 1.0), T(rectified ? h[eps] : 0.0), T(rect),
            T(rectified ? 1.0 : 0.0), T(1.0)};
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    T& m = s[0];
    T& v = s[1];
    m = lerp<(V & kLerpFromEnd) != 0>(m, g, k.beta1_weight);
    v = fmadd(k.one_minus_beta2 * g, g, v * k.beta2);
    const T step = m / k.bc1 * k.lr;  // bias_corrected_exp_avg * lr
    // ρ_t > 5: torch's bias_correction2**0.5 / (√v + ε) is a Python float over a tensor, which
    // is reciprocal() * c. ρ_t ≤ 5 (the first few steps): torch takes p − m̂·lr. A branch would
    // block vectorization (GCC moves the sqrt into it, then cannot if-convert), so those steps
    // take √1 + 0 with c = r = 1: both multipliers are exactly 1, and v, which torch does not
    // read then, cannot leak a NaN in. (The 1 is a coefficient: a literal lets GCC fold √1 and
    // put the sqrt back under a branch.)
    const T adaptive_lr = T(1) / (std::sqrt(k.rectified != T(0) ? v : k.v_stand_in) + k.eps) * k.bc2_sqrt;
    p = p - step * adaptive_lr * k.rect;  // param.add_(…, alpha=−1) is exactly p − …
  }
};

PYOPT_RULES_END
