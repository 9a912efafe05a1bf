#pragma once
// Plain types shared by the rules, the driver and the public API. No code lives here, so this
// header may be included from every per-ISA translation unit.
#include <cstdint>
#include <limits>

#include "pyopt/record.hpp"  // HyperKind, HyperSpec

namespace pyopt {

constexpr int kMaxSlots = 4;    // state arrays per tensor (exp_avg, exp_avg_sq, ...)
constexpr int kMaxScalars = 2;  // scalar state per tensor besides the step (e.g. NAdam's mu_product)

enum class DType : int { Float32 = 0, Float64 = 1 };
constexpr int kNumDTypes = 2;

// One tensor of a step, as the driver sees it: caller-owned buffers, nothing copied.
struct TensorArgs {
  void* param;
  const void* grad;
  void* slots[kMaxSlots];  // state arrays in the rule's slot order; unused slots are null
  int64_t size;            // elements
  int64_t step;            // t of this step (1 for the first step)
  const double* hyper;     // the tensor's group hyperparameters, in the rule's order
  double* scalars;         // the tensor's scalar state (kMaxScalars doubles)
  // What the rule sees as the gradient: clamp(grad, ±grad_clip) · grad_scale (clipping by value,
  // then by global norm). The defaults change nothing, bit for bit (g·1 = g, NaN stays NaN).
  double grad_scale = 1.0;
  double grad_clip = std::numeric_limits<double>::infinity();
};

// A compiled kernel: all tensors of one step of one rule in one dtype, in one parallel region.
using KernelFn = void (*)(const TensorArgs* tensors, int64_t count, int num_threads);

struct RuleKernels {
  KernelFn by_dtype[kNumDTypes];
};

}  // namespace pyopt
