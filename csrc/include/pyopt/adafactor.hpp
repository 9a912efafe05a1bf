#pragma once
// Adafactor (Shazeer & Stern, 2018, arXiv:1804.04235) as torch.optim.Adafactor 2.13 computes it
// (_single_tensor_adafactor). Its state is not shaped like the param (a matrix keeps one value per
// row and one per column), so it is not an element-wise rule; its kernel (driver/adafactor.hpp) is
// compiled per ISA like the rules and runs on the path set_isa() selects: for each tensor, a
// reduction pass (‖p‖, row and column means of g², ‖update‖) and the update pass. Sums are taken in
// double in a fixed order (rows in order, column partials per fixed block of rows), so the bits
// never depend on the thread count. The AVX2 / AVX-512 paths fuse multiply-adds where torch does;
// the baseline path (no FMA) rounds them twice, as the optimizer rules do there.
//
//   β̂ = t^beta2_decay;  ρ = min(lr, 1/√t);  α = max(eps2, ‖p‖/√n)·ρ;  p ← p·(1 − lr·wd) (wd ≠ 0)
//   ≥ 2-D (batch × rows × cols):  R ← lerp(R, mean_cols(g²), β̂);  C ← lerp(C, mean_rows(g²), β̂)
//                                 V = R·C / max(mean(R), eps1)
//   1-D (and 0-D):                V ← lerp(V, g², β̂)
//   u = g / √max(V, eps1²);  p ← p − α / max(1, ‖u‖/(√n·d)) · u
#include <cstdint>

#include "pyopt/types.hpp"

namespace pyopt {

struct AdafactorHyper {
  double lr = 1e-2;
  double beta2_decay = -0.8;
  double eps1 = -1.0;  // < 0: the dtype's machine epsilon (torch's eps=(None, ...))
  double eps2 = 1e-3;
  double d = 1.0;
  double weight_decay = 0.0;
  bool maximize = false;
};

// Throws std::invalid_argument naming a bad hyperparameter.
void validate_adafactor(const AdafactorHyper& h);

// One step of one tensor. Factored (rows > 0): param and grad hold batch × rows × cols elements,
// row_var batch × rows, col_var batch × cols, variance unused. Not factored (rows == 0): variance
// holds `size` elements, row_var / col_var unused. `step` is t of this step (>= 1).
template <class T>
void adafactor_step(T* param, const T* grad, T* row_var, T* col_var, T* variance, int64_t batch, int64_t rows,
                    int64_t cols, int64_t size, int64_t step, const AdafactorHyper& h);

}  // namespace pyopt
