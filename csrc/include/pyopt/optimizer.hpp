#pragma once
// pyopt::Optimizer — a C++ optimizer that owns its state and steps over caller-owned buffers.
//
//   std::vector<float> w(1000), g(1000);
//   pyopt::Optimizer opt("adamw", {{"lr", 1e-3}, {"weight_decay", 1e-2}});
//   opt.add_param(w.data(), w.size());
//   for (...) { compute(g); opt.step({g.data()}); }
//
// Params may not overlap each other, nor a gradient any param (std::invalid_argument). Not
// thread-safe: one thread at a time per Optimizer (step, set, load, save); distinct Optimizers are
// independent.
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "pyopt/registry.hpp"
#include "pyopt/step_pipeline.hpp"  // StepOptions
#include "pyopt/types.hpp"

namespace pyopt {

// A gradient buffer of either dtype; converts implicitly from float* and double*.
struct GradRef {
  GradRef(const float* p) : data(p), dtype(DType::Float32) {}
  GradRef(const double* p) : data(p), dtype(DType::Float64) {}
  GradRef(std::nullptr_t) : data(nullptr), dtype(DType::Float32) {}  // skip this param this step
  const void* data;
  DType dtype;
};

class Optimizer {
 public:
  // name: one of optimizers(); hyper: any of its hyperparameters (bools as 0/1). Throws
  // std::invalid_argument for unknown names, pinned or out-of-range hyperparameters.
  explicit Optimizer(const std::string& name, const std::map<std::string, double>& hyper = {});

  // Registers a caller-owned buffer; its state is allocated here. Returns the param's index.
  std::size_t add_param(float* data, std::size_t size);
  std::size_t add_param(double* data, std::size_t size);
  // The same with the param's shape (size = its product). Only checkpoints use it: save() records
  // it, so pyopt.load sees arrays shaped as the numpy params (else they are 1-d of `size`).
  std::size_t add_param(float* data, const std::vector<std::size_t>& shape);
  std::size_t add_param(double* data, const std::vector<std::size_t>& shape);

  // One step: a gradient per registered param, in registration order (nullptr skips a param).
  // Everything is checked before any buffer is written.
  void step(const std::vector<GradRef>& grads);
  // The same with clipping / skipping; returns false when skip_nonfinite skipped the step.
  bool step(const std::vector<GradRef>& grads, const StepOptions& options);
  // N of the last step that computed it (clip_norm or skip_nonfinite), else NaN.
  double last_grad_norm() const { return last_grad_norm_; }

  double get(const std::string& hyper_name) const;
  void set(const std::string& hyper_name, double value);  // validated; takes effect at the next step
  std::map<std::string, double> hyperparameters() const;

  const std::string& name() const { return spec_->name; }
  std::size_t num_params() const { return params_.size(); }
  int64_t step_count(std::size_t param) const { return params_.at(param).step; }
  // The state array `slot` (e.g. "exp_avg") of a param; empty when this configuration has no such slot.
  std::vector<double> state(std::size_t param, const std::string& slot) const;

  // Checkpoints, in pyopt.save's .npz format (see pyopt/checkpoint.hpp): one file works in both
  // languages. save() writes hyperparameters, steps and state (not the params themselves);
  // load() restores them into this optimizer, which must run the same optimizer over the same
  // number of params of the same sizes. load() checks the whole file before changing anything;
  // errors throw std::runtime_error (unreadable file) or std::invalid_argument (mismatch).
  void save(const std::string& path) const;
  void load(const std::string& path);

 private:
  struct Param {
    void* data;
    std::size_t size;
    DType dtype;
    std::vector<char> slots[kMaxSlots];  // raw storage in the param's dtype
    double scalars[kMaxScalars];
    int64_t step;
    std::vector<std::size_t> shape;  // empty: 1-d of `size`
  };
  struct Span {  // the bytes of a param
    const char* begin;
    const char* end;
    std::size_t param;
  };
  std::size_t add(void* data, std::size_t size, DType dtype);
  void ensure_slots(Param& p);
  const Span* overlapping(const Span& s) const;  // a param sharing bytes with s, or nullptr

  const OptimizerSpec* spec_;
  std::vector<double> hyper_;
  std::vector<Param> params_;
  std::vector<Span> spans_;  // the non-empty params' bytes, disjoint, sorted by address
  double last_grad_norm_ = std::numeric_limits<double>::quiet_NaN();
};

}  // namespace pyopt
