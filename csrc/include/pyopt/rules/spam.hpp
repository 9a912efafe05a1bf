#pragma once
// SPAM, spike-aware Adam with momentum reset (Huang et al., 2025, arXiv:2501.06842). Reference:
// pytorch-optimizer 4.1.0 SPAM (optimizer/spam.py, per-param path).
//
//   g ← −g if maximize
//   t ≡ 0 (mod gap): m ← 0, v ← 0                                   (gap = update_proj_gap)
//   θ ≠ 0, t ≥ A and t mod gap ≥ A:  g² > θ·v ⇒ g ← sign(g)·√(θ·v)    (θ = threshold, A = grad_accu_steps)
//   m ← lerp(m, g, 1 − β1);  v ← β2·v + (1 − β2)·g²
//   p ← p − s(t)·lr·√(1 − β2^t)/(1 − β1^t) · m / (√v + ε);   wd ≠ 0: p ← p·(1 − lr·wd)   (after the step)
//
// s(t) = 1 − death(c), the warmup after each reset: c = t mod gap once t > 1 and t ≥ gap (the
// reference's current_step; warmup_epoch + t before the first reset), death(c) = 0 for c ≥ W
// (W = warmup_epoch), else the value its CosineDecay(0.99, W) — torch's CosineAnnealingLR(T_max =
// W + 1) stepped recursively from 0.99 — reaches at epoch c + 1, recomputed here in double with the
// same recursion. All of these are per-step scalars; the element-wise work is Adam's.
//
// Differences: the reference counts steps per optimizer (a param without a gradient still advances
// the clock); pyopt counts per tensor, the same when every param steps. density < 1 (random sparse
// update masks on 2-D params) is pyopt's Python layer (pyopt/spam.py): it draws the masks (from
// `seed`, which this rule does not read) and runs this rule with density = 1 on the gathered masked
// entries and their compact moments; the rule itself refuses density < 1 (it would update every
// entry). The reference writes 2-D params through its mask path, p.add_(m/d, alpha=−s), 1-D ones
// with p.addcdiv_(m, d, −s); pyopt rounds as addcdiv for every tensor.
#include "pyopt/rules/base.hpp"
#include "pyopt/rules/sign.hpp"

PYOPT_RULES_BEGIN

struct Spam : RuleBase {
  static constexpr const char* name = "spam";
  enum Hyper {
    lr, beta1, beta2, density, weight_decay, warmup_epoch, threshold, grad_accu_steps, update_proj_gap, eps,
    maximize, seed, kNumHyper
  };
  static constexpr const char* slot_names[] = {"exp_avg", "exp_avg_sq"};
  static constexpr unsigned int8_slots = 0b11, nonnegative_slots = 0b10;
  static constexpr bool maximize_policy = true;
  // Own decoupled weight decay, after the step (the driver's comes before it).
  enum Variant { kLerpFromEnd = 1 };
  static constexpr int num_variants = 2;
  static int variant(const double* h) { return lerp_from_end(1.0 - h[beta1]) ? kLerpFromEnd : 0; }
  static constexpr unsigned slot_mask(int) { return 0b11u; }

  static void check(const double* h) {
    if (h[density] != 1.0)
      throw std::invalid_argument("invalid density: " + format_value(h[density]) +
                                  " (must be 1 here: the random sparse update masks of density < 1 are drawn "
                                  "by pyopt's Python layer, pyopt.SPAM)");
    for (int i : {int(warmup_epoch), int(grad_accu_steps), int(update_proj_gap), int(seed)}) {
      if (!std::isfinite(h[i]) || h[i] != std::floor(h[i])) {
        const char* names[] = {"warmup_epoch", "grad_accu_steps", "update_proj_gap", "seed"};
        const int which = i == warmup_epoch ? 0 : i == grad_accu_steps ? 1 : i == update_proj_gap ? 2 : 3;
        throw std::invalid_argument(std::string("invalid ") + names[which] + ": " + format_value(h[i]) +
                                    (i == seed ? " (must be a finite whole number)"
                                               : " (must be a finite whole number of steps)"));
      }
    }
  }

  // The reference's 1 − warmup.get_death_rate(current_step).
  static double warmup_scale(const double* h, int64_t t) {
    const int64_t gap = int64_t(h[update_proj_gap]);
    const double warmup = h[warmup_epoch];
    const double current = (t > 1 && t >= gap) ? double(t % gap) : warmup + double(t);
    if (current >= warmup) return 1.0;
    const double t_max = warmup + 1.0, pi = 3.141592653589793;
    double rate = 0.99;
    for (int64_t e = 1; e <= int64_t(current) + 1; ++e)
      rate = (1.0 + std::cos(pi * double(e) / t_max)) / (1.0 + std::cos(pi * double(e - 1) / t_max)) * (rate - 0.0) +
             0.0;
    return 1.0 - rate;
  }

  template <class T> struct Coeffs {
    T beta1_weight, beta2, one_minus_beta2, threshold, eps, neg_step, decay;
    bool reset, clip;
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t t, double*) {
    const int64_t gap = int64_t(h[update_proj_gap]);
    const double accu = h[grad_accu_steps];
    const double step_size = h[lr] * std::sqrt(1.0 - std::pow(h[beta2], double(t))) /
                             (1.0 - std::pow(h[beta1], double(t)));
    const bool clip = h[threshold] != 0.0 && double(t) >= accu && double(t % gap) >= accu;
    return {lerp_coeff<T>(1.0 - h[beta1]), T(h[beta2]), T(1.0 - h[beta2]), T(h[threshold]), T(h[eps]),
            T(-step_size * warmup_scale(h, t)), h[weight_decay] != 0.0 ? T(1.0 - h[weight_decay] * h[lr]) : T(1),
            t % gap == 0, clip};
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    T& m = s[0];
    T& v = s[1];
    m = k.reset ? T(0) : m;  // state['exp_avg'] = zeros_like(grad)
    v = k.reset ? T(0) : v;
    if (k.clip) {
      const T limit = k.threshold * v;                                       // threshold · exp_avg_sq
      g = g * g > limit ? sign(g) * std::sqrt(v * k.threshold) : g;          // grad.sign() · √(v·threshold)
    }
    m = lerp<(V & kLerpFromEnd) != 0>(m, g, k.beta1_weight);                // exp_avg.lerp_(grad, 1 − β1)
    v = fmadd(k.one_minus_beta2 * g, g, v * k.beta2);                       // mul_(β2).addcmul_(g, g, 1 − β2)
    p = (p + (k.neg_step * m) / (std::sqrt(v) + k.eps)) * k.decay;          // addcdiv_, then p.mul_(1 − lr·wd)
  }
};

PYOPT_RULES_END
