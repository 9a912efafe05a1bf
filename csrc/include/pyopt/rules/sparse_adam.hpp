#pragma once
// SparseAdam: the "lazy" Adam torch.optim.SparseAdam runs on embedding tables (Kingma & Ba, 2015,
// arXiv:1412.6980, for Adam). Reference: torch.optim.SparseAdam 2.13 (torch/optim/_functional.py,
// sparse_adam), in its order of operations.
//
// torch only accepts sparse gradients: the rows present in the gradient update their moments and
// their param, the other rows are not touched; the bias corrections use the param's step count
// (every step, whatever rows it holds). This rule is the per-element update of a present row; the
// Python layer (pyopt.RowSparse) gathers the present rows, runs it on them and scatters them back.
// A dense gradient means "every row present" (torch refuses dense gradients): Adam without weight
// decay, rounded as SparseAdam rounds.
//
//   g ← −g if maximize
//   Δm = (g − m)·(1 − β1);  m ← m + Δm;  Δv = (g² − v)·(1 − β2);  v ← v + Δv
//   p ← p + (−lr·√(1 − β2^t) / (1 − β1^t)) · (m / (√v + ε))
#include "pyopt/rules/base.hpp"

PYOPT_RULES_BEGIN

struct SparseAdam : RuleBase {
  static constexpr const char* name = "sparse_adam";
  enum Hyper { lr, beta1, beta2, eps, maximize, kNumHyper };
  static constexpr const char* slot_names[] = {"exp_avg", "exp_avg_sq"};
  static constexpr unsigned int8_slots = 0b11, nonnegative_slots = 0b10;
  static constexpr bool maximize_policy = true;

  static constexpr unsigned slot_mask(int) { return 0b11u; }

  template <class T> struct Coeffs {
    T one_minus_beta1, one_minus_beta2, eps, neg_step_size;
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t t, double*) {
    const double bias_correction1 = 1.0 - std::pow(h[beta1], double(t));
    const double bias_correction2 = 1.0 - std::pow(h[beta2], double(t));
    const double step_size = h[lr] * std::sqrt(bias_correction2) / bias_correction1;
    return {T(1.0 - h[beta1]), T(1.0 - h[beta2]), T(h[eps]), T(-step_size)};
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    T& m = s[0];
    T& v = s[1];
    m = m + (g - m) * k.one_minus_beta1;      // grad_values.sub(old_exp_avg_values).mul_(1 − β1), added
    v = v + (g * g - v) * k.one_minus_beta2;  // grad_values.pow(2).sub_(old).mul_(1 − β2), added
    const T denom = std::sqrt(v) + k.eps;
    p = p + k.neg_step_size * (m / denom);    // param.add_(−step_size · numer.div_(denom))
  }
};

PYOPT_RULES_END
