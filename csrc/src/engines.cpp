// The Python-written optimizers C++ runs too (engines.hpp): slots, shapes and checks.
#include "pyopt/engines.hpp"

#include <cmath>
#include <stdexcept>
#include <string>

namespace pyopt::engines {
namespace {

constexpr const char* kAdafactorSlots[] = {"row_var", "col_var", "variance"};
constexpr const char* kMuonSlots[] = {"momentum_buffer"};

void check_adafactor(const double* h) {
  const double eps1 = h[kAdafactorEps1];  // NaN is None; AdafactorHyper's own None (-1) is not a value here
  if (!std::isnan(eps1) && !(eps1 >= 0.0))
    throw std::invalid_argument("invalid eps1: " + std::to_string(eps1) + " (must be >= 0, or NaN for None: the dtype's machine epsilon)");
  validate_adafactor(adafactor_hyper(h));
}

void check_muon(const double* h) {
  const double steps = h[kMuonNsSteps];
  if (!(steps >= 1.0 && steps <= 99.0 && steps == std::floor(steps)))
    throw std::invalid_argument("invalid ns_steps: " + std::to_string(steps) + " (must be an int in [1, 99], as torch's)");
  const double adjust = h[kMuonAdjustLr];
  if (!(adjust == 0.0 || adjust == 1.0 || adjust == 2.0))
    throw std::invalid_argument("invalid adjust_lr_fn: " + std::to_string(adjust) +
                                " (0: None, 1: \"original\", 2: \"match_rms_adamw\")");
}

}  // namespace

Layout layout(Engine engine) {
  switch (engine) {
    case Engine::Adafactor: return {kAdafactorSlots, 3, +[](int) { return 7u; }, &check_adafactor};
    case Engine::Muon: return {kMuonSlots, 1, +[](int) { return 1u; }, &check_muon};
    case Engine::Rule: break;
  }
  throw std::logic_error("pyopt: engines::layout of an element-wise rule");
}

std::vector<HyperSpec> extra_hyper(Engine engine) {
  if (engine != Engine::Muon) return {};
  HyperSpec adjust{"adjust_lr_fn", 0.0, HyperKind::Integer};
  adjust.doc = "0: None, 1: \"original\", 2: \"match_rms_adamw\" (Python's strings in configs and checkpoints)";
  return {adjust};
}

AdafactorHyper adafactor_hyper(const double* h) {
  AdafactorHyper a;
  a.lr = h[kAdafactorLr];
  a.beta2_decay = h[kAdafactorBeta2Decay];
  a.eps1 = std::isnan(h[kAdafactorEps1]) ? -1.0 : h[kAdafactorEps1];
  a.eps2 = h[kAdafactorEps2];
  a.d = h[kAdafactorD];
  a.weight_decay = h[kAdafactorWeightDecay];
  a.maximize = h[kAdafactorMaximize] != 0.0;
  return a;
}

MuonHyper muon_hyper(const double* h) {
  MuonHyper m;
  m.lr = h[kMuonLr];
  m.weight_decay = h[kMuonWeightDecay];
  m.momentum = h[kMuonMomentum];
  m.nesterov = h[kMuonNesterov] != 0.0;
  m.ns_a = h[kMuonNsA];
  m.ns_b = h[kMuonNsB];
  m.ns_c = h[kMuonNsC];
  m.eps = h[kMuonEps];
  m.ns_steps = int(h[kMuonNsSteps]);
  m.adjust_lr = MuonAdjustLr(int(h[kMuonAdjustLr]));
  return m;
}

Factoring adafactor_factoring(const std::vector<std::size_t>& shape) {
  Factoring f;
  if (shape.size() < 2) return f;
  f.rows = int64_t(shape[shape.size() - 2]);
  f.cols = int64_t(shape.back());
  f.batch = 1;  // the leading axes (not size / (rows·cols): that is 0/0 for an empty param)
  for (std::size_t axis = 0; axis + 2 < shape.size(); ++axis) f.batch *= int64_t(shape[axis]);
  return f;
}

bool has_slot(Engine engine, int slot, const std::vector<std::size_t>& shape) {
  if (engine != Engine::Adafactor) return true;
  return shape.size() >= 2 ? slot != kVariance : slot == kVariance;
}

std::vector<std::size_t> slot_shape(Engine engine, int slot, const std::vector<std::size_t>& shape) {
  if (engine != Engine::Adafactor || slot == kVariance) return shape;
  std::vector<std::size_t> out(shape);  // row_var (..., rows, 1), col_var (..., 1, cols), as pyopt.Adafactor
  out[out.size() - (slot == kRowVar ? 1 : 2)] = 1;
  return out;
}

}  // namespace pyopt::engines
