#pragma once
// SophiaG, second-order clipped stochastic optimization (Liu et al., 2023, arXiv:2305.14342).
// Reference: the official Liuhong99/Sophia sophia.py (SophiaG, _single_tensor_sophiag).
//
//   g ← −g if maximize;  p ← p·(1 − lr·wd);  m ← β1·m + (1 − β1)·g   (no bias correction)
//   ratio ← min(|m| / (ρ·bs·h + 1e-15), 1);  p ← p − lr·sign(m)·ratio
//
// h, the EMA of a diagonal Hessian estimate, changes only in the HessianEma map (driver/map.hpp),
// every k steps, from the caller's estimate ĥ: h ← β2·h + (1 − β2)·ĥ. It starts at 0, so early steps are ±lr.
// bs (the official step(bs) argument, tokens per batch) is a hyperparameter here.
#include "pyopt/rules/base.hpp"
#include "pyopt/rules/sign.hpp"

PYOPT_KERNEL_NAMESPACE_BEGIN
namespace rules {

struct Sophia : RuleBase {
  static constexpr const char* name = "sophia";

  enum Hyper { lr, beta1, beta2, rho, weight_decay, bs, maximize, kNumHyper };
  static constexpr HyperSpec hyper[kNumHyper] = {
      {"lr", 1e-4, HyperKind::Real},          {"beta1", 0.965, HyperKind::Real},
      {"beta2", 0.99, HyperKind::Real},       {"rho", 0.04, HyperKind::Real},
      {"weight_decay", 1e-1, HyperKind::Real}, {"bs", 5120.0, HyperKind::Real},
      {"maximize", 0.0, HyperKind::Bool},
  };
  static constexpr const char* slot_names[] = {"exp_avg", "hessian"};

  // The official code multiplies by 1 − lr·wd even when wd = 0; p·1 = p exactly.
  enum Variant { kDecay = 1 };
  static constexpr int num_variants = 2;
  static int variant(const double* h) { return h[weight_decay] != 0.0 ? kDecay : 0; }
  static constexpr unsigned slot_mask(int) { return 0b11u; }

  static void validate(const double* h) {
    require_nonnegative("lr", h[lr]);
    require_beta("beta1", h[beta1]);
    require_beta("beta2", h[beta2]);
    require_nonnegative("rho", h[rho]);
    require_nonnegative("weight_decay", h[weight_decay]);
    if (!(h[bs] > 0.0) || !std::isfinite(h[bs]))
      throw std::invalid_argument("invalid bs: " + format_value(h[bs]) + " (must be > 0: tokens or examples per batch)");
  }

  template <class T>
  struct Coeffs {
    T grad_sign, decay, beta1, one_minus_beta1, rho_bs, neg_lr;
  };
  template <class T>
  static Coeffs<T> prepare(const double* h, int64_t, double*) {
    return {T(h[maximize] != 0.0 ? -1.0 : 1.0), T(1.0 - h[lr] * h[weight_decay]),
            T(h[beta1]),                         T(1.0 - h[beta1]),
            T(h[rho] * h[bs]),                   T(-h[lr])};
  }

  template <int V, class T>
  static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    T& m = s[0];
    const T hess = s[1];
    g = g * k.grad_sign;
    if constexpr (V & kDecay) p = p * k.decay;                          // param.mul_(1 − lr·wd)
    m = fmadd(k.one_minus_beta1, g, m * k.beta1);                       // exp_avg.mul_(β1).add_(g, alpha=1 − β1)
    T ratio = std::fabs(m) / (hess * k.rho_bs + T(1e-15));              // exp_avg.abs() / (ρ·bs·hess + 1e-15)
    ratio = (ratio != ratio) | (ratio < T(1)) ? ratio : T(1);           // .clamp(None, 1), NaN kept
    p = fmadd(k.neg_lr * sign(m), ratio, p);                            // param.addcmul_(sign, ratio, value=−lr)
  }
};

}  // namespace rules
PYOPT_KERNEL_NAMESPACE_END
