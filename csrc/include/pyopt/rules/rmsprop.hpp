#pragma once
// RMSprop (Hinton, Coursera lecture 6e, 2012; centered form from Graves, 2013, arXiv:1308.0850).
// Reference: torch.optim.RMSprop 2.13, single-tensor path. No bias correction.
//
//   g ← −g if maximize;  g ← g + wd·p;  v ← α·v + (1 − α)·g²
//   centered: ḡ ← lerp(ḡ, g, 1 − α), a = √(v − ḡ²) + ε;  else a = √v + ε
//   momentum: b ← μ·b + g/a, p ← p − lr·b;  else p ← p − lr·g/a
#include "pyopt/rules/base.hpp"

PYOPT_RULES_BEGIN

struct Rmsprop : RuleBase {
  static constexpr const char* name = "rmsprop";
  enum Hyper { lr, alpha, eps, weight_decay, momentum, centered, maximize, kNumHyper };
  static constexpr const char* slot_names[] = {"square_avg", "momentum_buffer", "grad_avg"};
  static constexpr unsigned int8_slots = 0b111, nonnegative_slots = 0b1;
  static constexpr bool maximize_policy = true;
  static constexpr Decay decay_policy = Decay::Coupled;

  enum Variant { kMomentum = 1, kCentered = 2, kLerpFromEnd = 4 };  // the last: centered only
  static constexpr int num_variants = 8;
  static int variant(const double* h) {
    int v = h[momentum] > 0.0 ? kMomentum : 0;
    if (h[centered] != 0.0) v |= kCentered | (lerp_from_end(1.0 - h[alpha]) ? kLerpFromEnd : 0);
    return v;
  }
  static constexpr unsigned slot_mask(int v) {
    return 0b001u | ((v & kMomentum) ? 0b010u : 0u) | ((v & kCentered) ? 0b100u : 0u);
  }

  template <class T> struct Coeffs {
    T alpha, one_minus_alpha, grad_avg_weight, eps, momentum, neg_lr;
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t, double*) {
    return {T(h[alpha]), T(1.0 - h[alpha]),
            lerp_coeff<T>(1.0 - h[alpha]), T(h[eps]), T(h[momentum]), T(-h[lr])};
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    T& square_avg = s[0];
    square_avg = fmadd(k.one_minus_alpha * g, g, square_avg * k.alpha);  // .mul_(α).addcmul_(g, g, value=1 − α)
    T avg;
    if constexpr (V & kCentered) {
      T& grad_avg = s[2];
      grad_avg = lerp<(V & kLerpFromEnd) != 0>(grad_avg, g, k.grad_avg_weight);
      avg = std::sqrt(fmadd(-grad_avg, grad_avg, square_avg));  // square_avg.addcmul(ḡ, ḡ, value=−1)
    } else {
      avg = std::sqrt(square_avg);
    }
    avg = avg + k.eps;
    if constexpr (V & kMomentum) {
      T& buf = s[1];
      buf = buf * k.momentum + g / avg;  // buf.mul_(μ).addcdiv_(grad, avg)
      p = fmadd(k.neg_lr, buf, p);
    } else {
      p = p + (k.neg_lr * g) / avg;  // param.addcdiv_(grad, avg, value=−lr)
    }
  }
};

PYOPT_RULES_END
