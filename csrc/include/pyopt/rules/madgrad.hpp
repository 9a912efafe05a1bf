#pragma once
// MADGRAD, momentumized adaptive dual-averaged gradient (Defazio & Jelassi, 2021,
// arXiv:2101.11075). Reference: pytorch-optimizer 4.1.0 MADGRAD (optimizer/madgrad.py, per-param
// dense path).
//
//   η = lr + ε (0 if lr = 0);  λ = η·√t                     (quirk kept: the reference adds ε to lr)
//   g ← −g if maximize;  not weight_decouple and wd > 0: g ← g + wd·p
//   momentum = 0: x0 = p + s / (∛ν + ε)   else x0 = the state x0 (p at the first step)
//   ν ← ν + λ·g²;  s ← s + λ·g;  z = x0 − s / (∛ν + ε)
//   momentum = 0: p ← z   else p ← lerp(p, z, 1 − momentum)
//   weight_decouple and wd > 0: p ← p − η·wd·p_old           (p_old: p before this step's update)
//   ε = 0: a zero ∛ν + ε is taken as +inf (the reference's masked_fill_), so that coordinate stays.
//
// Rounding: ∛ν is std::pow(ν, T(1/3)), correctly rounded; torch's pow(1/3) uses SLEEF's (1 ulp),
// so this is not bit for bit. addcmul_(g, g, value=λ) = fmadd(λ·g, g, ν); s.add_(g, alpha=λ) =
// fmadd(λ, g, s); x0.addcdiv(s, rms, value=−1) = x0 + (−s)/rms; p.add_(p_old, alpha=−η·wd).
// The reference counts t in a global state['k'] (one per step() call, all groups); here it is the
// tensor's own step, the same unless a param skips steps. x0 is set from p at the tensor's step 1
// (for the functional API too: the x0 passed in at step 1 is overwritten).
#include "pyopt/rules/base.hpp"

PYOPT_RULES_BEGIN

struct Madgrad : RuleBase {
  static constexpr const char* name = "madgrad";
  enum Hyper { lr, momentum, weight_decay, weight_decouple, eps, maximize, kNumHyper };
  static constexpr const char* slot_names[] = {"grad_sum_sq", "s", "x0"};
  static constexpr bool maximize_policy = true;

  // Own weight decay: decoupled decay subtracts η·wd·p_old after the step.
  enum Variant { kMomentum = 1, kCoupledDecay = 2, kDecoupledDecay = 4, kEpsZero = 8, kLerpFromEnd = 16 };
  static constexpr int num_variants = 32;
  static int variant(const double* h) {
    int v = 0;
    if (h[momentum] != 0.0) v |= kMomentum | (lerp_from_end(1.0 - h[momentum]) ? kLerpFromEnd : 0);
    if (h[weight_decay] != 0.0) v |= h[weight_decouple] != 0.0 ? kDecoupledDecay : kCoupledDecay;
    if (h[eps] == 0.0) v |= kEpsZero;
    return v;
  }
  static constexpr unsigned slot_mask(int v) { return (v & kMomentum) ? 0b111u : 0b011u; }

  template <class T> struct Coeffs {
    T weight_decay, lambda, third, eps, momentum_weight, neg_decay;
    bool first;
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t t, double*) {
    const double eta = h[lr] != 0.0 ? h[lr] + h[eps] : 0.0;
    return {T(h[weight_decay]),
            T(eta * std::pow(double(t), 0.5)),  // lr · math.pow(k + 1, 0.5)
            T(1.0 / 3.0),
            T(h[eps]),
            lerp_coeff<T>(1.0 - h[momentum]),
            T(-eta * h[weight_decay]),
            t == 1};
  }

  template <int V, class T> static PYOPT_INLINE T rms(const Coeffs<T>& k, T grad_sum_sq) {
    T r = std::pow(grad_sum_sq, k.third) + k.eps;  // grad_sum_sq.pow(1/3).add_(eps)
    if constexpr (V & kEpsZero) r = r == T(0) ? T(INFINITY) : r;
    return r;
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    T& nu = s[0];
    T& sum = s[1];
    if constexpr (V & kCoupledDecay) g = fmadd(k.weight_decay, p, g);  // grad.add_(p, alpha=wd)
    T x0;
    if constexpr (V & kMomentum) {
      x0 = k.first ? p : s[2];  // state['x0'] = p.clone() at the first step
      s[2] = x0;
    } else {
      x0 = p + sum / rms<V>(k, nu);  // p.addcdiv(s, rms, value=1)
    }
    nu = fmadd(k.lambda * g, g, nu);  // grad_sum_sq.addcmul_(grad, grad, value=λ)
    const T r = rms<V>(k, nu);
    sum = fmadd(k.lambda, g, sum);    // s.add_(grad, alpha=λ)
    const T p_old = p;
    const T z = x0 + (-sum) / r;      // x0.addcdiv(s, rms, value=−1)
    if constexpr (V & kMomentum)
      p = lerp<(V & kLerpFromEnd) != 0>(p, z, k.momentum_weight);  // p.lerp_(z, 1 − momentum)
    else
      p = z;
    if constexpr (V & kDecoupledDecay) p = fmadd(k.neg_decay, p_old, p);  // p.add_(p_old, alpha=−η·wd)
  }
};

PYOPT_RULES_END
