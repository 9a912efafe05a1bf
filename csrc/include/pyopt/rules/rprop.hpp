#pragma once
// Rprop, resilient backpropagation (Riedmiller & Braun, 1993). Reference: torch.optim.Rprop 2.13,
// single-tensor path (capturable=False).
//
//   f = η+ if g·prev > 0, η− if g·prev < 0, else 1   (sign of the rounded product: an underflow
//                                                      or a NaN gives 1, as torch.sign does)
//   step_size ← clamp(step_size·f, step_size_min, step_size_max)
//   g ← 0 where f = η−;  p ← p − sign(g)·step_size;  prev ← g
// step_size starts at lr (so later lr changes do nothing, as in torch). Branch-free selects on
// the rule's sign() (rules/sign.hpp), so the loop vectorizes.
#include "pyopt/rules/base.hpp"
#include "pyopt/rules/sign.hpp"

PYOPT_RULES_BEGIN

struct Rprop : RuleBase {
  static constexpr const char* name = "rprop";
  enum Hyper { lr, etaminus, etaplus, step_size_min, step_size_max, maximize, kNumHyper };
  static constexpr const char* slot_names[] = {"prev", "step_size"};
  static constexpr bool maximize_policy = true;
  static double initial_state(int slot, const double* h) { return slot == 1 ? h[lr] : 0.0; }

  static constexpr unsigned slot_mask(int) { return 0b11u; }

  template <class T> struct Coeffs {
    T etaminus, etaplus, lo, hi;
  };
  template <class T> static Coeffs<T> prepare(const double* h, int64_t, double*) {
    return {T(h[etaminus]), T(h[etaplus]), T(h[step_size_min]), T(h[step_size_max])};
  }

  template <int V, class T> static PYOPT_INLINE void update(const Coeffs<T>& k, T& p, T g, T* s) {
    T& prev = s[0];
    T& step_size = s[1];
    // torch: sign = (g·prev).sign(); sign[sign > 0] = η+; sign[sign < 0] = η−; sign[sign == 0] = 1
    T f = sign(g * prev);
    f = f > T(0) ? k.etaplus : f;
    f = f < T(0) ? k.etaminus : f;
    f = f == T(0) ? T(1) : f;
    T x = step_size * f;  // clamp_(min, max): NaN stays NaN; min > max gives max
    x = x < k.lo ? k.lo : x;
    x = x > k.hi ? k.hi : x;
    step_size = x;
    g = f == k.etaminus ? T(0) : g;
    p = fmadd(-sign(g), step_size, p);  // addcmul_(sign(g), step_size, value=-1)
    prev = g;
  }
};

PYOPT_RULES_END
