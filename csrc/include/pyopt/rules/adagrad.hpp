#pragma once
// Adagrad (Duchi et al., 2011, JMLR 12). Reference: torch.optim.Adagrad 2.13, single-tensor path.
//
//   g ← −g if maximize;  g ← g + wd·p;  clr = lr / (1 + (t − 1)·lr_decay)
//   s ← s + g²;  p ← p − clr · g / (√s + ε)
#include "pyopt/rules/base.hpp"

PYOPT_RULES_BEGIN

struct Adagrad : RuleBase {
  static constexpr const char* name = "adagrad";
  enum Hyper { lr, lr_decay, weight_decay, initial_accumulator_value, eps, maximize, kNumHyper };
  static constexpr const char* slot_names[] = {"sum"};
  static constexpr unsigned int8_slots = 0b1, nonnegative_slots = 0b1;
  static constexpr bool maximize_policy = true;
  static constexpr Decay decay_policy = Decay::Coupled;
  static double initial_state(int, const double* h) { return h[initial_accumulator_value]; }

  static constexpr unsigned slot_mask(int) { return 0b1u; }

  template <class T> struct Coeffs {
    T eps, neg_clr;
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t t, double*) {
    const double clr = h[lr] / (1.0 + double(t - 1) * h[lr_decay]);
    return {T(h[eps]), T(-clr)};
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    T& sum = s[0];
    sum = fmadd(g, g, sum);  // state_sum.addcmul_(grad, grad, value=1)
    const T std_ = std::sqrt(sum) + k.eps;
    p = p + (k.neg_clr * g) / std_;  // param.addcdiv_(grad, std, value=−clr)
  }
};

PYOPT_RULES_END
