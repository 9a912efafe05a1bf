#pragma once
// Muon (Jordan et al., 2024; Liu et al., 2025) as torch.optim.Muon 2.13 computes it and pyopt.Muon
// (pyopt/muon.py) models it in numpy: momentum, orthogonalized by a Newton-Schulz iteration that
// runs in bfloat16 whatever the param dtype (float32 GEMMs on bfloat16 values, each result rounded
// to bfloat16), added to the float32/float64 param. For 2-D params only.
//
//   B ← lerp(B, g, 1 − μ);  U = lerp(g, B, μ) if nesterov else B;  X = NS_k^{(a,b,c)}(U)
//   p ← p·(1 − lr·wd) − lr·s·X,  s = √max(1, rows/cols) (adjust_lr_fn None / "original")
//                                s = 0.2·√max(rows, cols) ("match_rms_adamw")
//
// The GEMMs go through the BLAS CMake found (find_package(BLAS), the Fortran sgemm_); without one
// the library has no Muon (have_blas() is false and "muon" is not in optimizers()). Their
// summation order is the BLAS's, so results match pyopt.Muon (numpy's BLAS) to a bfloat16 rounding
// here and there, not bit for bit; the momentum buffer is bit-identical.
#include <cstdint>

namespace pyopt {

// adjust_lr_fn, as pyopt::Optimizer keeps it (hyperparameter "adjust_lr_fn"): torch's None,
// "original" (the same scale) and "match_rms_adamw".
enum class MuonAdjustLr : int { None = 0, Original = 1, MatchRmsAdamW = 2 };
const char* muon_adjust_lr_name(MuonAdjustLr a);  // "" for None, else Python's string

struct MuonHyper {
  double lr = 0.02;
  double weight_decay = 0.0;
  double momentum = 0.95;
  bool nesterov = true;
  double ns_a = 3.4445, ns_b = -4.775, ns_c = 2.0315;
  double eps = 1e-7;
  int ns_steps = 5;
  MuonAdjustLr adjust_lr = MuonAdjustLr::None;
};

// One step of one rows × cols param (row-major) with its momentum buffer (same dtype and size).
// std::logic_error when the library was built without a BLAS.
template <class T>
void muon_step(T* param, const T* grad, T* momentum_buffer, int64_t rows, int64_t cols, const MuonHyper& h);

}  // namespace pyopt
