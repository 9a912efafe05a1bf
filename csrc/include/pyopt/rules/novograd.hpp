#pragma once
// NovoGrad, layer-wise second moments (Ginsburg et al., 2019, arXiv:1905.11286). Reference:
// pytorch-optimizer 4.1.0 NovoGrad (optimizer/novograd.py, per-param path).
//
//   g ← −g if maximize;  n = Σ g² over the tensor (the reduction pass)
//   v ← n at the tensor's first step, else lerp(v, n, 1 − β2)   (v: a per-tensor scalar, "grads_ema")
//   ĝ = g / (√v + ε)
//   wd ≠ 0: weight_decouple ? p ← p·(1 − wd·(fixed_decay ? 1 : lr)) : ĝ ← ĝ + wd·p
//   first step: m ← ĝ;  else m ← β1·m + (grad_averaging ? (1 − β1)·ĝ : ĝ)
//   p ← p − lr·m
//
// Rounding: the reference keeps v as a 0-dim tensor in the param dtype, so v, √v + ε and the
// scalar lerp are computed in T here too (from the double sum rounded to T); torch sums g² in T
// pairwise, so v may differ by an ulp: not bit for bit. The coupled decay is applied to the
// normalised gradient, as in the reference. The first step is a per-step gate (β1 → 0, scaling → 1
// at t = 1, m starts at 0), not a branch. The reference's undocumented `adam_debias` kwarg (scaling
// lr by √(1 − β2^t)) is not supported.
#include "pyopt/rules/base.hpp"

PYOPT_RULES_BEGIN

struct NovoGrad : RuleBase {
  static constexpr const char* name = "novograd";
  enum Hyper {
    lr, beta1, beta2, weight_decay, weight_decouple, fixed_decay, grad_averaging, eps, maximize, kNumHyper
  };
  static constexpr const char* slot_names[] = {"moments"};
  static constexpr bool maximize_policy = true;
  static constexpr int num_scalars = 1;
  static constexpr const char* scalar_name_list[] = {"grads_ema"};
  static constexpr const char* const* scalar_names = scalar_name_list;
  static constexpr int num_reductions = 1;  // Σ g²

  // Own weight decay: applied to g after its division by the norm EMA.
  enum Variant { kCoupledDecay = 1, kDecoupledDecay = 2 };
  static constexpr int num_variants = 4;
  static int variant(const double* h) {
    if (h[weight_decay] == 0.0) return 0;
    return h[weight_decouple] != 0.0 ? kDecoupledDecay : kCoupledDecay;
  }
  static constexpr unsigned slot_mask(int) { return 0b1u; }

  template <class T> struct Coeffs {
    T decay, weight_decay, beta1, grad_scale, neg_lr, ema_weight, eps;
    bool first, ema_from_end;
    double* scalars;
    T denom;  // set by finish()
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t t, double* scalars) {
    const bool first = t == 1;
    return {T(1.0 - h[weight_decay] * (h[fixed_decay] != 0.0 ? 1.0 : h[lr])), T(h[weight_decay]),
            T(first ? 0.0 : h[beta1]), T(first || h[grad_averaging] == 0.0 ? 1.0 : 1.0 - h[beta1]), T(-h[lr]),
            lerp_coeff<T>(1.0 - h[beta2]), T(h[eps]), first, lerp_from_end(1.0 - h[beta2]), scalars, T(1)};
  }

  template <int V, class T> static PYOPT_INLINE void reduce(const Coeffs<T>&, T, T g, T*, T* r) {
    r[0] = g * g;  // grad.pow(2) (the sign of g does not matter)
  }

  template <class T> static void finish(Coeffs<T>& k, const double*, const double* sums) {
    const T n = T(sums[0]);  // grad.pow(2).sum()
    T v = n;
    if (!k.first) v = lerp_step(T(k.scalars[0]), n, k.ema_weight, k.ema_from_end);  // grads_ema.lerp_(n, 1 − β2)
    k.scalars[0] = double(v);
    k.denom = std::sqrt(v) + k.eps;  // grads_ema.sqrt().add_(eps)
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    T& m = s[0];
    g = g / k.denom;                                                   // grad.div_(de_nom)
    if constexpr (V & kDecoupledDecay) p = p * k.decay;
    if constexpr (V & kCoupledDecay) g = fmadd(k.weight_decay, p, g);  // grad.add_(p, alpha=wd)
    m = m * k.beta1 + g * k.grad_scale;  // first: m = ĝ; else [grad.mul_(1 − β1)]; m.mul_(β1).add_(grad)
    p = fmadd(k.neg_lr, m, p);           // p.add_(moments, alpha=−lr)
  }
};

PYOPT_RULES_END
