#pragma once
// RAdam, Adam with a rectified adaptive learning rate (Liu et al., 2020, arXiv:1908.03265).
// Reference: torch.optim.RAdam 2.13, single-tensor path.
//
//   m ← lerp(m, g, 1 − β1);  v ← β2·v + (1 − β2)·g²;  m̂ = m / (1 − β1^t)
//   ρ∞ = 2/(1 − β2) − 1;  ρ_t = ρ∞ − 2t·β2^t / (1 − β2^t)
//   ρ_t > 5: r = √((ρ_t − 4)(ρ_t − 2)ρ∞ / ((ρ∞ − 4)(ρ∞ − 2)ρ_t)),  p ← p − m̂·lr · √(1 − β2^t)/(√v + ε) · r
//   else:    p ← p − m̂·lr
#include "pyopt/rules/base.hpp"

PYOPT_KERNEL_NAMESPACE_BEGIN
namespace rules {

struct Radam : RuleBase {
  static constexpr const char* name = "radam";

  enum Hyper { lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay, maximize, kNumHyper };
  static constexpr HyperSpec hyper[kNumHyper] = {
      {"lr", 1e-3, HyperKind::Real},          {"beta1", 0.9, HyperKind::Real},
      {"beta2", 0.999, HyperKind::Real},      {"eps", 1e-8, HyperKind::Real},
      {"weight_decay", 0.0, HyperKind::Real}, {"decoupled_weight_decay", 0.0, HyperKind::Bool},
      {"maximize", 0.0, HyperKind::Bool},
  };
  static constexpr const char* slot_names[] = {"exp_avg", "exp_avg_sq"};

  enum Variant { kCoupledDecay = 1, kDecoupledDecay = 2 };
  static constexpr int num_variants = 4;
  static int variant(const double* h) {
    if (h[weight_decay] == 0.0) return 0;
    return h[decoupled_weight_decay] != 0.0 ? kDecoupledDecay : kCoupledDecay;
  }
  static constexpr unsigned slot_mask(int) { return 0b11u; }

  static void validate(const double* h) {
    require_nonnegative("lr", h[lr]);
    require_nonnegative("eps", h[eps]);
    require_beta("beta1", h[beta1]);
    require_beta("beta2", h[beta2]);
    require_nonnegative("weight_decay", h[weight_decay]);
  }

  template <class T>
  struct Coeffs {
    T grad_sign, weight_decay, decay, one_minus_beta1, beta2, one_minus_beta2, bc1, lr, bc2_sqrt, eps, rect;
    bool rectified;
  };
  template <class T>
  static Coeffs<T> prepare(const double* h, int64_t t, double*) {
    const double b2 = h[beta2];
    const double bc1 = 1.0 - std::pow(h[beta1], double(t));
    const double bc2 = 1.0 - std::pow(b2, double(t));
    const double rho_inf = 2.0 / (1.0 - b2) - 1.0;
    const double rho_t = rho_inf - 2.0 * double(t) * std::pow(b2, double(t)) / bc2;
    const bool rectified = rho_t > 5.0;
    const double rect =
        rectified ? std::sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
                  : 1.0;
    return {T(h[maximize] != 0.0 ? -1.0 : 1.0),
            T(h[weight_decay]),
            T(1.0 - h[lr] * h[weight_decay]),
            T(1.0 - h[beta1]),
            T(b2),
            T(1.0 - b2),
            T(bc1),
            T(h[lr]),
            T(std::sqrt(bc2)),
            T(h[eps]),
            T(rect),
            rectified};
  }

  template <int V, class T>
  static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    T& m = s[0];
    T& v = s[1];
    g = g * k.grad_sign;
    if constexpr (V & kDecoupledDecay) p = p * k.decay;
    if constexpr (V & kCoupledDecay) g = g + k.weight_decay * p;
    m = lerp(m, g, k.one_minus_beta1);
    v = v * k.beta2 + k.one_minus_beta2 * g * g;
    const T step = m / k.bc1 * k.lr;
    if (k.rectified) {
      const T adaptive_lr = k.bc2_sqrt / (std::sqrt(v) + k.eps);
      p = p - step * adaptive_lr * k.rect;
    } else {
      p = p - step;
    }
  }
};

}  // namespace rules
PYOPT_KERNEL_NAMESPACE_END
