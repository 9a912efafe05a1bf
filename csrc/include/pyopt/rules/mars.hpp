#pragma once
// MARS, variance-reduced adaptive steps (Yuan et al., 2024, arXiv:2411.10438). Reference:
// pytorch-optimizer 4.1.0 MARS (optimizer/mars.py, per-param path, optimize_1d=True), mars_type
// 'adamw' (lion = false) and 'lion' (lion = true).
//
//   g ← −g if maximize
//   c ← (g − g_prev)·γ·β1/(1 − β1) + g;   c ← c / ‖c‖ when ‖c‖ > 1 (per tensor)
//   m ← lerp(m, c, 1 − β1)
//   adamw:  v ← β2·v + (1 − β2)·c²;  (ams_bound: v_max ← max(v_max, v), v ← v_max)
//           u ← m / ((√(v + 1e-15) + ε) / √(1 − β2^t) · (1 − β1^t))
//   lion:   u ← sign(m)
//   wd ≠ 0: weight_decouple ? p ← p·(1 − wd·(fixed_decay ? 1 : lr)) : g ← g + wd·p (after u is computed:
//           it only reaches g_prev, as in the reference)
//   p ← p − lr·u;   g_prev ← g
//
// The norm needs the whole tensor's c, so this rule has a reduction pass (reduce: Σc², nothing
// stored) before the update pass (recompute c, clip it, update the states and p).
// pytorch-optimizer sums ‖c‖ in the param's dtype; pyopt sums in double (a float32 run differs by
// roundings). pyopt has no shapes: every tensor takes the MARS step, as the reference's
// optimize_1d=True (its default sends 1-D params to AdamW with lr_1d, betas_1d, weight_decay_1d:
// put them in a param group of pyopt's adamw for that). mars_type='shampoo' (a Newton–Schulz
// orthogonalisation, matrix work) is pyopt/mars_shampoo.py, in numpy: pyopt.MARS(mars_type='shampoo')
// builds it. The undocumented foreach path is not offered.
#include "pyopt/rules/base.hpp"
#include "pyopt/rules/sign.hpp"

PYOPT_RULES_BEGIN

struct Mars : RuleBase {
  static constexpr const char* name = "mars";
  enum Hyper {
    lr, beta1, beta2, gamma, weight_decay, weight_decouple, fixed_decay, ams_bound, eps, lion, maximize, cautious,
    kNumHyper
  };
  static constexpr const char* slot_names[] = {"exp_avg", "exp_avg_sq", "last_grad", "max_exp_avg_sq"};
  static constexpr bool maximize_policy = true;
  static constexpr int num_reductions = 1;  // Σc²
  // cautious (the reference's flag): m masked where m·g ≤ 0 before the division (or the sign).
  static constexpr bool cautious_policy = true;

  // Own weight decay (rules with reductions do): decoupled is a per-step factor (1 when off:
  // p·1 = p exactly); coupled changes only the stored gradient, a variant.
  enum Variant { kLion = 1, kAmsBound = 2, kLerpFromEnd = 4, kCoupled = 8 };
  static constexpr int num_variants = 16;
  static int variant(const double* h) {
    const bool coupled = h[weight_decay] != 0.0 && h[weight_decouple] == 0.0;
    return (h[lion] != 0.0 ? kLion : 0) | (h[ams_bound] != 0.0 ? kAmsBound : 0) |
           (lerp_from_end(1.0 - h[beta1]) ? kLerpFromEnd : 0) | (coupled ? kCoupled : 0);
  }
  static constexpr unsigned slot_mask(int v) {
    return (v & kLion) ? 0b0101u : (v & kAmsBound) ? 0b1111u : 0b0111u;
  }

  template <class T> struct Coeffs {
    T correction, beta1_weight, beta2, one_minus_beta2, ams_eps, eps, bc2_sqrt, bc1, weight_decay, decay, neg_lr;
    T norm;     // set by finish()
    bool clip;  // ‖c‖ > 1
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t t, double*) {
    const bool decoupled = h[weight_decay] != 0.0 && h[weight_decouple] != 0.0;
    const double decay = 1.0 - h[weight_decay] * (h[fixed_decay] != 0.0 ? 1.0 : h[lr]);
    return {T(h[gamma] * (h[beta1] / (1.0 - h[beta1]))),
            lerp_coeff<T>(1.0 - h[beta1]),
            T(h[beta2]),
            T(1.0 - h[beta2]),
            T(1e-15),
            T(h[eps]),
            T(std::sqrt(1.0 - std::pow(h[beta2], double(t)))),
            T(1.0 - std::pow(h[beta1], double(t))),
            T(h[weight_decay]),
            decoupled ? T(decay) : T(1),
            T(-h[lr]),
            T(1),
            false};
  }

  // (grad − last_grad).mul_(γ·β1/(1 − β1)).add_(grad)
  template <class T> static PYOPT_INLINE T correction(const Coeffs<T>& k, T g, const T* s) {
    return (g - s[2]) * k.correction + g;
  }

  template <int V, class T> static PYOPT_INLINE void reduce(const Coeffs<T>& k, T, T g, T* s, T* r) {
    const T c = correction(k, g, s);
    r[0] = c * c;
  }

  template <class T> static void finish(Coeffs<T>& k, const double*, const double* sums) {
    const T norm = T(std::sqrt(sums[0]));
    k.clip = norm > T(1);  // NaN: no clipping, as `if c_t_norm > 1.0`
    k.norm = norm;
  }

  // The moments' update (last_grad is still read by apply); the direction is m (what a cautious step masks).
  template <int V, class T> static PYOPT_INLINE T direction(const Coeffs<T>& k, T, T g, T* s) {
    T& m = s[0];
    T& v = s[1];
    T c = correction(k, g, s);
    c = k.clip ? c / k.norm : c;                                  // c_t.div_(c_t_norm)
    m = lerp<(V & kLerpFromEnd) != 0>(m, c, k.beta1_weight);       // exp_avg.lerp_(c_t, 1 − β1)
    if constexpr ((V & kLion) == 0) {
      v = fmadd(k.one_minus_beta2 * c, c, v * k.beta2);            // exp_avg_sq.mul_(β2).addcmul_(c, c, 1 − β2)
      if constexpr ((V & kAmsBound) != 0) s[3] = nan_max(s[3], v);  // torch.maximum(max, v, out=max)
    }
    return m;
  }
  template <int V, class T> static PYOPT_INLINE void apply(const Coeffs<T>& k, T& p, T g, T* s, T m) {
    T u;
    if constexpr ((V & kLion) != 0) {
      u = sign(m);                                                 // update.sign_()
    } else {
      const T second = (V & kAmsBound) ? s[3] : s[1];
      const T denom = ((std::sqrt(second + k.ams_eps) + k.eps) / k.bc2_sqrt) * k.bc1;
      u = m / denom;                                               // update.div_(de_nom)
    }
    if constexpr ((V & kCoupled) != 0) s[2] = fmadd(k.weight_decay, p, g);  // last_grad ← grad.add_(p, alpha=wd)
    else s[2] = g;
    p = fmadd(k.neg_lr, u, p * k.decay);                           // p.mul_(1 − wd·lr); p.add_(u, alpha=−lr)
  }
  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    apply<V>(k, p, g, s, direction<V>(k, p, g, s));
  }
};

PYOPT_RULES_END
