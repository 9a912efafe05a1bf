#pragma once
// pyopt::npz — a minimal reader and writer of numpy's .npy and .npz files, so a checkpoint written
// by C++ loads in numpy (np.load) and pyopt.load, and the other way round. No dependencies.
//
// .npz is a zip archive of .npy files. The writer stores them uncompressed (method 0, "stored")
// with CRC-32, as np.savez does; the reader takes stored entries (np.savez, any zip64 layout
// numpy writes) and throws on compressed ones (np.savez_compressed). .npy versions 1.0, 2.0, 3.0;
// C order (Fortran order only for 0-d/1-d arrays); little-endian dtypes:
//   <f2 <f4 <f8 (float16/32/64)   <i4 <i8 <u1 |u1 <u2 |b1 (ints, bool)   <U<n> (numpy's UTF-32 string)
// (bfloat16 has no numpy dtype string: checkpoints store its bits as <u2, see checkpoint.hpp)
// Errors throw std::runtime_error naming the file and the entry. Every offset, length and shape in
// a file is checked against its size before use, and zip entries may not overlap, so a reader never
// allocates more than the file holds.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace pyopt {
namespace npz {

struct Array {
  std::string descr;                 // numpy dtype string, e.g. "<f8", "<U227"
  std::vector<std::size_t> shape;    // empty: a 0-d array (a scalar)
  std::vector<char> data;            // raw little-endian elements, C order

  std::size_t size() const;          // element count (1 for 0-d)
  std::size_t itemsize() const;      // bytes per element

  // Elements as doubles (float, int and bool dtypes); std::runtime_error for others.
  std::vector<double> to_doubles() const;

  template <class T>
  static Array from(const T* values, std::size_t n, std::vector<std::size_t> shape = {});
  template <class T>
  static Array from(const std::vector<T>& v) { return from(v.data(), v.size(), {v.size()}); }
  // A 0-d numpy string array ("<U<n>"), as np.array("text") — what pyopt.save writes its meta as.
  static Array string(const std::string& utf8);
  // The text of a "<U<n>" array (0-d or 1 element), as UTF-8.
  std::string as_string() const;
};

template <class T>
struct dtype_of;
template <> struct dtype_of<float> { static constexpr const char* descr = "<f4"; };
template <> struct dtype_of<double> { static constexpr const char* descr = "<f8"; };
template <> struct dtype_of<int32_t> { static constexpr const char* descr = "<i4"; };
template <> struct dtype_of<int64_t> { static constexpr const char* descr = "<i8"; };
template <> struct dtype_of<uint8_t> { static constexpr const char* descr = "|u1"; };
template <> struct dtype_of<uint16_t> { static constexpr const char* descr = "<u2"; };

template <class T>
Array Array::from(const T* values, std::size_t n, std::vector<std::size_t> shape) {
  Array a;
  a.descr = dtype_of<T>::descr;
  a.shape = shape.empty() ? std::vector<std::size_t>{n} : std::move(shape);
  a.data.resize(n * sizeof(T));
  if (n) std::memcpy(a.data.data(), values, n * sizeof(T));
  return a;
}

// Entries by name (without the ".npy" suffix np.savez adds), in archive order.
using Archive = std::vector<std::pair<std::string, Array>>;

const Array* find(const Archive& archive, const std::string& name);  // nullptr when absent

// .npy bytes of one array, and back.
std::string to_npy(const Array& a);
Array from_npy(const std::string& bytes, const std::string& where = "npy");

// .npz: `save` writes to path + ".tmp" and renames it over path, so an interrupted save never
// leaves a truncated file behind.
void save(const std::string& path, const Archive& archive);
Archive load(const std::string& path);
// The archive held in `bytes` (what load() reads from the file); `where` names it in errors.
Archive read(const std::string& bytes, const std::string& where = "npz");

// Raw zip of stored entries (names as given), and its reader; exposed for tests.
std::string zip_stored(const std::vector<std::pair<std::string, std::string>>& files);
std::vector<std::pair<std::string, std::string>> unzip(const std::string& bytes, const std::string& where = "zip");

#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
// Only in fuzz builds, never shipped: the fuzz targets set it, so that mutated zip entries (whose
// CRC-32 a fuzzer cannot repair) reach the .npy and JSON readers; the C++ tests of the same build
// leave it false and check the CRC as every other build does.
extern bool fuzzing_skips_crc32;
#endif
uint32_t crc32(const void* data, std::size_t size, uint32_t crc = 0);

}  // namespace npz
}  // namespace pyopt
