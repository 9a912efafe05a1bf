#pragma once
// Plain types shared by the rules, the driver and the public API. No code lives here, so this
// header may be included from every per-ISA translation unit.
#include <cstdint>
#include <limits>

#include "pyopt/record.hpp"  // HyperKind, HyperSpec

namespace pyopt {

constexpr int kMaxSlots = 5;    // state arrays per tensor (exp_avg, exp_avg_sq, ...; cocob has five)
constexpr int kMaxScalars = 2;  // scalar state per tensor besides the step (e.g. NAdam's mu_product)

enum class DType : int { Float32 = 0, Float64 = 1 };
constexpr int kNumDTypes = 2;

// How one array of a step is stored. Rules compute in the step's DType (float for float32,
// float16 and bfloat16 params; double for float64) and never see storage: the driver converts
// tiles of each array into float32 registers and stores them back. Compute means "stored as the
// DType itself", the only storage of float64 steps and of all float32-only paths.
//   Float16, BFloat16  16-bit words (uint16_t in C++): params, their grads, and (BFloat16) states;
//                      written back rounded to nearest even, or stochastically (see TensorArgs).
//   Int8Signed,        a state slot quantized as bitsandbytes' blockwise dynamic 8-bit format:
//   Int8Unsigned       one uint8 code per element with the signed (first moments) or unsigned
//                      (second moments) dynamic map, one float32 absmax per kQuantBlock elements.
enum class Storage : uint8_t { Compute = 0, Float16 = 1, BFloat16 = 2, Int8Signed = 3, Int8Unsigned = 4 };
constexpr int64_t kQuantBlock = 256;      // elements per absmax of an 8-bit state
constexpr int64_t kMin8bitSize = 4096;    // smaller tensors keep float32 states (bitsandbytes' min_8bit_size)

constexpr bool is_int8(Storage s) { return s == Storage::Int8Signed || s == Storage::Int8Unsigned; }

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
  // Storage of each array (float32 steps only; float64 steps are all Compute). A grad is stored
  // as its param or as Compute; a slot as Compute, BFloat16 or Int8*.
  Storage param_storage = Storage::Compute;
  Storage grad_storage = Storage::Compute;
  Storage slot_storage[kMaxSlots] = {};
  float* slot_absmax[kMaxSlots] = {};  // Int8 slots: ceil(size / kQuantBlock) float32 scales
  // A float32 master copy of a 16-bit param (`size` floats) or null: the rule updates the master,
  // and the param is written from it (rounded) every step.
  float* master = nullptr;
  // 16-bit writes (params without a master, BFloat16 states) round stochastically instead of to
  // nearest even: up with probability (x − lower) / (upper − lower), from a counter-based hash
  // of (rounding_seed, step, element index, array), so results never depend on the thread count.
  bool stochastic_rounding = false;
  uint64_t rounding_seed = 0;
};

// A compiled kernel: all tensors of one step of one rule in one dtype, in one parallel region.
using KernelFn = void (*)(const TensorArgs* tensors, int64_t count, int num_threads);

// A row-sparse step (pyopt.RowSparse): table.param and table.slots are whole 2-D tables of
// rows × cols elements stored as computed; table.grad holds `count` rows of `cols` elements, row k
// the gradient of table row rows[k]. rows: sorted, unique, in range (the caller checked them).
using RowsKernelFn = void (*)(const TensorArgs& table, const int64_t* rows, int64_t count, int64_t cols,
                              int num_threads);

struct RuleKernels {
  KernelFn by_dtype[kNumDTypes];
  RowsKernelFn rows_by_dtype[kNumDTypes];
};

}  // namespace pyopt
