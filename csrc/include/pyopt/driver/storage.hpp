#pragma once
// Conversions between how an array is stored (Storage, types.hpp) and the float32 registers the
// rules compute in. Round to nearest even everywhere; every ISA path gives the same bits: float16
// uses F16C where the build has it (avx2, avx512) and a software conversion with F16C's exact
// results elsewhere (baseline), bfloat16 is integer arithmetic on every path.
#include <cstdint>
#include <cstring>

#include "pyopt/config.hpp"
#include "pyopt/types.hpp"

#if defined(__F16C__)
#include <immintrin.h>
#endif

PYOPT_KERNEL_NAMESPACE_BEGIN
namespace storage {

PYOPT_INLINE uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
PYOPT_INLINE float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

PYOPT_INLINE float bf16_to_float(uint16_t h) { return float_of(uint32_t(h) << 16); }

// NaN becomes the quiet NaN of its sign (0x7fc0 / 0xffc0), as ml_dtypes converts it.
PYOPT_INLINE uint16_t float_to_bf16(float f) {
  const uint32_t u = bits_of(f);
  const uint16_t nan = uint16_t(((u >> 16) & 0x8000u) | 0x7fc0u);
  const uint16_t rounded = uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  return (u & 0x7fffffffu) > 0x7f800000u ? nan : rounded;
}

// Software float16 conversions with F16C's results (NaNs keep their sign and leading payload bits
// and become quiet; a float16 subnormal is converted exactly, without relying on denormal floats).
PYOPT_INLINE float f16_to_float_soft(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t magnitude = h & 0x7fffu;
  const uint32_t normal = (magnitude << 13) + (112u << 23);
  const uint32_t subnormal = bits_of(float(int32_t(magnitude)) * 0x1p-24f);  // exact for magnitude < 0x400
  const uint32_t inf_nan = (magnitude << 13) | 0x7f800000u | (magnitude > 0x7c00u ? 0x00400000u : 0u);
  const uint32_t out = magnitude < 0x400u ? subnormal : magnitude >= 0x7c00u ? inf_nan : normal;
  return float_of(out | sign);
}

PYOPT_INLINE uint16_t float_to_f16_soft(float f) {
  const uint32_t u = bits_of(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7fffffffu;
  // Below 2^-14 the result is subnormal or zero: adding 0.5f lets the FPU round the bits that fall
  // off (round to nearest even, the default mode), and the float16 bits are what is left above 0.5f.
  const uint32_t subnormal = bits_of(float_of(a) + 0.5f) - 0x3f000000u;
  // Normal: rebias the exponent and round the 13 dropped bits to nearest even; a carry out of the
  // mantissa bumps the exponent, up to infinity (0x7c00) for |f| >= 65520.
  const uint32_t normal = (a + (uint32_t(15 - 127) << 23) + 0xfffu + ((a >> 13) & 1u)) >> 13;
  const uint32_t nan = 0x7e00u | ((a >> 13) & 0x3ffu);
  const uint32_t out = a > 0x7f800000u   ? nan
                       : a >= 0x47800000u ? 0x7c00u
                       : a < (113u << 23) ? subnormal
                                          : normal;
  return uint16_t(out | sign);
}

PYOPT_INLINE float f16_to_float(uint16_t h) {
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  return f16_to_float_soft(h);
#endif
}

PYOPT_INLINE uint16_t float_to_f16(float f) {
#if defined(__F16C__)
  return uint16_t(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
#else
  return float_to_f16_soft(f);
#endif
}

// Out of line (one copy per ISA, not one per rule): called once per tile of hundreds of elements.
#if defined(__GNUC__) || defined(__clang__)
#define PYOPT_TILE_CONVERSION __attribute__((noinline))
#else
#define PYOPT_TILE_CONVERSION
#endif

// out[0..n) = the float32 values of stored[first..first + n).
inline PYOPT_TILE_CONVERSION void load_floats(Storage kind, const void* stored, int64_t first, int64_t n,
                                              float* __restrict out) {
  const uint16_t* __restrict in = static_cast<const uint16_t*>(stored) + first;
  if (kind == Storage::BFloat16) {
    for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_float(in[i]);
    return;
  }
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i))));
#endif
  for (; i < n; ++i) out[i] = f16_to_float(in[i]);
}

// stored[first..first + n) = values[0..n) rounded to nearest even.
inline PYOPT_TILE_CONVERSION void store_floats(Storage kind, const float* __restrict values, int64_t n,
                                               void* stored, int64_t first) {
  uint16_t* __restrict out = static_cast<uint16_t*>(stored) + first;
  if (kind == Storage::BFloat16) {
    for (int64_t i = 0; i < n; ++i) out[i] = float_to_bf16(values[i]);
    return;
  }
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(values + i), _MM_FROUND_TO_NEAREST_INT));
#endif
  for (; i < n; ++i) out[i] = float_to_f16(values[i]);
}

// ---- Stochastic rounding (TensorArgs::stochastic_rounding) ----

PYOPT_INLINE uint64_t mix64(uint64_t x) {  // splitmix64's finalizer
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// The key of one array of one step of one tensor: each (seed, step, array) gets its own stream.
inline uint64_t rounding_key(uint64_t seed, int64_t step, int array) {
  return mix64(mix64(seed + 0x632be59bd9b4e019ull * uint64_t(step)) + uint64_t(array));
}

// 24 uniform bits for element `index` of the array `key`: a counter-based generator, so an element's
// rounding depends on (seed, step, array, index) only, never on threads or tiles.
PYOPT_INLINE uint32_t rounding_bits(uint64_t key, int64_t index) {
  return uint32_t(mix64(key + 0x9e3779b97f4a7c15ull * uint64_t(index)) >> 40);
}

PYOPT_INLINE float stored_to_float(Storage kind, uint16_t h) {
  return kind == Storage::BFloat16 ? bf16_to_float(h) : f16_to_float(h);
}

// x rounded to one of its two 16-bit neighbours, the upper one (in magnitude) with probability
// (|x| − lower) / (upper − lower), drawn from 24 random bits: unbiased to 2^-24 of a step. Exact
// values, NaN, and values beyond the largest finite one round as round-to-nearest-even does.
PYOPT_INLINE uint16_t round_stochastic(Storage kind, float x, uint32_t random24) {
  const uint16_t nearest = kind == Storage::BFloat16 ? float_to_bf16(x) : float_to_f16(x);
  const float near_value = stored_to_float(kind, nearest);
  const float magnitude = x < 0.0f ? -x : x;
  const float near_magnitude = near_value < 0.0f ? -near_value : near_value;
  if (!(near_value != x) || x != x || near_magnitude == __builtin_inff()) return nearest;
  const uint16_t sign = nearest & 0x8000u;
  const uint16_t lower = uint16_t(near_magnitude < magnitude ? (nearest & 0x7fffu) : (nearest & 0x7fffu) - 1u);
  const uint16_t upper = uint16_t(lower + 1u);
  const float low = stored_to_float(kind, lower), high = stored_to_float(kind, upper);
  if (high == __builtin_inff()) return nearest;
  const float up_probability = (magnitude - low) / (high - low);  // both differences exact
  return uint16_t(sign | (float(random24) * 0x1p-24f < up_probability ? upper : lower));
}

// store_floats with stochastic rounding; element i of the tile is element first + i of the array.
inline PYOPT_TILE_CONVERSION void store_floats_stochastic(Storage kind, const float* __restrict values, int64_t n,
                                                          void* stored, int64_t first, uint64_t key) {
  uint16_t* __restrict out = static_cast<uint16_t*>(stored) + first;
  for (int64_t i = 0; i < n; ++i) out[i] = round_stochastic(kind, values[i], rounding_bits(key, first + i));
}

}  // namespace storage
PYOPT_KERNEL_NAMESPACE_END
