#pragma once
// What schedule-free AdamW and SGD (rules/schedulefree_adamw.hpp, rules/schedulefree_sgd.hpp) share
// (Defazio et al., 2024, arXiv:2405.15682). Reference: facebookresearch `schedulefree` 1.4.1,
// AdamWScheduleFree / SGDScheduleFree, foreach=False.
//
// The param array holds y (where gradients are taken) while training; z is the base iterate and
// x = lerp(y, z, 1 − 1/β) the average that Python's eval() swaps into the array. With k = t − 1:
//   lr_k = lr·min(1, (k + 1)/warmup);  lr_max = max(lr_max, lr_k);  w = (k + 1)^r·lr_max^power
//   Σw += w;  c = w/Σw  (0 if Σw = 0)
//   AdamW: v ← β2·v + (1 − β2)·g²;  ĝ = g/(√(v/(1 − β2^(k+1))) + ε) + wd·y
//   SGD:   ĝ = g + wd·y
//   y ← lerp(y, z, c);  y ← y + lr_k(β(1 − c) − 1)·ĝ;  z ← z − lr_k·ĝ
// z starts as a copy of y at the first step. lr_max and Σw are per-tensor scalar state (the
// reference keeps them per group; the same while every param gets a gradient every step).
#include "pyopt/rules/base.hpp"

PYOPT_RULES_BEGIN

// The per-step schedule both rules share; scalars = {lr_max, weight_sum}.
struct ScheduleFreeStep {
  double lr, ckp1;
  static ScheduleFreeStep advance(double base_lr, double warmup_steps, double r, double weight_lr_power, int64_t t,
                                  double* scalars) {
    const double k = double(t - 1);
    const double sched = k < warmup_steps ? (k + 1.0) / warmup_steps : 1.0;
    const double lr = base_lr * sched;
    const double lr_max = scalars[0] = lr > scalars[0] ? lr : scalars[0];
    const double weight = std::pow(k + 1.0, r) * std::pow(lr_max, weight_lr_power);
    const double weight_sum = scalars[1] = scalars[1] + weight;
    return {lr, weight_sum != 0.0 ? weight / weight_sum : 0.0};
  }
};

template <class T> struct ScheduleFreeCoeffs {
  T beta2, one_minus_beta2, bc2, eps, weight_decay;
  T ckp1_coeff, y_coeff, neg_lr;
  bool ckp1_from_end, first_step;
};

// y ← lerp(y, z, c); y ← y + y_coeff·ĝ; z ← z − lr·ĝ. z is s[z_slot], initialised from y at step 1.
template <class T> PYOPT_INLINE void schedulefree_move(const ScheduleFreeCoeffs<T>& k, T& y, T update, T& z) {
  const T z_now = k.first_step ? y : z;  // state['z'] = torch.clone(p) on the first step
  y = fmadd(k.ckp1_coeff, z_now - y, k.ckp1_from_end ? z_now : y);  // y.lerp_(end=z, weight=ckp1)
  y = fmadd(k.y_coeff, update, y);                                   // y.add_(ĝ, alpha=lr·(β(1 − c) − 1))
  z = fmadd(k.neg_lr, update, z_now);                                // z.sub_(ĝ, alpha=lr)
}

// What both rules share besides the step: the per-tensor scalars of the schedule.
struct ScheduleFreeBase : RuleBase {
  static constexpr int num_scalars = 2;
  static constexpr const char* scalar_name_list[] = {"lr_max", "weight_sum"};
  static constexpr const char* const* scalar_names = scalar_name_list;
  static double initial_scalar(int index) { return index == 0 ? -1.0 : 0.0; }
};

PYOPT_RULES_END
