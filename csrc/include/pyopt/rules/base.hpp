#pragma once
// The anatomy of a rule (rules/adam.hpp is the annotated example):
//
//   struct Adam : RuleBase {
//     static constexpr const char* name;            // kernel name ("adam")
//     enum Hyper { lr, beta1, ..., kNumHyper };     // index of each hyperparameter in a flat double array
//     static constexpr HyperSpec hyper[kNumHyper];  // names, defaults, kinds (one source of truth)
//     static constexpr const char* slot_names[];    // per-element state arrays, in slot order
//     static constexpr int num_variants;            // compile-time specialisations (flags that change the loop)
//     static int variant(const double* h);          // which specialisation these hyperparameters need
//     static constexpr unsigned slot_mask(int v);   // which slots that specialisation reads and writes
//     static void validate(const double* h);        // throws std::invalid_argument naming the bad value
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
// The driver (driver/driver.hpp) does everything else: tiling, threads, tails, dtypes, dispatch.
#include "pyopt/rules/common.hpp"

PYOPT_KERNEL_NAMESPACE_BEGIN
namespace rules {

struct RuleBase {
  static constexpr int num_scalars = 0;                 // per-tensor scalar state (beyond the step)
  static constexpr int num_reductions = 0;              // per-tensor sums: see rules/lamb.hpp
  static constexpr const char* const* scalar_names = nullptr;
  static double initial_state(int /*slot*/, const double* /*h*/) { return 0.0; }
  static double initial_scalar(int /*index*/) { return 0.0; }
};

}  // namespace rules
PYOPT_KERNEL_NAMESPACE_END
