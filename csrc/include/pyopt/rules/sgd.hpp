#pragma once
// Stochastic gradient descent with optional (heavy-ball or Nesterov) momentum, dampening and
// coupled L2 weight decay (Sutskever et al., 2013). Reference: torch.optim.SGD 2.13, single-tensor.
//
//   g ← −g if maximize;  g ← g + wd·p
//   b ← g at the first step, else μ·b + (1 − τ)·g;   g ← g + μ·b (nesterov) or b
//   p ← p − lr·g
#include "pyopt/rules/base.hpp"

PYOPT_RULES_BEGIN

struct Sgd : RuleBase {
  static constexpr const char* name = "sgd";
  enum Hyper { lr, momentum, dampening, weight_decay, nesterov, maximize, kNumHyper };
  static constexpr const char* slot_names[] = {"momentum_buffer"};
  static constexpr unsigned int8_slots = 0b1, nonnegative_slots = 0b0;
  static constexpr bool fused_bfloat16 = true;  // bfloat16 params/states in its own loop (driver.hpp)
  static constexpr bool maximize_policy = true;
  static constexpr Decay decay_policy = Decay::Coupled;

  enum Variant { kMomentum = 1, kNesterov = 2 };
  static constexpr int num_variants = 4;
  static int variant(const double* h) {
    return h[momentum] != 0.0 ? kMomentum | (h[nesterov] != 0.0 ? kNesterov : 0) : 0;
  }
  static constexpr unsigned slot_mask(int v) { return (v & kMomentum) ? 0b1u : 0u; }

  static void check(const double* h) {
    if (h[nesterov] != 0.0 && (h[momentum] <= 0.0 || h[dampening] != 0.0))
      throw std::invalid_argument("nesterov momentum requires momentum > 0 and dampening = 0");
  }

  template <class T> struct Coeffs {
    T momentum, buffer_keep, grad_gain, neg_lr;
  };
  // The buffer starts as a copy of the first gradient: b = 0·b + 1·g on a zeroed buffer.
  template <class T> static Coeffs<T> prepare(const double* h, int64_t t, double*) {
    const bool first = t == 1;
    return {T(h[momentum]), T(first ? 0.0 : h[momentum]), T(first ? 1.0 : 1.0 - h[dampening]), T(-h[lr])};
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    if constexpr (V & kMomentum) {
      T& b = s[0];
      b = fmadd(k.grad_gain, g, b * k.buffer_keep);  // buf.mul_(μ).add_(grad, alpha=1 − τ)
      if constexpr (V & kNesterov)
        g = fmadd(k.momentum, b, g);  // grad.add(buf, alpha=μ)
      else
        g = b;
    }
    p = fmadd(k.neg_lr, g, p);  // param.add_(grad, alpha=−lr)
  }
};

PYOPT_RULES_END
