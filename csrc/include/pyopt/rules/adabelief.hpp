#pragma once
// AdaBelief (Zhuang et al., NeurIPS 2020, arXiv:2010.07468): Adam whose second moment is the EMA of
// the gradient's squared deviation from its momentum, the "belief". Reference: juntang-zhuang's
// adabelief-pytorch 0.2.0 (adabelief_pytorch/AdaBelief.py), op for op.
//
//   g ← −g if maximize
//   weight_decouple ? p ← p·(1 − wd·(fixed_decay ? 1 : lr)) : g ← g + wd·p  (coupled only if wd ≠ 0)
//   m ← β1·m + (1 − β1)·g   (mul_, add_: not torch's lerp)
//   s ← β2·s + (1 − β2)·(g − m)²;  s ← s + ε   (ε added into the state, every step)
//   amsgrad: ŝ ← max(ŝ, s)  (read only by the unrectified update, as in the reference)
//   rectify=False: p ← p − (lr/(1 − β1^t)) · m / (√(ŝ or s) / √(1 − β2^t) + ε)
//   rectify=True:  ρ∞ = 2/(1 − β2) − 1;  ρ_t = ρ∞ − 2t·β2^t/(1 − β2^t)
//     ρ_t ≥ 5: p ← p − lr·r·m / (√s + ε),  r = √((1 − β2^t)(ρ_t − 4)/(ρ∞ − 4)(ρ_t − 2)/ρ_t·ρ∞/(ρ∞ − 2)) / (1 − β1^t)
//     ρ_t < 5: degenerated_to_sgd ? p ← p − (lr/(1 − β1^t))·m : p unchanged
#include "pyopt/rules/base.hpp"

PYOPT_RULES_BEGIN

struct AdaBelief : RuleBase {
  static constexpr const char* name = "adabelief";
  enum Hyper {
    lr, beta1, beta2, eps, weight_decay, amsgrad, weight_decouple, fixed_decay, rectify, degenerated_to_sgd,
    maximize, kNumHyper
  };
  static constexpr const char* slot_names[] = {"exp_avg", "exp_avg_var", "max_exp_avg_var"};
  static constexpr bool maximize_policy = true;
  static constexpr Decay decay_policy = Decay::WeightDecouple;

  enum Variant { kAmsgrad = 1, kRectify = 2 };
  static constexpr int num_variants = 4;
  static int variant(const double* h) {
    return (h[amsgrad] != 0.0 ? kAmsgrad : 0) | (h[rectify] != 0.0 ? kRectify : 0);
  }
  static constexpr unsigned slot_mask(int v) { return (v & kAmsgrad) ? 0b111u : 0b011u; }

  template <class T> struct Coeffs {
    T beta1, one_minus_beta1, beta2, one_minus_beta2, eps, bc2_sqrt;
    T neg_step;       // unrectified: −lr/bc1; rectified: −r·lr in adaptive steps (ρ_t ≥ 5), else 1
    T adaptive;       // rectified: 1 if ρ_t ≥ 5, else 0 (a T: GCC vectorizes a select on a T compare)
    T sgd;            // rectified: 1 in the SGD steps (ρ_t < 5 and degenerated_to_sgd), else 0
    T sgd_coeff;      // −lr/bc1 (the reference's −step_size·lr) in SGD steps, else 1
    T one;            // read instead of s under the root outside adaptive steps
    T neg_zero;       // −0, read instead of m by the term a step does not take: x + (−0) = x exactly
    T eps_adaptive;   // ε in adaptive steps, 0 otherwise (√1 + 0 = 1 exactly)
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t t, double*) {
    const double b1 = h[beta1], b2 = h[beta2], lrv = h[lr];
    const double bc1 = 1.0 - std::pow(b1, double(t));
    const double beta2_t = std::pow(b2, double(t));
    const double bc2 = 1.0 - beta2_t;
    double neg_step = -(lrv / bc1);
    bool adaptive = true, sgd = false;
    double sgd_coeff = 1.0;
    if (h[rectify] != 0.0) {
      // The reference's Python arithmetic, in its order.
      const double n_max = 2.0 / (1.0 - b2) - 1.0;
      const double n_sma = n_max - double(2 * t) * beta2_t / (1.0 - beta2_t);
      adaptive = n_sma >= 5.0;
      if (adaptive) {
        const double step_size =
            std::sqrt((1.0 - beta2_t) * (n_sma - 4.0) / (n_max - 4.0) * (n_sma - 2.0) / n_sma * n_max / (n_max - 2.0)) /
            (1.0 - std::pow(b1, double(t)));
        neg_step = -step_size * lrv;
      } else {
        neg_step = 1.0;
        sgd = h[degenerated_to_sgd] != 0.0;
        if (sgd) sgd_coeff = -(1.0 / (1.0 - std::pow(b1, double(t)))) * lrv;
      }
    }
    return {T(b1),
            T(1.0 - b1),
            T(b2),
            T(1.0 - b2),
            T(h[eps]),
            T(std::sqrt(bc2)),  // math.sqrt(bias_correction2)
            T(neg_step),
            T(adaptive ? 1.0 : 0.0),
            T(sgd ? 1.0 : 0.0),
            T(sgd_coeff),
            T(1.0),
            T(-0.0),
            T(adaptive ? h[eps] : 0.0)};
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    T& m = s[0];
    T& v = s[1];
    m = fmadd(k.one_minus_beta1, g, m * k.beta1);                      // exp_avg.mul_(β1).add_(g, alpha=1 − β1)
    const T r = g - m;                                                 // grad_residual
    v = fmadd(k.one_minus_beta2 * r, r, v * k.beta2);                  // .mul_(β2).addcmul_(r, r, value=1 − β2)
    v = v + k.eps;                                                     // exp_avg_var.add_(eps)
    if constexpr (V & kAmsgrad) s[2] = nan_max(s[2], v);               // torch.max(max_exp_avg_var, …)
    if constexpr (!(V & kRectify)) {
      const T second = (V & kAmsgrad) ? s[2] : v;
      const T denom = std::sqrt(second) / k.bc2_sqrt + k.eps;
      p = p + (k.neg_step * m) / denom;  // p.addcdiv_(exp_avg, denom, value=−step_size)
    } else {
      // ρ_t is per step, not per element. Selecting between the two updates would block
      // vectorization (GCC keeps the division under a branch), so every step runs both, and each
      // step's unused term reads −0 instead of m: fma(1, −0, p) = p and p + (1·−0)/(√1 + 0) = p
      // exactly, for any p. Only inputs are selected; s, unread outside adaptive steps, and m,
      // unread when no step is taken, cannot leak a NaN in.
      const T m_sgd = k.sgd != T(0) ? m : k.neg_zero;
      const T m_adaptive = k.adaptive != T(0) ? m : k.neg_zero;
      const T base = fmadd(k.sgd_coeff, m_sgd, p);  // p.add_(exp_avg, alpha=−step_size·lr)
      const T denom = std::sqrt(k.adaptive != T(0) ? v : k.one) + k.eps_adaptive;
      p = base + (k.neg_step * m_adaptive) / denom;  // addcdiv_(exp_avg, √s + ε, value=−step_size·lr)
    }
  }
};

PYOPT_RULES_END
