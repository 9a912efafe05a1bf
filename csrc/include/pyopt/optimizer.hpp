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
//
// 16-bit params (bfloat16 / float16 words in uint16_t buffers) and the storage options:
//
//   std::vector<uint16_t> w(n);  // bfloat16 bits
//   pyopt::StorageOptions storage;
//   storage.master_weights = true;
//   storage.state_dtype = pyopt::StateDType::Int8;
//   pyopt::Optimizer opt("adamw", {{"lr", 1e-3}}, storage);
//   opt.add_param(w.data(), w.size(), pyopt::Storage::BFloat16);
//   opt.step({pyopt::GradRef(g_bf16.data(), pyopt::Storage::BFloat16)});  // or a float32 gradient
//
// Every step computes in float32 and writes the param back rounded to nearest even (or
// stochastically); see StorageOptions for the state.
//
// Besides the element-wise rules, two optimizers whose state or step is per tensor (pyopt's
// Python-written pyopt.Adafactor and pyopt.Muon, with the same results):
//   "adafactor"  register params with their shape (add_param(data, {rows, cols}); a param of two
//                or more axes keeps the factors row_var (..., rows, 1) and col_var (..., 1, cols),
//                one without a shape or of one axis a full variance). Bit-identical to
//                pyopt.Adafactor (the same kernel, pyopt/adafactor.hpp).
//   "muon"       2-D params only (add_param(data, {rows, cols})); only when the library was built
//                with a BLAS (have_blas(); see pyopt/muon.hpp for how close it is to pyopt.Muon).
//                Its adjust_lr_fn is the number hyperparameter "adjust_lr_fn" (0: None,
//                1: "original", 2: "match_rms_adamw"; configs and checkpoints spell the string).
// Both take float32/float64 params, no storage options and no StepOptions. SophiaG's Hessian EMA
// is update_hessian().
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

// How the state of an optimizer is stored (the Python optimizers' keyword options of the same
// names; checkpoints record them):
//   master_weights       a float32 master copy of each float16/bfloat16 param: the step updates
//                        the master and writes the param from it (rounded). It is taken from the
//                        param when the param first steps (or restored by load()); afterwards the
//                        caller's writes to such a param are overwritten. No-op for float32/float64.
//   state_dtype          Float32: states in float32 (float64 for float64 params).
//                        BFloat16: states of float32 and 16-bit params as bfloat16 (float64 params
//                        keep float64 states).
//                        Int8: the rule's 8-bit-capable slots (RuleInfo::int8_slots) of float32 and
//                        16-bit params of at least kMin8bitSize elements are bitsandbytes' blockwise
//                        8-bit states: a uint8 code per element and a float32 absmax per kQuantBlock
//                        elements, the unsigned map for RuleInfo::nonnegative_slots, else the signed
//                        one. Other slots, smaller params and float64 params keep the float32 (64)
//                        states. Rules without 8-bit slots throw std::invalid_argument, and so do
//                        rules with per-tensor sums (LAMB, LARS) for BFloat16 (float32 states only).
//   stochastic_rounding  16-bit writes (params without a master, bfloat16 states) round
//                        stochastically; param i uses rounding seed i (TensorArgs::rounding_seed), as
//                        the Python optimizers do, so both languages give the same bits.
enum class StateDType : uint8_t { Float32 = 0, BFloat16 = 1, Int8 = 2 };
struct StorageOptions {
  bool master_weights = false;
  StateDType state_dtype = StateDType::Float32;
  bool stochastic_rounding = false;
};
const char* state_dtype_name(StateDType d);  // "float32", "bfloat16", "int8" (Python's spelling)
StateDType parse_state_dtype(const std::string& name);  // std::invalid_argument for other names

// A gradient buffer: float32 or float64 (converts implicitly from float* and double*), or the
// 16-bit words of a float16/bfloat16 param's gradient (GradRef(ptr, Storage::BFloat16)); a 16-bit
// param takes its own storage or float32.
struct GradRef {
  GradRef(const float* p) : data(p), dtype(DType::Float32) {}
  GradRef(const double* p) : data(p), dtype(DType::Float64) {}
  GradRef(const uint16_t* p, Storage kind) : data(p), dtype(DType::Float32), storage(kind) {}
  GradRef(std::nullptr_t) : data(nullptr), dtype(DType::Float32) {}  // skip this param this step
  const void* data;
  DType dtype;
  Storage storage = Storage::Compute;  // Compute: stored as dtype
};

// The raw bytes of one state slot (Optimizer::raw_state): `size` elements stored as `storage`
// (Compute: the param's dtype; BFloat16: uint16_t words; Int8*: uint8 codes with `absmax_size`
// float32 scales).
struct RawState {
  Storage storage = Storage::Compute;
  const void* data = nullptr;  // null when the slot is not allocated
  std::size_t size = 0;
  const float* absmax = nullptr;
  std::size_t absmax_size = 0;
};

class Optimizer {
 public:
  // name: one of optimizers(); hyper: any of its hyperparameters (bools as 0/1). Throws
  // std::invalid_argument for unknown names, pinned or out-of-range hyperparameters.
  // storage: see StorageOptions (std::invalid_argument for Int8 on a rule without 8-bit slots).
  explicit Optimizer(const std::string& name, const std::map<std::string, double>& hyper = {},
                     const StorageOptions& storage = {});

  // Registers a caller-owned buffer; its state is allocated here. Returns the param's index.
  std::size_t add_param(float* data, std::size_t size);
  std::size_t add_param(double* data, std::size_t size);
  // The same with the param's shape (size = its product). Only checkpoints use it: save() records
  // it, so pyopt.load sees arrays shaped as the numpy params (else they are 1-d of `size`).
  std::size_t add_param(float* data, const std::vector<std::size_t>& shape);
  std::size_t add_param(double* data, const std::vector<std::size_t>& shape);
  // A float16 or bfloat16 param (kind Storage::Float16 / Storage::BFloat16; others throw
  // std::invalid_argument): `size` 16-bit words.
  std::size_t add_param(uint16_t* data, std::size_t size, Storage kind);
  std::size_t add_param(uint16_t* data, const std::vector<std::size_t>& shape, Storage kind);

  // SophiaG (any optimizer with a "hessian" state): h ← beta2·h + (1 − beta2)·estimate for each
  // param, as pyopt.SophiaG.update_hessian (one estimate per param, its dtype; nullptr skips a
  // param). Does not count as a step. std::invalid_argument (nothing changed) for other optimizers,
  // a wrong count or dtype, and 16-bit params or states.
  void update_hessian(const std::vector<GradRef>& estimates);

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
  // The state array `slot` (e.g. "exp_avg") of a param; empty when this configuration has no such
  // slot. bfloat16 and 8-bit states are returned dequantized (their float32 values).
  std::vector<double> state(std::size_t param, const std::string& slot) const;
  // How that slot is stored and its bytes (valid until the next step, load, set or add_param);
  // `size` is the param's, but Adafactor's factors (the product of their shapes above).
  RawState raw_state(std::size_t param, const std::string& slot) const;
  // The float32 master copy of a 16-bit param (master_weights); empty before its first step and
  // for params without one.
  const std::vector<float>& master(std::size_t param) const { return params_.at(param).master; }
  const StorageOptions& storage() const { return storage_; }
  Storage param_storage(std::size_t param) const { return params_.at(param).storage; }

  // Checkpoints, in pyopt.save's .npz format (see pyopt/checkpoint.hpp): one file works in both
  // languages. save() writes hyperparameters, steps and state (not the params themselves);
  // load() restores them into this optimizer, which must run the same optimizer over the same
  // number of params of the same sizes. Like the hyperparameters, the checkpoint's storage options
  // replace this optimizer's (as Python's load_state_dict does). load() checks the whole file before
  // changing anything; errors throw std::runtime_error (unreadable file) or std::invalid_argument
  // (mismatch).
  void save(const std::string& path) const;
  void load(const std::string& path);

 private:
  struct Param {
    void* data;
    std::size_t size;
    DType dtype;
    Storage storage;  // Compute (stored as dtype) or a 16-bit kind
    std::vector<char> slots[kMaxSlots];  // raw storage as slot_storage says
    double scalars[kMaxScalars];
    int64_t step;
    std::vector<std::size_t> shape;  // empty: 1-d of `size`
    Storage slot_storage[kMaxSlots];
    std::vector<float> absmax[kMaxSlots];  // Int8 slots: ceil(size / kQuantBlock) scales
    std::vector<float> master;             // master_weights of a 16-bit param (from its first step)
  };
  struct Span {  // the bytes of a param
    const char* begin;
    const char* end;
    std::size_t param;
  };
  std::size_t add(void* data, std::size_t size, DType dtype, Storage storage,
                  const std::vector<std::size_t>* shape = nullptr);
  void step_engine(const std::vector<GradRef>& grads, const StepOptions& options);  // Adafactor, Muon
  int slot_index(const std::string& slot) const;  // -1: the rule has no such slot
  std::size_t slot_elements(const Param& p, int slot) const;  // elements of that slot of p (0: none)
  static std::vector<std::size_t> numpy_shape(const Param& p);  // the shape, or (size,)
  void ensure_slots(Param& p);
  void ensure_master(Param& p);
  // std::invalid_argument (prefixed by who) for options this optimizer's rule cannot have.
  void check_storage(const StorageOptions& o, const std::string& who) const;
  Storage slot_storage_for(const StorageOptions& o, std::size_t size, DType dtype, int slot) const;
  static bool wants_master(const StorageOptions& o, const Param& p) {
    return o.master_weights && p.storage != Storage::Compute;
  }
  const Span* overlapping(const Span& s) const;  // a param sharing bytes with s, or nullptr

  const OptimizerSpec* spec_;
  StorageOptions storage_;
  std::vector<double> hyper_;
  std::vector<Param> params_;
  std::vector<Span> spans_;  // the non-empty params' bytes, disjoint, sorted by address
  double last_grad_norm_ = std::numeric_limits<double>::quiet_NaN();
};

}  // namespace pyopt
