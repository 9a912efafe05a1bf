#pragma once
// Adam (Kingma & Ba, 2015, arXiv:1412.6980), AdamW (Loshchilov & Hutter, 2019, arXiv:1711.05101)
// and AMSGrad (Reddi et al., 2018). Reference: torch.optim.Adam / AdamW 2.13, single-tensor path.
//
//   g ← −g if maximize;  g ← g + wd·p (coupled)  or  p ← p·(1 − lr·wd) (decoupled, AdamW)
//   m ← lerp(m, g, 1 − β1);  v ← β2·v + (1 − β2)·g²;  v̂max ← max(v̂max, v) (amsgrad)
//   p ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)
#include "pyopt/rules/base.hpp"

PYOPT_RULES_BEGIN

struct Adam : RuleBase {
  static constexpr const char* name = "adam";
  enum Hyper { lr, beta1, beta2, eps, weight_decay, amsgrad, decoupled_weight_decay, maximize, cautious, kNumHyper };
  static constexpr const char* slot_names[] = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
  static constexpr unsigned int8_slots = 0b111, nonnegative_slots = 0b110;
  static constexpr bool fused_bfloat16 = true;  // bfloat16 params/states in its own loop (driver.hpp)
  static constexpr bool maximize_policy = true;
  static constexpr Decay decay_policy = Decay::TorchFlag;
  // cautious: u = m masked where m·g ≤ 0, normalised as C-Optim's c_adamw.py (no package has it).
  static constexpr bool cautious_policy = true;
  static constexpr CautiousScale cautious_scale = CautiousScale::MeanClamped;

  enum Variant { kAmsgrad = 1, kLerpFromEnd = 2 };
  static constexpr int num_variants = 4;
  static int variant(const double* h) {
    int v = h[amsgrad] != 0.0 ? kAmsgrad : 0;
    if (lerp_from_end(1.0 - h[beta1])) v |= kLerpFromEnd;  // the form of torch's lerp (common.hpp)
    return v;
  }
  static constexpr unsigned slot_mask(int v) { return (v & kAmsgrad) ? 0b111u : 0b011u; }

  template <class T> struct Coeffs {
    T beta1_weight, beta2, one_minus_beta2, bc2_sqrt, eps, neg_step_size;
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t t, double*) {
    const double bc1 = 1.0 - std::pow(h[beta1], double(t));
    const double bc2 = 1.0 - std::pow(h[beta2], double(t));
    return {lerp_coeff<T>(1.0 - h[beta1]),
            T(h[beta2]),
            T(1.0 - h[beta2]),
            T(std::pow(bc2, 0.5)),  // Python's bias_correction2**0.5
            T(h[eps]),
            T(-(h[lr] / bc1))};
  }

  // The moments' update; the direction is m (what a cautious step masks).
  template <int V, class T> static PYOPT_INLINE T direction(const Coeffs<T>& k, T, T g, T* s) {
    T& m = s[0];
    T& v = s[1];
    m = lerp<(V & kLerpFromEnd) != 0>(m, g, k.beta1_weight);
    v = fmadd(k.one_minus_beta2 * g, g, v * k.beta2);  // .mul_(β2).addcmul_(g, g, value=1 − β2)
    if constexpr (V & kAmsgrad) s[2] = nan_max(s[2], v);
    return m;
  }
  template <int V, class T> static PYOPT_INLINE void apply(const Coeffs<T>& k, T& p, T, T* s, T u) {
    const T second = (V & kAmsgrad) ? s[2] : s[1];
    const T denom = std::sqrt(second) / k.bc2_sqrt + k.eps;
    p = p + (k.neg_step_size * u) / denom;  // param.addcdiv_(exp_avg, denom, value=−step_size)
  }
  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    apply<V>(k, p, g, s, direction<V>(k, p, g, s));
  }
};

PYOPT_RULES_END
