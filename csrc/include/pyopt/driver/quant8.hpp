#pragma once
// Blockwise dynamic 8-bit quantization, code for code as bitsandbytes 0.50 on CPU
// (bitsandbytes.functional.quantize_blockwise / dequantize_blockwise with blocksize 256 and the
// maps of create_dynamic_map(signed=...)), for 8-bit optimizer states: the signed map for first
// moments, the unsigned one for second moments. A block of kBlockSize elements keeps one float32
// absmax and one uint8 code per element; value = map[code] · absmax.
//
// Quantizing a block (as bnb's CPU kernel does it, not "the nearest code"):
//   absmax = max |x| over the block, NaN ignored (a block of NaN/zeros gets absmax 0 and codes 0);
//   v = clamp(x · (1 / absmax), -1, 1); then a 65536-entry table: bin = trunc((v + 1)·0.5·65535 + 0.5)
//   (a NaN v takes bin 0), code = lut[bin] = the number of midpoints between neighbouring map values
//   that are below the bin's centre −1 + 2·bin / 65535 (float32). So the code is nearest-to-the-bin-
//   centre, ties to the lower code (no bin centre equals a midpoint of either map); near 0 the bins
//   (3e-5 wide) are coarser than the map (1e-7): a 0 in a block with absmax > 0 takes code 131
//   (signed, 2.125e-5) or 7 (unsigned, 1.5625e-5), not the code of 0.
// (The fused and unfused forms of (v + 1)·0.5·65535 + 0.5 give the same bin for every float32 v in
// [-1, 1]: checked exhaustively, so the ISA paths agree.)
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "pyopt/config.hpp"
#include "pyopt/types.hpp"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

PYOPT_KERNEL_NAMESPACE_BEGIN
namespace driver {
namespace quant8 {

constexpr int64_t kBlockSize = kQuantBlock;  // types.hpp
// bnb's optimizers keep tensors with fewer elements than this in float32 (min_8bit_size).
constexpr int kBins = 65536;

struct Codebook {
  float values[256];           // ascending, in [-1, 1]
  unsigned char lut[kBins + 4];  // bin -> code; 4 bytes of padding: SIMD gathers read 32 bits at lut + bin
};

// torch.linspace(start, end, steps, dtype=float32) on CPU: step in float32, each point one fused
// multiply-add from the nearer end (torch's compiled kernel contracts start + step·i).
inline std::vector<float> torch_linspace_f32(float start, float end, int64_t steps) {
  const float step = (end - start) / float(steps - 1);
  std::vector<float> out(static_cast<size_t>(steps));
  for (int64_t i = 0; i < steps; ++i)
    out[size_t(i)] = i < steps / 2 ? std::fma(step, float(i), start) : std::fma(-step, float(steps - i - 1), end);
  return out;
}

// bitsandbytes.functional.create_dynamic_map(signed, max_exponent_bits=7, total_bits=8): for
// each decade 10^(i-6), i = 0..6, the float32 midpoints of linspace(0.1, 1, 2^i + 1) (signed; 2^(i+1)
// + 1 unsigned) times float32(10^(i-6)) in float32 (negated too when signed), then 0 and 1, sorted.
inline void build_dynamic_map(bool is_signed, float* values) {
  std::vector<float> data;
  for (int i = 0; i < 7; ++i) {
    const int64_t points = (int64_t(1) << (is_signed ? i : i + 1)) + 1;
    const std::vector<float> bounds = torch_linspace_f32(0.1f, 1.0f, points);
    // Python's 10 ** (i - 6) times a float32 tensor: a float32 multiply by the scalar rounded to float32.
    const float scale = float(i == 6 ? 1.0 : std::pow(10.0, double(i - 6)));
    for (int64_t k = 0; k + 1 < points; ++k) {
      const float mean = (bounds[size_t(k)] + bounds[size_t(k + 1)]) / 2.0f;
      data.push_back(scale * mean);
      if (is_signed) data.push_back(-scale * mean);
    }
  }
  data.push_back(0.0f);
  data.push_back(1.0f);
  std::sort(data.begin(), data.end());
  std::copy(data.begin(), data.end(), values);
}

inline void build_lut(const float* values, unsigned char* lut) {
  float midpoints[255];
  for (int i = 0; i < 255; ++i) midpoints[i] = 0.5f * (values[i] + values[i + 1]);
  int code = 0;
  for (int bin = 0; bin < kBins; ++bin) {
    const float centre = -1.0f + (2.0f * float(bin)) / float(kBins - 1);
    while (code < 255 && midpoints[code] < centre) ++code;
    lut[bin] = static_cast<unsigned char>(code);
  }
}

inline Codebook make_codebook(bool is_signed) {
  Codebook book{};
  build_dynamic_map(is_signed, book.values);
  build_lut(book.values, book.lut);
  return book;
}

// The map for first moments (signed) or second moments (unsigned), built once.
inline const Codebook& dynamic_codebook(bool is_signed) {
  static const Codebook signed_book = make_codebook(true);
  static const Codebook unsigned_book = make_codebook(false);
  return is_signed ? signed_book : unsigned_book;
}

// max |x[i]|, NaN ignored (as bnb's std::max(absmax, fabs(x)) reduction). On the bit patterns with
// the sign cleared, integer order is magnitude order, and NaN patterns are those above +inf's:
// an integer max the compiler vectorizes (a float max reduction it would not, without fast-math).
PYOPT_INLINE float block_absmax(const float* x, int64_t n) {
  constexpr int32_t kInfBits = 0x7f800000;
  int32_t block_bits[kBlockSize];
  std::memcpy(block_bits, x, size_t(n) * sizeof(float));
  int32_t absmax_bits = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t magnitude = block_bits[i] & 0x7fffffff;
    absmax_bits = std::max(absmax_bits, magnitude & -int32_t(magnitude <= kInfBits));
  }
  float absmax;
  std::memcpy(&absmax, &absmax_bits, sizeof absmax);
  return absmax;
}

// Quantizes one block of n <= kBlockSize values into codes; returns its absmax. The table bin of
// each x is that of v = clamp(x · (1 / absmax), -1, 1), a NaN ratio taking bin 0 (as bnb's
// float-to-integer conversion gives on x86). The clamp and the NaN test work on the bit patterns:
// without -fno-trapping-math the compiler does not vectorize float selects, integer ones it does.
constexpr int32_t kOneBits = 0x3f800000, kMinusOneBits = int32_t(0xbf800000u), kInfBits = 0x7f800000;
constexpr int32_t kSignBit = int32_t(0x80000000u);

// The bin of x·inverse: clamped to [−1, 1] (NaN → −1) on its bits, then ((r + 1)·0.5)·65535 + 0.5
// truncated, each operation rounded separately (as bitsandbytes' compiled loop does).
PYOPT_INLINE int32_t bin_of(float x, float inverse) {
  float r = x * inverse;
  int32_t bits;
  std::memcpy(&bits, &r, sizeof r);
  const int32_t magnitude = bits & 0x7fffffff;
  const int32_t clamped = (bits & kSignBit) | std::min(magnitude, kOneBits);
  bits = magnitude > kInfBits ? kMinusOneBits : clamped;
  std::memcpy(&r, &bits, sizeof r);
  return int32_t((r + 1.0f) * 0.5f * float(kBins - 1) + 0.5f);
}

PYOPT_INLINE float quantize_block(const Codebook& book, const float* x, int64_t n, unsigned char* codes) {
  const float absmax = block_absmax(x, n);
  if (absmax == 0.0f) {
    for (int64_t i = 0; i < n; ++i) codes[i] = 0;
    return absmax;
  }
  const float inverse = 1.0f / absmax;
  int64_t i = 0;
  // The same operations as bin_of, 16 or 8 lanes at a time, and the code looked up by a gather of
  // 32 bits at lut + bin (the low byte is the code).
#if defined(__AVX512F__)
  const __m512 inv = _mm512_set1_ps(inverse);
  for (; i + 16 <= n; i += 16) {
    const __m512i bits = _mm512_castps_si512(_mm512_mul_ps(_mm512_loadu_ps(x + i), inv));
    const __m512i magnitude = _mm512_and_si512(bits, _mm512_set1_epi32(0x7fffffff));
    const __m512i clamped = _mm512_or_si512(_mm512_and_si512(bits, _mm512_set1_epi32(kSignBit)),
                                            _mm512_min_epi32(magnitude, _mm512_set1_epi32(kOneBits)));
    const __m512i ratio = _mm512_mask_mov_epi32(clamped, _mm512_cmpgt_epi32_mask(magnitude, _mm512_set1_epi32(kInfBits)),
                                                _mm512_set1_epi32(kMinusOneBits));
    __m512 t = _mm512_add_ps(_mm512_castsi512_ps(ratio), _mm512_set1_ps(1.0f));
    t = _mm512_mul_ps(t, _mm512_set1_ps(0.5f));
    t = _mm512_mul_ps(t, _mm512_set1_ps(float(kBins - 1)));
    t = _mm512_add_ps(t, _mm512_set1_ps(0.5f));
    const __m512i looked_up = _mm512_i32gather_epi32(_mm512_cvttps_epi32(t), book.lut, 1);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + i), _mm512_cvtepi32_epi8(looked_up));
  }
#elif defined(__AVX2__)
  const __m256 inv = _mm256_set1_ps(inverse);
  const __m256i low_bytes = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,  //
                                             0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  for (; i + 8 <= n; i += 8) {
    const __m256i bits = _mm256_castps_si256(_mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
    const __m256i magnitude = _mm256_and_si256(bits, _mm256_set1_epi32(0x7fffffff));
    const __m256i clamped = _mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(kSignBit)),
                                            _mm256_min_epi32(magnitude, _mm256_set1_epi32(kOneBits)));
    const __m256i is_nan = _mm256_cmpgt_epi32(magnitude, _mm256_set1_epi32(kInfBits));
    const __m256i ratio = _mm256_blendv_epi8(clamped, _mm256_set1_epi32(kMinusOneBits), is_nan);
    __m256 t = _mm256_add_ps(_mm256_castsi256_ps(ratio), _mm256_set1_ps(1.0f));
    t = _mm256_mul_ps(t, _mm256_set1_ps(0.5f));
    t = _mm256_mul_ps(t, _mm256_set1_ps(float(kBins - 1)));
    t = _mm256_add_ps(t, _mm256_set1_ps(0.5f));
    const __m256i looked_up =
        _mm256_i32gather_epi32(reinterpret_cast<const int*>(book.lut), _mm256_cvttps_epi32(t), 1);
    const __m256i packed = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(looked_up, low_bytes),
                                                       _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(codes + i), _mm256_castsi256_si128(packed));
  }
#endif
  for (; i < n; ++i) codes[i] = book.lut[bin_of(x[i], inverse)];
  return absmax;
}

PYOPT_INLINE void dequantize_block(const Codebook& book, const unsigned char* codes, int64_t n, float absmax,
                                   float* x) {
  int64_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) {
    const __m512i index = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + i)));
    _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_i32gather_ps(index, book.values, 4), _mm512_set1_ps(absmax)));
  }
#elif defined(__AVX2__)
  for (; i + 8 <= n; i += 8) {
    const __m256i index = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + i)));
    _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_i32gather_ps(book.values, index, 4), _mm256_set1_ps(absmax)));
  }
#endif
  for (; i < n; ++i) x[i] = book.values[codes[i]] * absmax;
}

inline int64_t block_count(int64_t n) { return (n + kBlockSize - 1) / kBlockSize; }

// Whole arrays: codes[n], absmax[block_count(n)].
inline void quantize(const float* x, int64_t n, bool is_signed, unsigned char* codes, float* absmax, int threads) {
  const Codebook& book = dynamic_codebook(is_signed);
  const int64_t blocks = block_count(n);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = b * kBlockSize, len = std::min(kBlockSize, n - begin);
    absmax[b] = quantize_block(book, x + begin, len, codes + begin);
  }
}

inline void dequantize(const unsigned char* codes, const float* absmax, int64_t n, bool is_signed, float* x,
                       int threads) {
  const Codebook& book = dynamic_codebook(is_signed);
  const int64_t blocks = block_count(n);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = b * kBlockSize, len = std::min(kBlockSize, n - begin);
    dequantize_block(book, codes + begin, len, absmax[b], x + begin);
  }
}

}  // namespace quant8
}  // namespace driver
PYOPT_KERNEL_NAMESPACE_END
