#pragma once
// AdEMAMix, Adam with a mixture of a fast and a slow gradient EMA (Pagliardini, Ablin & Grangier,
// 2024, arXiv:2409.03137). Reference: pytorch-optimizer 4.1.0 AdEMAMix (optimizer/ademamix.py,
// per-param path).
//
//   g ← −g if maximize;  wd ≠ 0: weight_decouple ? p ← p·(1 − wd·(fixed_decay ? 1 : lr)) : g ← g + wd·p
//   m1 ← lerp(m1, g, 1 − β1);  v ← β2·v + (1 − β2)·g²;  m2 ← lerp(m2, g, 1 − β3(t))
//   p ← p − lr·(m1/(1 − β1^t) + α(t)·m2) / (√v / √(1 − β2^t) + ε)
//
// Schedulers (t_alpha_beta3 = T > 0; 0 means the reference's None, no warmup):
//   α(t) = min(t·α/T, α);   β3(t) = min(exp(ln β1·ln β3 / ((1 − t/T)·ln β3 + (t/T)·ln β1)), β3)
// computed per step in double exactly as the reference's Python floats. The lerp weight 1 − β3(t)
// changes with t, so its lerp form is a per-step flag (lerp_step).
//
// Rounding: exp_avg.div(bc1) then update.add_(exp_avg_slow, alpha=α(t)) = fmadd(α, m2, m1/bc1);
// de_nom = exp_avg_sq.sqrt().div_(√bc2).add_(ε); p.addcdiv_(update, de_nom, value=−lr).
// cautious (the reference's **kwargs flag): m masked where m·g ≤ 0 before the division by bc1.
// Its undocumented stable_adamw flag is not supported.
#include "pyopt/rules/base.hpp"

PYOPT_RULES_BEGIN

struct AdEMAMix : RuleBase {
  static constexpr const char* name = "ademamix";
  enum Hyper {
    lr, beta1, beta2, beta3, weight_decay, weight_decouple, fixed_decay, alpha, t_alpha_beta3, eps, maximize,
    cautious, kNumHyper
  };
  static constexpr const char* slot_names[] = {"exp_avg", "exp_avg_sq", "exp_avg_slow"};
  static constexpr unsigned int8_slots = 0b111, nonnegative_slots = 0b10;
  static constexpr bool maximize_policy = true;
  static constexpr Decay decay_policy = Decay::WeightDecouple;
  static constexpr bool cautious_policy = true;

  enum Variant { kLerpFromEnd = 1 };
  static constexpr int num_variants = 2;
  static int variant(const double* h) { return lerp_from_end(1.0 - h[beta1]) ? kLerpFromEnd : 0; }
  static constexpr unsigned slot_mask(int) { return 0b111u; }

  static void check(const double* h) {
    if (h[t_alpha_beta3] > 0.0 && !(h[beta1] > 0.0 && h[beta3] > 0.0))
      throw std::invalid_argument("invalid betas: the beta3 warmup (t_alpha_beta3 > 0) takes log(beta1) and "
                                  "log(beta3), so both must be > 0; got beta1 = " + format_value(h[beta1]) +
                                  ", beta3 = " + format_value(h[beta3]));
  }

  static double alpha_at(const double* h, int64_t t) {
    const double T = h[t_alpha_beta3];
    if (T == 0.0) return h[alpha];
    const double a = double(t) * h[alpha] / T;
    return h[alpha] < a ? h[alpha] : a;  // Python's min(a, α)
  }
  static double beta3_at(const double* h, int64_t t) {
    const double T = h[t_alpha_beta3];
    if (T == 0.0) return h[beta3];
    const double l1 = std::log(h[beta1]), l3 = std::log(h[beta3]);
    const double f = double(t) / T;
    const double b = std::exp(l1 * l3 / ((1.0 - f) * l3 + f * l1));
    return h[beta3] < b ? h[beta3] : b;  // Python's min(b, β3)
  }

  template <class T> struct Coeffs {
    T beta1_weight, beta2, one_minus_beta2, slow_weight, bc1, bc2_sqrt, alpha, eps, neg_lr;
    bool slow_from_end;
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t t, double*) {
    const double bc1 = 1.0 - std::pow(h[beta1], double(t));
    const double bc2_sqrt = std::sqrt(1.0 - std::pow(h[beta2], double(t)));
    const double w3 = 1.0 - beta3_at(h, t);
    return {lerp_coeff<T>(1.0 - h[beta1]), T(h[beta2]), T(1.0 - h[beta2]), lerp_coeff<T>(w3), T(bc1),
            T(bc2_sqrt), T(alpha_at(h, t)), T(h[eps]), T(-h[lr]), lerp_from_end(w3)};
  }

  // The moments' update; the direction is m (what a cautious step masks).
  template <int V, class T> static PYOPT_INLINE T direction(const Coeffs<T>& k, T, T g, T* s) {
    T& m = s[0];
    T& v = s[1];
    T& slow = s[2];
    m = lerp<(V & kLerpFromEnd) != 0>(m, g, k.beta1_weight);  // exp_avg.lerp_(grad, 1 − β1)
    v = fmadd(k.one_minus_beta2 * g, g, v * k.beta2);         // exp_avg_sq.mul_(β2).addcmul_(g, g, 1 − β2)
    slow = lerp_step(slow, g, k.slow_weight, k.slow_from_end);  // exp_avg_slow.lerp_(grad, 1 − β3(t))
    return m;
  }
  template <int V, class T> static PYOPT_INLINE void apply(const Coeffs<T>& k, T& p, T, T* s, T m) {
    const T denom = std::sqrt(s[1]) / k.bc2_sqrt + k.eps;
    const T u = fmadd(k.alpha, s[2], m / k.bc1);              // exp_avg.div(bc1).add_(slow, alpha=α(t))
    p = p + (k.neg_lr * u) / denom;                           // p.addcdiv_(update, de_nom, value=−lr)
  }
  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    apply<V>(k, p, g, s, direction<V>(k, p, g, s));
  }
};

PYOPT_RULES_END
