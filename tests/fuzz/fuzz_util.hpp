#pragma once
// Shared by the fuzz targets: which exceptions count as a clean rejection of bad input.
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

#include <pyopt/npz.hpp>

namespace pyopt_fuzz {

// The fuzz targets skip the zip CRC-32 check (pyopt/npz.hpp), from before the first input on.
inline const bool crc32_skipped = (pyopt::npz::fuzzing_skips_crc32 = true);

// Runs f. A std::runtime_error or std::invalid_argument is the readers' documented answer to bad
// input and is swallowed (returns false); any other exception escapes and libFuzzer reports it.
template <class F>
bool accepted(F&& f) {
  try {
    f();
    return true;
  } catch (const std::runtime_error&) {
  } catch (const std::invalid_argument&) {
  }
  return false;
}

// A broken invariant: abort, so libFuzzer saves the input.
inline void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz invariant broken: %s\n", what);
    std::abort();
  }
}

}  // namespace pyopt_fuzz
