#pragma once
// LaProp (Ziyin et al., 2020, arXiv:2002.04839): RMSprop-normalise the gradient first, then take its
// momentum. Reference: pytorch-optimizer 4.1.0 LaProp (optimizer/laprop.py, per-param path).
//
//   g ← −g if maximize;  v ← β2·v + (1 − β2)·g²
//   lr₁ ← β1·lr₁ + (1 − β1)·lr (a per-tensor scalar, float64, so lr schedules debias correctly);
//   lr₂ ← β2·lr₂ + (1 − β2) (kept for parity, unused);  step = lr / lr₁ (1 if lr = 0)
//   centered: μ ← lerp(μ, g, 1 − β2), and after `steps_before_using_centered` steps s = v − μ² else s = v
//   ams_bound: ŝ ← max(ŝ, s), s = ŝ
//   denom = (√(s + 1e-15) + ε) / √(1 − β2^t);   m ← β1·m + ((1 − β1)·lr)·g / denom;   p ← p − step·m
//   then (after the step) weight decay: weight_decouple ? p ← p·(1 − wd·(fixed_decay ? 1 : lr)) : —
//
// Coupled decay (weight_decouple=False) adds wd·p to the gradient *after* the gradient was used, so
// in the reference it changes nothing; pyopt reproduces that (weight_decay is then inert).
// The centering switch is a per-step mask from prepare(): before centering, μ² reads +0 instead of
// μ, so s = v − 0 = v exactly (not μ² times a 0/1 gate: an overflowed μ² is inf, and inf·0 is NaN).
// The mask is a bitwise AND (all bits set, or none), not a select: GCC turns `c ? μ : 0` into a
// select of v − μ² or v, keeps the product under a branch (it may trap), and then does not vectorize
// the loop on AVX2 or SSE (3-6x slower, measured).
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "pyopt/rules/base.hpp"

PYOPT_RULES_BEGIN

struct Laprop : RuleBase {
  static constexpr const char* name = "laprop";
  enum Hyper {
    lr, beta1, beta2, centered, steps_before_using_centered, weight_decay, weight_decouple, fixed_decay, ams_bound,
    eps, maximize, cautious, kNumHyper
  };
  static constexpr const char* slot_names[] = {"exp_avg", "exp_avg_sq", "exp_mean_avg_beta2", "max_exp_avg_sq"};
  static constexpr bool maximize_policy = true;
  // cautious (pytorch-optimizer 4.1.0 LaProp(cautious=True)): m masked where m·g ≤ 0 for the step only.
  static constexpr bool cautious_policy = true;
  static constexpr int num_scalars = 2;
  static constexpr const char* scalar_name_list[] = {"exp_avg_lr_1", "exp_avg_lr_2"};
  static constexpr const char* const* scalar_names = scalar_name_list;

  // Own weight decay: decoupled decay comes after the step (coupled is inert, see above).
  enum Variant { kCentered = 1, kAmsBound = 2, kDecoupledDecay = 4, kLerpFromEnd = 8 };
  static constexpr int num_variants = 16;
  static int variant(const double* h) {
    int v = 0;
    if (h[centered] != 0.0) v |= kCentered | (lerp_from_end(1.0 - h[beta2]) ? kLerpFromEnd : 0);
    if (h[ams_bound] != 0.0) v |= kAmsBound;
    if (h[weight_decay] != 0.0 && h[weight_decouple] != 0.0) v |= kDecoupledDecay;
    return v;
  }
  static constexpr unsigned slot_mask(int v) {
    return 0b0011u | ((v & kCentered) ? 0b0100u : 0u) | ((v & kAmsBound) ? 0b1000u : 0u);
  }

  // x & mask, bit for bit: x where the mask has every bit set, +0 where it has none.
  template <class T> using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  template <class T> static PYOPT_INLINE T bitwise_and(T x, T mask) {
    Bits<T> a, b;
    std::memcpy(&a, &x, sizeof a);
    std::memcpy(&b, &mask, sizeof b);
    a &= b;
    std::memcpy(&x, &a, sizeof a);
    return x;
  }
  template <class T> static T all_or_no_bits(bool on) {
    const Bits<T> bits = on ? ~Bits<T>(0) : Bits<T>(0);
    T x;
    std::memcpy(&x, &bits, sizeof x);
    return x;
  }

  template <class T> struct Coeffs {
    T beta2, one_minus_beta2, mean_weight;
    T centering;  // a mask for bitwise_and: all bits set after steps_before_using_centered steps, else none
    T ams_eps, eps, bc2_sqrt, beta1, grad_coeff, neg_step_size, decay;
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t t, double* scalars) {
    const double b1 = h[beta1], b2 = h[beta2];
    scalars[0] = scalars[0] * b1 + (1.0 - b1) * h[lr];  // state['exp_avg_lr_1']
    scalars[1] = scalars[1] * b2 + (1.0 - b2);          // state['exp_avg_lr_2']
    const double bc1 = h[lr] != 0.0 ? scalars[0] / h[lr] : 1.0;
    const double step_size = 1.0 / bc1;
    return {T(b2),
            T(1.0 - b2),
            lerp_coeff<T>(1.0 - b2),
            all_or_no_bits<T>(double(t) > h[steps_before_using_centered]),
            T(1e-15),  // apply_ams_bound's exp_avg_sq_eps
            T(h[eps]),
            T(std::sqrt(1.0 - std::pow(b2, double(t)))),
            T(b1),
            T((1.0 - b1) * h[lr]),
            T(-step_size),
            T(1.0 - h[weight_decay] * (h[fixed_decay] != 0.0 ? 1.0 : h[lr]))};
  }

  // The moments' update; the direction is m (what a cautious step masks).
  template <int V, class T> static PYOPT_INLINE T direction(const Coeffs<T>& k, T, T g, T* s) {
    T& m = s[0];
    T& v = s[1];
    v = fmadd(k.one_minus_beta2 * g, g, v * k.beta2);  // exp_avg_sq.mul_(β2).addcmul_(g, g, 1 − β2)
    T second = v;
    if constexpr (V & kCentered) {
      T& mean = s[2];
      mean = lerp<(V & kLerpFromEnd) != 0>(mean, g, k.mean_weight);  // exp_mean_avg_beta2.lerp_(g, 1 − β2)
      const T centered_mean = bitwise_and(mean, k.centering);
      second = v - centered_mean * centered_mean;                     // exp_avg_sq − mean.pow(2)
    }
    if constexpr (V & kAmsBound) {
      s[3] = nan_max(s[3], second);  // torch.maximum(max_exp_avg_sq, s, out=max_exp_avg_sq)
      second = s[3];
    }
    const T denom = (std::sqrt(second + k.ams_eps) + k.eps) / k.bc2_sqrt;  // .add(1e-15).sqrt_().add_(eps).div_(bc2_sq)
    m = m * k.beta1 + (k.grad_coeff * g) / denom;  // exp_avg.mul_(β1).addcdiv_(g, de_nom, value=(1 − β1)·lr)
    return m;
  }
  template <int V, class T> static PYOPT_INLINE void apply(const Coeffs<T>& k, T& p, T, T*, T u) {
    p = fmadd(k.neg_step_size, u, p);              // p.add_(exp_avg, alpha=−step_size)
    if constexpr (V & kDecoupledDecay) p = p * k.decay;
  }
  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    apply<V>(k, p, g, s, direction<V>(k, p, g, s));
  }
};

PYOPT_RULES_END
