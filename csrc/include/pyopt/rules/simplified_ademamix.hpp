#pragma once
// Simplified AdEMAMix (Morwani et al., 2025, "Connections between schedule-free optimizers,
// AdEMAMix, and accelerated SGD variants", arXiv:2502.02431): one momentum EMA mixed with the
// current gradient. Reference: pytorch-optimizer 4.1.0 SimplifiedAdEMAMix (optimizer/ademamix.py,
// per-param path).
//
//   g ← −g if maximize;  wd ≠ 0: weight_decouple ? p ← p·(1 − wd·(fixed_decay ? 1 : lr)) : g ← g + wd·p
//   m ← lerp(m, g, 1 − β1(t));  v ← β2·v + (1 − β2)·g²;  d_t = β2·d_{t−1} + (1 − β2)  (d_0 = 0)
//   p ← p − lr·((m + α·g) / (√v + √d_t·ε)) / √d_t
//
// β1(t): with beta1_warmup = W > 0 (0 is the reference's None) and t < W, the half-life warmup
//   f(β) = ln 0.5 / ln(β + 1e-8) − 1;  β1(t) = 0.5^(1 / (1 + (1 − t/W)·f(min_beta1) + (t/W)·f(β1)))
// computed per step in double as the reference's Python floats; its lerp form is a per-step flag.
// d_t is per-tensor scalar state ("den_sum"), summed in double as the reference does. The
// reference's num_sum state is never read, so pyopt does not keep it.
#include "pyopt/rules/base.hpp"

PYOPT_RULES_BEGIN

struct SimplifiedAdEMAMix : RuleBase {
  static constexpr const char* name = "simplified_ademamix";
  enum Hyper {
    lr, beta1, beta2, weight_decay, weight_decouple, fixed_decay, alpha, beta1_warmup, min_beta1, eps, maximize,
    kNumHyper
  };
  static constexpr const char* slot_names[] = {"exp_avg", "exp_avg_sq"};
  static constexpr bool maximize_policy = true;
  static constexpr Decay decay_policy = Decay::WeightDecouple;
  static constexpr unsigned slot_mask(int) { return 0b11u; }
  static constexpr unsigned int8_slots = 0b11, nonnegative_slots = 0b10;
  static constexpr int num_scalars = 1;
  static constexpr const char* scalar_name_list[] = {"den_sum"};
  static constexpr const char* const* scalar_names = scalar_name_list;

  static double beta1_at(const double* h, int64_t t) {
    const double warmup = h[beta1_warmup];
    if (warmup == 0.0 || !(double(t) < warmup)) return h[beta1];
    auto f = [](double beta) { return std::log(0.5) / std::log(beta + 1e-8) - 1.0; };
    const double a = double(t) / warmup;
    return std::pow(0.5, 1.0 / (((1.0 - a) * f(h[min_beta1]) + a * f(h[beta1])) + 1.0));
  }

  template <class T> struct Coeffs {
    T beta1_weight, beta2, one_minus_beta2, eps_term, den_sqrt, alpha, neg_lr;
    bool from_end;
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t t, double* scalars) {
    const double w1 = 1.0 - beta1_at(h, t);
    const double den_sum = h[beta2] * scalars[0] + (1.0 - h[beta2]);
    scalars[0] = den_sum;
    const double den_sqrt = std::sqrt(den_sum);
    return {lerp_coeff<T>(w1), T(h[beta2]), T(1.0 - h[beta2]), T(den_sqrt * h[eps]), T(den_sqrt), T(h[alpha]),
            T(-h[lr]), lerp_from_end(w1)};
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    T& m = s[0];
    T& v = s[1];
    m = lerp_step(m, g, k.beta1_weight, k.from_end);           // exp_avg.lerp_(grad, 1 − β1)
    v = fmadd(k.one_minus_beta2 * g, g, v * k.beta2);          // exp_avg_sq.mul_(β2).addcmul_(g, g, 1 − β2)
    const T denom = std::sqrt(v) + k.eps_term;                 // exp_avg_sq.sqrt().add_(√d·ε)
    const T u = (fmadd(k.alpha, g, m) / denom) / k.den_sqrt;   // exp_avg.add(g, alpha=α).div_(de_nom).div_(√d)
    p = fmadd(k.neg_lr, u, p);                                 // p.add_(update, alpha=−lr)
  }
};

PYOPT_RULES_END
