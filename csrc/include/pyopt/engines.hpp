#pragma once
// Internal: what pyopt::Optimizer and the catalogue need to run the optimizers written in Python
// that C++ runs too (Engine in registry.hpp): their slots and how big each is for a param, their
// hyperparameters' positions, and the checks no record Range expresses.
#include <cstddef>
#include <vector>

#include "pyopt/adafactor.hpp"
#include "pyopt/muon.hpp"
#include "pyopt/registry.hpp"

namespace pyopt::engines {

struct Layout {
  const char* const* slot_names;
  int num_slots;
  unsigned (*slot_mask)(int variant);
  void (*check)(const double* hyper);
};
Layout layout(Engine engine);
// Hyperparameters C++ keeps after the record's (Muon's adjust_lr_fn, a string in Python).
std::vector<HyperSpec> extra_hyper(Engine engine);

// Positions in the hyperparameter vector (the record's order).
enum AdafactorIndex { kAdafactorLr, kAdafactorBeta2Decay, kAdafactorEps1, kAdafactorEps2, kAdafactorD,
                      kAdafactorWeightDecay, kAdafactorMaximize };
enum AdafactorSlot { kRowVar, kColVar, kVariance };
enum MuonIndex { kMuonLr, kMuonWeightDecay, kMuonMomentum, kMuonNesterov, kMuonNsA, kMuonNsB, kMuonNsC, kMuonEps,
                 kMuonNsSteps, kMuonAdjustLr };

AdafactorHyper adafactor_hyper(const double* hyper);  // eps1 NaN (None) -> -1, as AdafactorHyper has it
MuonHyper muon_hyper(const double* hyper);

// Adafactor's factoring of a param of this numpy shape: batch × rows × cols (rows = 0: a vector,
// or a scalar, which keeps a full variance).
struct Factoring {
  int64_t batch = 0, rows = 0, cols = 0;
};
Factoring adafactor_factoring(const std::vector<std::size_t>& shape);

// The numpy shape of state `slot` of a param of numpy shape `shape` (as pyopt.load wants it), and
// whether the param has that slot at all.
bool has_slot(Engine engine, int slot, const std::vector<std::size_t>& shape);
std::vector<std::size_t> slot_shape(Engine engine, int slot, const std::vector<std::size_t>& shape);

}  // namespace pyopt::engines
