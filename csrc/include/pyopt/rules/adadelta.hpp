#pragma once
// Adadelta (Zeiler, 2012, arXiv:1212.5701). Reference: torch.optim.Adadelta 2.13, single-tensor path.
//
//   g ← −g if maximize;  g ← g + wd·p;  v ← ρ·v + (1 − ρ)·g²
//   δ = √(u + ε) / √(v + ε) · g   (old u);  u ← ρ·u + (1 − ρ)·δ²;  p ← p − lr·δ
#include "pyopt/rules/base.hpp"

PYOPT_RULES_BEGIN

struct Adadelta : RuleBase {
  static constexpr const char* name = "adadelta";
  enum Hyper { lr, rho, eps, weight_decay, maximize, kNumHyper };
  static constexpr const char* slot_names[] = {"square_avg", "acc_delta"};
  static constexpr bool maximize_policy = true;
  static constexpr Decay decay_policy = Decay::Coupled;
  static constexpr unsigned slot_mask(int) { return 0b11u; }

  template <class T> struct Coeffs {
    T rho, one_minus_rho, eps, neg_lr;
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t, double*) {
    return {T(h[rho]), T(1.0 - h[rho]), T(h[eps]), T(-h[lr])};
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    T& square_avg = s[0];
    T& acc_delta = s[1];
    square_avg = fmadd(k.one_minus_rho * g, g, square_avg * k.rho);  // .mul_(ρ).addcmul_(g, g, value=1 − ρ)
    const T std_ = std::sqrt(square_avg + k.eps);
    const T delta = std::sqrt(acc_delta + k.eps) / std_ * g;
    acc_delta = fmadd(k.one_minus_rho * delta, delta, acc_delta * k.rho);
    p = fmadd(k.neg_lr, delta, p);  // param.add_(delta, alpha=−lr)
  }
};

PYOPT_RULES_END
