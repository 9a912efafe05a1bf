#pragma once
// The anatomy of a rule (rules/adam.hpp is the annotated example):
//
//   struct Adam : RuleBase {
//     static constexpr const char* name;            // kernel name ("adam")
//     enum Hyper { lr, beta1, ..., kNumHyper };     // index of each hyperparameter in a flat double array,
//                                                   // in the order of its record (pyopt/records.def)
//     static constexpr const char* slot_names[];    // per-element state arrays, in slot order
//     static constexpr bool maximize_policy;        // the driver negates g when h[maximize] is set
//     static constexpr Decay decay_policy;          // the weight decay the driver applies (see Decay)
//     static constexpr int num_variants;            // compile-time specialisations (flags that change the loop;
//     static int variant(const double* h);          //   default 1) and which one these hyperparameters need
//     static constexpr unsigned slot_mask(int v);   // which slots that specialisation reads and writes
//     static constexpr unsigned int8_slots;         // optional: slots that may be 8-bit states, and of
//     static constexpr unsigned nonnegative_slots;  //   those the second moments (unsigned map)
//     static void check(const double* h);           // optional: conditions across hyperparameters
//                                                   // (each one's range is in its record), throws
//                                                   // std::invalid_argument
//     template <class T> struct Coeffs;             // per-step scalars, computed once in double
//     template <class T> static Coeffs<T> prepare(const double* h, int64_t step, double* scalars);
//     template <int V, class T> static void update(const Coeffs<T>&, T& p, T g, T* s);  // one element
//   };
//
// A rule that needs per-tensor sums (a norm) also declares num_reductions = R and
//     template <int V, class T> static void reduce(const Coeffs<T>&, T p, T g, T* s, T* r);  // r[0..R)
//     template <class T> static void finish(Coeffs<T>&, const double* h, const double* sums);
// The driver runs reduce over every element, sums r per tensor in double, calls finish, then update.
//
// A rule that offers cautious updates (Liang et al., 2024) declares cautious_policy = true, a
// `cautious` hyperparameter, and splits its update in two, update = apply(direction):
//     template <int V, class T> static T direction(const Coeffs<T>&, T p, T g, T* s);  // advance s, return u
//     template <int V, class T> static void apply(const Coeffs<T>&, T& p, T g, T* s, T u);  // step p with u
// where u is what the reference masks. With h[cautious] set the driver counts, per tensor, the
// elements with u·g > 0 in a pass of its own, then runs direction, u ← u·(u·g > 0 ? scale : 0), apply,
// with the scale of the rule's cautious_scale (CautiousScale below). Without it, update runs as before.
//
// The driver (driver/driver.hpp) does everything else: tiling, threads, tails, dtypes, dispatch,
// and the shared policies, applied to each element before Rule::update in this order:
//   g ← g·(−1 if h[maximize] else 1);  p ← p·decay (decoupled);  g ← fmadd(wd, p, g) (coupled).
#include "pyopt/rules/common.hpp"

PYOPT_RULES_BEGIN

// The weight-decay conventions the driver applies (driver/driver.hpp), read from the rule's own
// hyperparameters (its enum Hyper names them). Decay is only applied when weight_decay ≠ 0: with
// wd = 0 the references never touch p·wd, so an infinite p must not turn into NaN here either.
enum class Decay {
  None,            // no weight decay, or the rule applies its own (its header says why)
  Coupled,         // L2: g ← g + wd·p (fused)
  Decoupled,       // p ← p·(1 − lr·wd)
  TorchFlag,       // torch's decoupled_weight_decay flag picks Decoupled, else Coupled
  WeightDecouple,  // pytorch-optimizer's weight_decouple flag picks p ← p·(1 − wd·(fixed_decay ? 1 : lr)),
                   // else Coupled (a rule without a fixed_decay hyperparameter scales by lr)
};

// How the cautious mask is normalised over a tensor of n elements, count of which agree:
enum class CautiousScale {
  CountPlusOne,  // n / (count + 1): pytorch-optimizer's apply_cautious (and C-Optim's first version)
  MeanClamped,   // 1 / max(count / n, 1e-3): C-Optim's c_adamw.py now (mask.div_(mask.mean().clamp_(min=1e-3)))
};

struct RuleBase {
  static constexpr bool maximize_policy = false;        // true: the rule has a `maximize` hyperparameter
  static constexpr Decay decay_policy = Decay::None;
  static constexpr int num_variants = 1;                // a rule without flags has one kernel
  static int variant(const double* /*h*/) { return 0; }
  static constexpr int num_scalars = 0;                 // per-tensor scalar state (beyond the step)
  static constexpr int num_reductions = 0;              // per-tensor sums: see rules/lamb.hpp
  static constexpr bool cautious_policy = false;        // true: a `cautious` hyperparameter, direction/apply
  static constexpr CautiousScale cautious_scale = CautiousScale::CountPlusOne;
  static constexpr const char* const* scalar_names = nullptr;
  // Slots that may be stored as 8-bit block-quantized states (state_dtype="int8"; 0: the rule does
  // not support it), and of those the nonnegative ones, which use the unsigned dynamic map.
  static constexpr unsigned int8_slots = 0;
  static constexpr unsigned nonnegative_slots = 0;
  static double initial_state(int /*slot*/, const double* /*h*/) { return 0.0; }
  static double initial_scalar(int /*index*/) { return 0.0; }
};

PYOPT_RULES_END
