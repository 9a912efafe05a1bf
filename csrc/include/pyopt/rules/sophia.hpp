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

PYOPT_RULES_BEGIN

struct Sophia : RuleBase {
  static constexpr const char* name = "sophia";
  enum Hyper { lr, beta1, beta2, rho, weight_decay, bs, maximize, kNumHyper };
  static constexpr const char* slot_names[] = {"exp_avg", "hessian"};
  static constexpr bool maximize_policy = true;
  // The official code multiplies by 1 − lr·wd even when wd = 0: p·1 = p, so skipping it is the same.
  static constexpr Decay decay_policy = Decay::Decoupled;
  static constexpr unsigned slot_mask(int) { return 0b11u; }

  template <class T> struct Coeffs {
    T beta1, one_minus_beta1, rho_bs, neg_lr;
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t, double*) {
    return {T(h[beta1]), T(1.0 - h[beta1]), T(h[rho] * h[bs]), T(-h[lr])};
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    T& m = s[0];
    const T hess = s[1];
    m = fmadd(k.one_minus_beta1, g, m * k.beta1);                       // exp_avg.mul_(β1).add_(g, alpha=1 − β1)
    T ratio = std::fabs(m) / (hess * k.rho_bs + T(1e-15));              // exp_avg.abs() / (ρ·bs·hess + 1e-15)
    ratio = (ratio != ratio) | (ratio < T(1)) ? ratio : T(1);           // .clamp(None, 1), NaN kept
    p = fmadd(k.neg_lr * sign(m), ratio, p);                            // param.addcmul_(sign, ratio, value=−lr)
  }
};

PYOPT_RULES_END
