#pragma once
// NAdam, Adam with Nesterov momentum (Dozat, 2016, ICLR workshop). Reference: torch.optim.NAdam 2.13.
//
//   μ_t = β1·(1 − ½·0.96^(t·ψ));  Π_t = Π_{t−1}·μ_t  (torch keeps Π in float32 for float32 params)
//   m ← lerp(m, g, 1 − β1);  v ← β2·v + (1 − β2)·g²;  d = √(v / (1 − β2^t)) + ε
//   p ← p − lr·(1 − μ_t)/(1 − Π_t) · g/d − lr·μ_{t+1}/(1 − Π_t·μ_{t+1}) · m/d
#include <type_traits>

#include "pyopt/rules/base.hpp"

PYOPT_RULES_BEGIN

struct Nadam : RuleBase {
  static constexpr const char* name = "nadam";
  enum Hyper { lr, beta1, beta2, eps, weight_decay, momentum_decay, decoupled_weight_decay, maximize, kNumHyper };
  static constexpr const char* slot_names[] = {"exp_avg", "exp_avg_sq"};
  static constexpr bool maximize_policy = true;
  static constexpr Decay decay_policy = Decay::TorchFlag;
  static constexpr int num_scalars = 1;
  static constexpr const char* scalar_name_list[] = {"mu_product"};
  static constexpr const char* const* scalar_names = scalar_name_list;
  static double initial_scalar(int) { return 1.0; }

  enum Variant { kLerpFromEnd = 1 };
  static constexpr int num_variants = 2;
  static int variant(const double* h) { return lerp_from_end(1.0 - h[beta1]) ? kLerpFromEnd : 0; }
  static constexpr unsigned slot_mask(int) { return 0b11u; }

  template <class T> struct Coeffs {
    T beta1_weight, beta2, one_minus_beta2, bc2, eps, neg_grad_step, neg_momentum_step;
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t t, double* scalars) {
    const double b1 = h[beta1], psi = h[momentum_decay];
    const double mu = b1 * (1.0 - 0.5 * std::pow(0.96, double(t) * psi));
    const double mu_next = b1 * (1.0 - 0.5 * std::pow(0.96, double(t + 1) * psi));
    double mu_product = scalars[0];
    if constexpr (std::is_same_v<T, float>)
      mu_product = double(float(mu_product) * float(mu));
    else
      mu_product = mu_product * mu;
    scalars[0] = mu_product;
    const double mu_product_next = mu_product * mu_next;
    return {lerp_coeff<T>(1.0 - b1), T(h[beta2]), T(1.0 - h[beta2]), T(1.0 - std::pow(h[beta2], double(t))),
            T(h[eps]), T(-h[lr] * (1.0 - mu) / (1.0 - mu_product)),
            T((-h[lr] * mu_next) / (1.0 - mu_product_next))};
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    T& m = s[0];
    T& v = s[1];
    m = lerp<(V & kLerpFromEnd) != 0>(m, g, k.beta1_weight);
    v = fmadd(k.one_minus_beta2 * g, g, v * k.beta2);
    const T denom = std::sqrt(v / k.bc2) + k.eps;
    p = p + (k.neg_grad_step * g) / denom;  // two addcdiv_ calls
    p = p + (k.neg_momentum_step * m) / denom;
  }
};

PYOPT_RULES_END
