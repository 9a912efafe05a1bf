#pragma once
// Arrays stored other than as the step's float32 (TensorArgs: 16-bit params and grads, a float32
// master copy, bfloat16 or 8-bit block-quantized states) are stepped tile by tile: each tile is
// converted into L1-resident float32 buffers, run through the ordinary float32 kernel, and written
// back. So no rule is compiled again per storage kind, a float32 path never pays for one, and the
// result is by construction "convert, float32 step, convert back".
#include <cstdint>

#include "pyopt/config.hpp"
#include "pyopt/driver/quant8.hpp"
#include "pyopt/driver/storage.hpp"
#include "pyopt/types.hpp"

PYOPT_KERNEL_NAMESPACE_BEGIN
namespace driver {

// Elements per tile: whole blocks of an 8-bit state, and small enough that the buffers of a tile
// (param, grad, up to five slots: 14 KiB) stay in L1.
constexpr int64_t kStorageTile = 512;
static_assert(kStorageTile % kQuantBlock == 0, "a tile holds whole quantization blocks");

PYOPT_INLINE bool stored_as_computed(const TensorArgs& a) {
  if (a.param_storage != Storage::Compute || a.grad_storage != Storage::Compute || a.master) return false;
  for (int j = 0; j < kMaxSlots; ++j)
    if (a.slots[j] && a.slot_storage[j] != Storage::Compute) return false;
  return true;
}

PYOPT_INLINE bool has_int8_slot(const TensorArgs& a) {
  for (int j = 0; j < kMaxSlots; ++j)
    if (a.slots[j] && is_int8(a.slot_storage[j])) return true;
  return false;
}

// Where a tile's converted arrays go: `capacity` floats each.
struct TileBuffers {
  float* param;
  float* grad;
  float* slots[kMaxSlots];
};

PYOPT_INLINE int element_bytes(Storage kind) {
  return kind == Storage::Compute ? 4 : is_int8(kind) ? 1 : 2;
}

// Asks for elements [first, first + n) of every array of the tensor ahead of their tile: the
// passes over one tile touch each array for a few lines only, too briefly for the hardware
// prefetchers to run ahead of them.
inline PYOPT_TILE_CONVERSION void prefetch_tile(const TensorArgs& a, int64_t first, int64_t n) {
  auto ahead = [&](const void* base, int bytes, bool written) {
    const char* begin = static_cast<const char*>(base) + first * bytes;
    for (int64_t offset = 0; offset < n * bytes; offset += 64) {
      if (written)
        __builtin_prefetch(begin + offset, 1);
      else
        __builtin_prefetch(begin + offset, 0);
    }
  };
  ahead(a.master ? static_cast<const void*>(a.master) : a.param, a.master ? 4 : element_bytes(a.param_storage), true);
  if (a.master) ahead(a.param, element_bytes(a.param_storage), true);
  ahead(a.grad, element_bytes(a.grad_storage), false);
  for (int j = 0; j < kMaxSlots; ++j)
    if (a.slots[j]) ahead(a.slots[j], element_bytes(a.slot_storage[j]), true);
}

// Elements [first, first + n) of a float32-step tensor as float32 arrays: the master (when there
// is one) in place of the param, float32 arrays pointed into, the others converted into the
// buffers. An 8-bit slot needs `first` on a block boundary.
inline PYOPT_TILE_CONVERSION TensorArgs float_tile(const TensorArgs& a, int64_t first, int64_t n,
                                                   const TileBuffers& buffers) {
  TensorArgs t = a;
  if (a.master) {
    t.param = a.master + first;
  } else if (a.param_storage == Storage::Compute) {
    t.param = static_cast<float*>(a.param) + first;
  } else {
    storage::load_floats(a.param_storage, a.param, first, n, buffers.param);
    t.param = buffers.param;
  }
  if (a.grad_storage == Storage::Compute) {
    t.grad = static_cast<const float*>(a.grad) + first;
  } else {
    storage::load_floats(a.grad_storage, a.grad, first, n, buffers.grad);
    t.grad = buffers.grad;
  }
  for (int j = 0; j < kMaxSlots; ++j) {
    if (!a.slots[j]) continue;
    const Storage kind = a.slot_storage[j];
    if (kind == Storage::Compute) {
      t.slots[j] = static_cast<float*>(a.slots[j]) + first;
      continue;
    }
    float* out = buffers.slots[j];
    if (is_int8(kind)) {
      const quant8::Codebook& book = quant8::dynamic_codebook(kind == Storage::Int8Signed);
      const unsigned char* codes = static_cast<const unsigned char*>(a.slots[j]) + first;
      for (int64_t b = 0; b < n; b += kQuantBlock) {
        const int64_t len = n - b < kQuantBlock ? n - b : kQuantBlock;
        quant8::dequantize_block(book, codes + b, len, a.slot_absmax[j][(first + b) / kQuantBlock], out + b);
      }
    } else {
      storage::load_floats(kind, a.slots[j], first, n, out);
    }
    t.slots[j] = out;
  }
  t.size = n;
  t.param_storage = t.grad_storage = Storage::Compute;
  t.master = nullptr;
  for (int j = 0; j < kMaxSlots; ++j) t.slot_storage[j] = Storage::Compute;
  return t;
}

// Writes back a tile that float_tile made and a kernel updated: the 16-bit param (rounded from the
// master where there is one; not after a reduction pass, which leaves p alone) and every slot not
// stored as float32 (8-bit blocks requantized with their new absmax).
inline PYOPT_TILE_CONVERSION void store_tile(const TensorArgs& a, const TensorArgs& tile, int64_t first, int64_t n,
                                             bool param_written) {
  const bool stochastic = a.stochastic_rounding;
  if (param_written && a.param_storage != Storage::Compute) {
    const float* values = static_cast<const float*>(tile.param);
    if (stochastic && !a.master)
      storage::store_floats_stochastic(a.param_storage, values, n, a.param, first,
                                       storage::rounding_key(a.rounding_seed, a.step, 0));
    else
      storage::store_floats(a.param_storage, values, n, a.param, first);
  }
  for (int j = 0; j < kMaxSlots; ++j) {
    const Storage kind = a.slot_storage[j];
    if (!a.slots[j] || kind == Storage::Compute) continue;
    const float* values = static_cast<const float*>(tile.slots[j]);
    if (is_int8(kind)) {
      const quant8::Codebook& book = quant8::dynamic_codebook(kind == Storage::Int8Signed);
      unsigned char* codes = static_cast<unsigned char*>(a.slots[j]) + first;
      for (int64_t b = 0; b < n; b += kQuantBlock) {
        const int64_t len = n - b < kQuantBlock ? n - b : kQuantBlock;
        a.slot_absmax[j][(first + b) / kQuantBlock] = quant8::quantize_block(book, values + b, len, codes + b);
      }
    } else if (stochastic) {
      storage::store_floats_stochastic(kind, values, n, a.slots[j], first,
                                       storage::rounding_key(a.rounding_seed, a.step, 1 + j));
    } else {
      storage::store_floats(kind, values, n, a.slots[j], first);
    }
  }
}

}  // namespace driver
PYOPT_KERNEL_NAMESPACE_END
