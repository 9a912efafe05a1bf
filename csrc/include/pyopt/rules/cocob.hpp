#pragma once
// COCOB-Backprop, continuous coin betting (Orabona & Tommasi, 2017, arXiv:1705.07795, Alg. 2), as
// optax 0.2.8's optax.contrib.cocob: add_decayed_weights → scale by +lr → scale_by_cocob(α, ε).
//
//   g ← −g if maximize;  c = (g + wd·p)·lr  (wd·p only when wd ≠ 0);  p0 ← p at t = 1
//   L ← max(L, |c|)  (L starts at ε);  G ← G + |c|;  R ← max(R − c·(p − p0), 0);  C ← C − c
//   p ← p + (−p + (p0 + C / (L·max(G + L, α·L))·(L + R)))
//
// The new param is p0 + C/(L·max(G + L, αL))·(L + R); optax returns it as an update, −p + ( … ),
// that apply_updates adds to p, and so does this rule (the rounding of p + (−p + x) is kept).
// lr (default 1) only rescales the gradient: COCOB needs no learning rate. The state keeps optax's
// names: init_particles (p0, the param before the first step), cumulative_gradients (C), scale
// (L), subgradients (G), reward (R).
#include "pyopt/rules/base.hpp"

PYOPT_RULES_BEGIN

struct Cocob : RuleBase {
  static constexpr const char* name = "cocob";
  enum Hyper { lr, alpha, eps, weight_decay, maximize, kNumHyper };
  static constexpr const char* slot_names[] = {"init_particles", "cumulative_gradients", "scale", "subgradients",
                                               "reward"};
  static constexpr bool maximize_policy = true;
  static double initial_state(int slot, const double* h) { return slot == 2 ? h[eps] : 0.0; }

  // Own weight decay (optax adds wd·p before scaling by lr; it skips a zero decay).
  enum Variant { kDecay = 1 };
  static constexpr int num_variants = 2;
  static int variant(const double* h) { return h[weight_decay] != 0.0 ? kDecay : 0; }
  static constexpr unsigned slot_mask(int) { return 0b11111u; }

  template <class T> struct Coeffs {
    T lr, alpha, weight_decay;
    bool first;  // t = 1: p0 is the param as it is now
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t t, double*) {
    return {T(h[lr]), T(h[alpha]), T(h[weight_decay]), t == 1};
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    T& p0 = s[0];
    T& cumulative = s[1];
    T& scale = s[2];
    T& subgradients = s[3];
    T& reward = s[4];
    if constexpr (V & kDecay) g = g + k.weight_decay * p;
    const T c = g * k.lr;
    if (k.first) p0 = p;
    scale = nan_max(scale, std::fabs(c));
    subgradients = subgradients + std::fabs(c);
    reward = nan_max(reward - c * (p - p0), T(0));
    cumulative = cumulative - c;
    const T bet = cumulative / (scale * nan_max(subgradients + scale, k.alpha * scale)) * (scale + reward);
    p = p + (-p + (p0 + bet));
  }
};

PYOPT_RULES_END
