#pragma once
// ASGD, averaged stochastic gradient descent (Polyak & Juditsky, 1992). Reference:
// torch.optim.ASGD 2.13, single-tensor path (capturable=False).
//
//   g ← g + λ_wd·p;  p ← p·(1 − λ·η);  p ← p − η·g
//   ax ← p if μ = 1, else ax + (p − ax)·μ
//   then η ← lr / (1 + λ·lr·t)^α,  μ ← 1 / max(1, t − t0)
// η and μ are per-tensor scalar state, used the step after they are computed (step 1: η = lr,
// μ = 1). torch keeps them as tensors of the default dtype: the harness (and pyopt) round them to
// the param's dtype, so float32 params keep float32 η and μ, computed in double and rounded as
// torch's copy_ of a Python float rounds them.
#include <algorithm>
#include <type_traits>

#include "pyopt/rules/base.hpp"

PYOPT_RULES_BEGIN

struct Asgd : RuleBase {
  static constexpr const char* name = "asgd";
  enum Hyper { lr, lambd, alpha, t0, weight_decay, maximize, kNumHyper };
  static constexpr const char* slot_names[] = {"ax"};
  static constexpr bool maximize_policy = true;
  static constexpr Decay decay_policy = Decay::Coupled;
  static constexpr int num_scalars = 2;
  static constexpr const char* scalar_name_list[] = {"eta", "mu"};
  static constexpr const char* const* scalar_names = scalar_name_list;
  // eta's initial value is the group's lr, which prepare() takes at step 1 (this 0 is never used).
  static double initial_scalar(int index) { return index == 1 ? 1.0 : 0.0; }

  static constexpr unsigned slot_mask(int) { return 0b1u; }

  template <class T> struct Coeffs {
    T decay, neg_eta, mu;
    bool copy;  // μ == 1: torch copies p into ax instead of averaging
  };
  template <class T> static double round_to(double x) {
    if constexpr (std::is_same_v<T, float>)
      return double(float(x));
    else
      return x;
  }
  template <class T> static Coeffs<T> prepare(const double* h, int64_t t, double* scalars) {
    const double eta = t == 1 ? round_to<T>(h[lr]) : scalars[0];
    const double mu = t == 1 ? 1.0 : scalars[1];
    const double step = double(t);
    scalars[0] = round_to<T>(h[lr] / std::pow(1.0 + h[lambd] * h[lr] * step, h[alpha]));
    scalars[1] = round_to<T>(1.0 / std::max(1.0, step - h[t0]));
    return {T(1.0 - h[lambd] * eta), T(-eta), T(mu), T(mu) == T(1)};
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    T& ax = s[0];
    p = p * k.decay;
    p = fmadd(k.neg_eta, g, p);
    const T averaged = ax + (p - ax) * k.mu;
    ax = k.copy ? p : averaged;
  }
};

PYOPT_RULES_END
