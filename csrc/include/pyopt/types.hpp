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

// How one array of a step is stored. Rules compute in the step's DType (float for float32,
// float16 and bfloat16 params; double for float64) and never see storage: the driver loads each
// element from its storage and stores it back rounded to nearest even. Compute means "stored as
// the DType itself", the only storage of float64 steps and of all float32-only paths.
// Float16 and BFloat16 are 16-bit words (uint16_t in C++), for params and their grads.
enum class Storage : uint8_t { Compute = 0, Float16 = 1, BFloat16 = 2 };

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
  // Storage of the param and the grad (float32 steps only; float64 steps are all Compute). A grad
  // is stored as its param or as Compute. State slots are always Compute for now.
  Storage param_storage = Storage::Compute;
  Storage grad_storage = Storage::Compute;
};

// A compiled kernel: all tensors of one step of one rule in one dtype, in one parallel region.
using KernelFn = void (*)(const TensorArgs* tensors, int64_t count, int num_threads);

struct RuleKernels {
  KernelFn by_dtype[kNumDTypes];
};

}  // namespace pyopt
