#pragma once
// What each per-ISA build of the kernels exports (src/kernels_isa.cpp, compiled once per ISA by
// cmake/pyopt_isa.cmake) and the entry points that run the copy set_isa() selected. Plain types
// only: kernel and non-kernel code both include this header.
#include <cstdint>

#include "pyopt/adafactor.hpp"
#include "pyopt/types.hpp"

namespace pyopt {

// Element-wise maps (driver/map.hpp): target[i] ← f(target[i], source[i]) over many tensors, one
// coefficient per tensor. Kernels optimizers run besides their step; not optimizers themselves.
//   Lerp        target ← lerp(target, source, coeff), rounded as torch's target.lerp_(source, coeff)
//               (EMA, Lookahead, schedule-free train()/eval())
//   HessianEma  target ← target·coeff + (1 − coeff)·source, as target.mul_(coeff).add_(source,
//               alpha=1 − coeff) (SophiaG's Hessian EMA, coeff = β2)
#define PYOPT_FOR_EACH_MAP(X) \
  X(Lerp)                     \
  X(HessianEma)

enum class ElementMap : int {
#define PYOPT_MAP_ENUM(Map) Map,
  PYOPT_FOR_EACH_MAP(PYOPT_MAP_ENUM)
#undef PYOPT_MAP_ENUM
};
#define PYOPT_MAP_COUNT(Map) +1
constexpr int kNumElementMaps = 0 PYOPT_FOR_EACH_MAP(PYOPT_MAP_COUNT);
#undef PYOPT_MAP_COUNT

// One tensor of a map: caller-owned buffers of `size` elements of the call's dtype. The target is
// written, the source only read; they must not overlap (nor any two targets).
struct MapArgs {
  void* target;
  const void* source;
  int64_t size;
  double coeff;
};
using MapFn = void (*)(const MapArgs* tensors, int64_t count, int num_threads);

// One Adafactor step of one tensor (see adafactor.hpp for the shapes), buffers of the call's dtype.
struct AdafactorArgs {
  void* param;
  const void* grad;
  void* row_var;
  void* col_var;
  void* variance;
  int64_t batch, rows, cols, size, step;
  AdafactorHyper hyper;
};
using AdafactorFn = void (*)(const AdafactorArgs& args, int num_threads);

// Blockwise dynamic 8-bit quantization as bitsandbytes 0.50 (driver/quant8.hpp): codes[n] and
// absmax[ceil(n / 256)], with the signed (first moments) or unsigned (second moments) map.
using Quantize8Fn = void (*)(const float* x, int64_t n, bool is_signed, unsigned char* codes, float* absmax,
                             int num_threads);
using Dequantize8Fn = void (*)(const unsigned char* codes, const float* absmax, int64_t n, bool is_signed, float* x,
                               int num_threads);

// The kernels of one ISA build.
struct IsaKernels {
  const RuleKernels* rules;                     // indexed by RuleInfo::index
  MapFn maps[kNumElementMaps][kNumDTypes];      // indexed by ElementMap, then DType
  AdafactorFn adafactor[kNumDTypes];
  Quantize8Fn quantize8;
  Dequantize8Fn dequantize8;
};

// Run on the selected ISA with num_threads() threads (src/dispatch.cpp).
void run_map(ElementMap map, DType dtype, const MapArgs* tensors, int64_t count);
void run_adafactor(DType dtype, const AdafactorArgs& args);
void run_quantize8(const float* x, int64_t n, bool is_signed, unsigned char* codes, float* absmax);
void run_dequantize8(const unsigned char* codes, const float* absmax, int64_t n, bool is_signed, float* x);

}  // namespace pyopt
