#pragma once
// The global gradient norm behind clip-by-norm and skip-on-non-finite: one pass over every
// gradient of a step, before the update pass.
#include <cstdint>

#include "pyopt/types.hpp"

namespace pyopt {

// out[i] = Σ clamp(g, ±grad_clip)² over tensors[i]'s gradient (tensors[i].grad, .size, .grad_clip),
// accumulated in double in fixed lanes and blocks, so the bits never depend on the thread count.
// A NaN or Inf anywhere in a gradient makes its sum non-finite.
void grad_sq_sums(DType dtype, const TensorArgs* tensors, int64_t count, double* out);

}  // namespace pyopt
