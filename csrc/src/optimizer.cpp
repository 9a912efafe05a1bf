#include "pyopt/optimizer.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <type_traits>

#include "pyopt/driver/storage.hpp"
#include "pyopt/engines.hpp"
#include "pyopt/kernels.hpp"

namespace pyopt {
namespace {

std::size_t dtype_size(DType d) { return d == DType::Float32 ? sizeof(float) : sizeof(double); }
const char* dtype_name(DType d) { return d == DType::Float32 ? "float32" : "float64"; }

bool is_16bit(Storage s) { return s == Storage::Float16 || s == Storage::BFloat16; }
const char* storage_name(Storage s) {
  switch (s) {
    case Storage::Compute: return "compute";
    case Storage::Float16: return "float16";
    case Storage::BFloat16: return "bfloat16";
    case Storage::Int8Signed: return "int8 (signed)";
    case Storage::Int8Unsigned: return "int8 (unsigned)";
  }
  return "unknown storage";
}
// What a gradient or param holds: "float32", "float64", "bfloat16", ...
const char* element_name(DType dtype, Storage storage) {
  return storage == Storage::Compute ? dtype_name(dtype) : storage_name(storage);
}
std::size_t element_size(DType dtype, Storage storage) {
  return storage == Storage::Compute ? dtype_size(dtype) : is_16bit(storage) ? sizeof(uint16_t) : 1;
}
std::size_t quant_blocks(std::size_t size) { return (size + std::size_t(kQuantBlock) - 1) / std::size_t(kQuantBlock); }

template <class T>
void fill(std::vector<char>& buffer, std::size_t size, double value) {
  buffer.assign(size * sizeof(T), 0);
  T* p = reinterpret_cast<T*>(buffer.data());
  for (std::size_t i = 0; i < size; ++i) p[i] = T(value);
}

}  // namespace

const char* state_dtype_name(StateDType d) {
  switch (d) {
    case StateDType::Float32: return "float32";
    case StateDType::BFloat16: return "bfloat16";
    case StateDType::Int8: return "int8";
  }
  return "unknown";
}

StateDType parse_state_dtype(const std::string& name) {
  for (StateDType d : {StateDType::Float32, StateDType::BFloat16, StateDType::Int8})
    if (name == state_dtype_name(d)) return d;
  throw std::invalid_argument("state_dtype must be \"float32\", \"bfloat16\" or \"int8\", got \"" + name + "\"");
}

Optimizer::Optimizer(const std::string& name, const std::map<std::string, double>& hyper, const StorageOptions& storage)
    : spec_(&find_optimizer(name)), storage_(storage), hyper_(spec_->defaults) {
  check_storage(storage, name + ": ");
  for (const auto& [key, value] : hyper) {
    const int i = spec_->rule->hyper_index(key);
    if (i < 0) throw std::invalid_argument(name + ": unknown hyperparameter '" + key + "'");
    if (spec_->is_fixed(key)) throw std::invalid_argument(name + ": hyperparameter '" + key + "' is fixed");
    hyper_[i] = value;
  }
  spec_->rule->validate(hyper_.data());
}

void Optimizer::check_storage(const StorageOptions& o, const std::string& who) const {
  if (spec_->rule->engine != Engine::Rule &&
      (o.master_weights || o.stochastic_rounding || o.state_dtype != StateDType::Float32))
    throw std::invalid_argument(who + spec_->name + " keeps float32/float64 states of float32/float64 params only: "
                                "no storage options (as pyopt." + spec_->class_name + ")");
  if (o.state_dtype != StateDType::Float32 && o.state_dtype != StateDType::BFloat16 && o.state_dtype != StateDType::Int8)
    throw std::invalid_argument(who + "state_dtype " + std::to_string(int(o.state_dtype)) + " is not a StateDType");
  if (o.state_dtype == StateDType::Int8 && spec_->rule->int8_slots == 0) {
    std::string supported;
    for (const OptimizerSpec& s : optimizers())
      if (s.rule->int8_slots) supported += (supported.empty() ? "" : ", ") + s.name;
    throw std::invalid_argument(who + spec_->name + " has no 8-bit states (state_dtype int8); optimizers that do: " +
                                supported);
  }
  if (o.state_dtype == StateDType::BFloat16 && spec_->rule->num_reductions > 0)
    throw std::invalid_argument(who + spec_->name + " keeps float32 states only (its per-tensor sums), not bfloat16");
}

std::size_t Optimizer::add_param(float* data, std::size_t size) { return add(data, size, DType::Float32, Storage::Compute); }
std::size_t Optimizer::add_param(double* data, std::size_t size) { return add(data, size, DType::Float64, Storage::Compute); }
std::size_t Optimizer::add_param(uint16_t* data, std::size_t size, Storage kind) {
  if (!is_16bit(kind))
    throw std::invalid_argument(std::string("add_param: a uint16_t param is Storage::Float16 or Storage::BFloat16, not ") +
                                storage_name(kind));
  if (spec_->rule->engine != Engine::Rule)
    throw std::invalid_argument("add_param: " + spec_->name + " steps float32 and float64 params only (as pyopt." +
                                spec_->class_name + ")");
  return add(data, size, DType::Float32, kind);
}

namespace {
std::size_t product(const std::vector<std::size_t>& shape) {
  std::size_t n = 1;
  for (std::size_t d : shape) n *= d;
  return n;
}
}  // namespace

std::size_t Optimizer::add_param(float* data, const std::vector<std::size_t>& shape) {
  return add(data, product(shape), DType::Float32, Storage::Compute, &shape);
}
std::size_t Optimizer::add_param(double* data, const std::vector<std::size_t>& shape) {
  return add(data, product(shape), DType::Float64, Storage::Compute, &shape);
}
std::size_t Optimizer::add_param(uint16_t* data, const std::vector<std::size_t>& shape, Storage kind) {
  const std::size_t i = add_param(data, product(shape), kind);
  params_[i].shape = shape;
  return i;
}

// The storage of state slot j of a param: see StorageOptions.
Storage Optimizer::slot_storage_for(const StorageOptions& o, std::size_t size, DType dtype, int j) const {
  if (dtype == DType::Float64) return Storage::Compute;
  switch (o.state_dtype) {
    case StateDType::BFloat16: return Storage::BFloat16;
    case StateDType::Int8:
      if (!(spec_->rule->int8_slots >> j & 1u) || size < std::size_t(kMin8bitSize)) return Storage::Compute;
      return spec_->rule->nonnegative_slots >> j & 1u ? Storage::Int8Unsigned : Storage::Int8Signed;
    default: return Storage::Compute;
  }
}

std::size_t Optimizer::add(void* data, std::size_t size, DType dtype, Storage storage,
                           const std::vector<std::size_t>* shape) {
  if (!data && size) throw std::invalid_argument("add_param: null buffer");
  if (spec_->rule->engine == Engine::Muon && (!shape || shape->size() != 2))
    throw std::invalid_argument("add_param: Muon takes only 2-D params (weight matrices; add_param(data, {rows, cols})), "
                                "got " + (shape ? std::to_string(shape->size()) + "-D" : std::string("no shape")) +
                                "; optimize the others (biases, norms, embeddings) with another optimizer, e.g. adamw");
  const char* begin = static_cast<const char*>(data);
  const Span span{begin, begin + size * element_size(dtype, storage), params_.size()};
  if (const Span* other = overlapping(span))
    throw std::invalid_argument("add_param: param " + std::to_string(span.param) + " overlaps param " +
                                std::to_string(other->param));
  Param p{data, size, dtype, storage, {}, {}, 0, shape ? *shape : std::vector<std::size_t>{}, {}, {}, {}};
  for (int j = 0; j < spec_->rule->num_scalars; ++j) p.scalars[j] = spec_->rule->initial_scalar(j);
  for (int j = 0; j < kMaxSlots; ++j) p.slot_storage[j] = slot_storage_for(storage_, size, dtype, j);
  ensure_slots(p);
  params_.push_back(std::move(p));
  if (span.begin != span.end) {
    spans_.insert(std::upper_bound(spans_.begin(), spans_.end(), span,
                                   [](const Span& a, const Span& b) { return a.begin < b.begin; }),
                  span);
  }
  return params_.size() - 1;
}

// The params are disjoint and sorted by address, so of those starting before s.end, the last one
// ends last: one binary search finds any overlap.
const Optimizer::Span* Optimizer::overlapping(const Span& s) const {
  if (s.begin == s.end) return nullptr;
  auto it = std::lower_bound(spans_.begin(), spans_.end(), s.end,
                             [](const Span& a, const char* end) { return a.begin < end; });
  if (it == spans_.begin()) return nullptr;
  --it;
  return it->end > s.begin ? &*it : nullptr;
}

std::vector<std::size_t> Optimizer::numpy_shape(const Param& p) {
  return p.shape.empty() ? std::vector<std::size_t>{p.size} : p.shape;
}

std::size_t Optimizer::slot_elements(const Param& p, int j) const {
  const Engine engine = spec_->rule->engine;
  if (engine == Engine::Rule) return p.size;
  const std::vector<std::size_t> shape = numpy_shape(p);
  return engines::has_slot(engine, j, shape) ? product(engines::slot_shape(engine, j, shape)) : 0;
}

void Optimizer::ensure_slots(Param& p) {
  const unsigned mask = spec_->rule->slots_needed(hyper_.data());
  if (spec_->rule->engine != Engine::Rule) {  // zeros, shaped by the engine (Adafactor's factors)
    for (int j = 0; j < spec_->rule->num_slots; ++j) {
      const std::size_t n = slot_elements(p, j);
      if (!p.slots[j].empty() || p.size == 0 || n == 0) continue;
      p.slots[j].assign(n * dtype_size(p.dtype), 0);
    }
    return;
  }
  for (int j = 0; j < spec_->rule->num_slots; ++j) {
    if (!(mask & (1u << j)) || !p.slots[j].empty() || p.size == 0) continue;
    const double init = spec_->rule->initial_state(j, hyper_.data());
    const Storage kind = p.slot_storage[j];
    if (kind == Storage::BFloat16) {
      fill<uint16_t>(p.slots[j], p.size, storage::float_to_bf16(float(init)));  // via float32, as ml_dtypes
    } else if (is_int8(kind)) {
      // bitsandbytes' fresh state: codes 0, absmax 0; a nonzero initial value is quantized.
      p.slots[j].assign(p.size, 0);
      p.absmax[j].assign(quant_blocks(p.size), 0.0f);
      if (init != 0.0) {
        const std::vector<float> values(p.size, float(init));
        run_quantize8(values.data(), int64_t(p.size), kind == Storage::Int8Signed,
                      reinterpret_cast<unsigned char*>(p.slots[j].data()), p.absmax[j].data());
      }
    } else if (p.dtype == DType::Float32) {
      fill<float>(p.slots[j], p.size, init);
    } else {
      fill<double>(p.slots[j], p.size, init);
    }
  }
}

void Optimizer::ensure_master(Param& p) {
  if (!wants_master(storage_, p) || !p.master.empty() || p.size == 0) return;
  p.master.resize(p.size);
  storage::load_floats(p.storage, p.data, 0, int64_t(p.size), p.master.data());
}

void Optimizer::step(const std::vector<GradRef>& grads) { step(grads, StepOptions{}); }

bool Optimizer::step(const std::vector<GradRef>& grads, const StepOptions& options) {
  check_step_options(options, "step: ");
  if (grads.size() != params_.size())
    throw std::invalid_argument("step: expected " + std::to_string(params_.size()) + " gradients, got " +
                                std::to_string(grads.size()));
  for (std::size_t i = 0; i < grads.size(); ++i) {
    const Param& p = params_[i];
    const GradRef& grad = grads[i];
    if (!grad.data) continue;
    // A gradient is stored as its param, or (16-bit params) as float32.
    const bool same = grad.dtype == p.dtype && grad.storage == p.storage;
    const bool float32_of_16bit = p.storage != Storage::Compute && grad.storage == Storage::Compute &&
                                  grad.dtype == DType::Float32;
    if (!same && !float32_of_16bit)
      throw std::invalid_argument("step: gradient " + std::to_string(i) + " is " + element_name(grad.dtype, grad.storage) +
                                  " but its param is " + element_name(p.dtype, p.storage) +
                                  (p.storage == Storage::Compute ? "" : " (pass " + std::string(storage_name(p.storage)) +
                                                                            " or float32)"));
    // A gradient must not overlap any param (it would be read while being written, so the result
    // would depend on the thread count); the state is the optimizer's own memory.
    const char* g = static_cast<const char*>(grad.data);
    if (const Span* other = overlapping({g, g + p.size * element_size(grad.dtype, grad.storage), i}))
      throw std::invalid_argument("step: gradient " + std::to_string(i) + " overlaps " +
                                  (other->param == i ? std::string("its param") : "param " + std::to_string(other->param)));
  }
  if (spec_->rule->engine != Engine::Rule) {
    step_engine(grads, options);
    return true;
  }
  StepPipeline pipeline;
  for (std::size_t i = 0; i < grads.size(); ++i) {
    if (!grads[i].data) continue;
    Param& p = params_[i];
    TensorArgs args{p.data, grads[i].data, {}, int64_t(p.size), 0, hyper_.data(), p.scalars};
    args.param_storage = p.storage;
    args.grad_storage = grads[i].storage;
    pipeline.add(i, p.dtype, args, &p.step);
  }
  // State is allocated (for slots a set() switched on, and master copies) only once the step is
  // sure to happen.
  const StepOutcome outcome = pipeline.run(*spec_->rule, options, [&] {
    for (Param& p : params_) ensure_slots(p);
    pipeline.for_each([&](std::size_t i, TensorArgs& a) {
      Param& p = params_[i];
      ensure_master(p);
      for (int j = 0; j < kMaxSlots; ++j) {
        a.slots[j] = p.slots[j].empty() ? nullptr : p.slots[j].data();
        a.slot_storage[j] = p.slot_storage[j];
        a.slot_absmax[j] = p.absmax[j].empty() ? nullptr : p.absmax[j].data();
      }
      a.master = p.master.empty() ? nullptr : p.master.data();
      a.stochastic_rounding = storage_.stochastic_rounding;
      a.rounding_seed = uint64_t(i);  // the param's index, in Python too
    });
  });
  last_grad_norm_ = outcome.grad_norm;
  return outcome.applied;
}

// Adafactor and Muon: each param on its own (their steps read whole tensors), as the Python
// optimizers step them. Clipping and skipping belong to the element-wise pipeline.
void Optimizer::step_engine(const std::vector<GradRef>& grads, const StepOptions& options) {
  const StepOptions none;
  if (options.clip_norm != none.clip_norm || options.clip_value != none.clip_value || options.skip_nonfinite)
    throw std::invalid_argument("step: " + spec_->name + " takes no StepOptions (clip_norm, clip_value, "
                                "skip_nonfinite: as pyopt." + spec_->class_name + ".step)");
  const Engine engine = spec_->rule->engine;
  const AdafactorHyper adafactor = engine == Engine::Adafactor ? engines::adafactor_hyper(hyper_.data()) : AdafactorHyper{};
  const MuonHyper muon = engine == Engine::Muon ? engines::muon_hyper(hyper_.data()) : MuonHyper{};
  last_grad_norm_ = std::numeric_limits<double>::quiet_NaN();
  for (Param& p : params_) ensure_slots(p);
  for (std::size_t i = 0; i < grads.size(); ++i) {
    if (!grads[i].data) continue;
    Param& p = params_[i];
    const int64_t step = ++p.step;
    if (p.size == 0) continue;  // an empty param: nothing to update (its state stays as it is)
    auto run = [&](auto* param) {
      using T = std::remove_pointer_t<decltype(param)>;
      const T* grad = static_cast<const T*>(grads[i].data);
      auto slot = [&](int j) { return p.slots[j].empty() ? nullptr : reinterpret_cast<T*>(p.slots[j].data()); };
      if (engine == Engine::Adafactor) {
        const engines::Factoring f = engines::adafactor_factoring(numpy_shape(p));
        adafactor_step<T>(param, grad, slot(engines::kRowVar), slot(engines::kColVar), slot(engines::kVariance), f.batch,
                          f.rows, f.cols, int64_t(p.size), step, adafactor);
      } else {
        muon_step<T>(param, grad, slot(0), int64_t(p.shape[0]), int64_t(p.shape[1]), muon);
      }
    };
    if (p.dtype == DType::Float32) run(static_cast<float*>(p.data));
    else run(static_cast<double*>(p.data));
  }
}

void Optimizer::update_hessian(const std::vector<GradRef>& estimates) {
  const int slot = spec_->rule->engine == Engine::Rule ? slot_index("hessian") : -1;
  if (slot < 0) throw std::invalid_argument("update_hessian: " + spec_->name + " keeps no Hessian (SophiaG does)");
  if (estimates.size() != params_.size())
    throw std::invalid_argument("update_hessian: expected " + std::to_string(params_.size()) + " estimates, got " +
                                std::to_string(estimates.size()));
  for (std::size_t i = 0; i < estimates.size(); ++i) {
    const Param& p = params_[i];
    if (!estimates[i].data) continue;
    if (p.storage != Storage::Compute || p.slot_storage[slot] != Storage::Compute)
      throw std::invalid_argument("update_hessian: param " + std::to_string(i) +
                                  ": the Hessian of float32/float64 params with float32/float64 states only (as pyopt)");
    if (estimates[i].dtype != p.dtype || estimates[i].storage != Storage::Compute)
      throw std::invalid_argument("update_hessian: estimate " + std::to_string(i) + " is " +
                                  element_name(estimates[i].dtype, estimates[i].storage) + " but its param is " +
                                  dtype_name(p.dtype));
  }
  const double beta2 = get("beta2");
  for (Param& p : params_) ensure_slots(p);
  std::vector<MapArgs> by_dtype[kNumDTypes];
  for (std::size_t i = 0; i < estimates.size(); ++i) {
    Param& p = params_[i];
    if (estimates[i].data && p.size)
      by_dtype[int(p.dtype)].push_back(MapArgs{p.slots[slot].data(), estimates[i].data, int64_t(p.size), beta2});
  }
  for (int d = 0; d < kNumDTypes; ++d)
    if (!by_dtype[d].empty()) run_map(ElementMap::HessianEma, DType(d), by_dtype[d].data(), int64_t(by_dtype[d].size()));
}

int Optimizer::slot_index(const std::string& slot) const {
  for (int j = 0; j < spec_->rule->num_slots; ++j)
    if (slot == spec_->rule->slot_names[j]) return j;
  return -1;
}

double Optimizer::get(const std::string& key) const {
  const int i = spec_->rule->hyper_index(key);
  if (i < 0) throw std::invalid_argument(spec_->name + ": unknown hyperparameter '" + key + "'");
  return hyper_[i];
}

void Optimizer::set(const std::string& key, double value) {
  const int i = spec_->rule->hyper_index(key);
  if (i < 0) throw std::invalid_argument(spec_->name + ": unknown hyperparameter '" + key + "'");
  if (spec_->is_fixed(key)) throw std::invalid_argument(spec_->name + ": hyperparameter '" + key + "' is fixed");
  std::vector<double> next = hyper_;
  next[i] = value;
  spec_->rule->validate(next.data());
  hyper_ = std::move(next);
}

std::map<std::string, double> Optimizer::hyperparameters() const {
  std::map<std::string, double> out;
  for (int i = 0; i < spec_->rule->num_hyper; ++i) out[spec_->rule->hyper[i].name] = hyper_[i];
  return out;
}

RawState Optimizer::raw_state(std::size_t param, const std::string& slot) const {
  const Param& p = params_.at(param);
  for (int j = 0; j < spec_->rule->num_slots; ++j) {
    if (slot != spec_->rule->slot_names[j]) continue;
    RawState r;
    r.storage = p.slot_storage[j];
    if (p.slots[j].empty()) return r;
    r.data = p.slots[j].data();
    r.size = slot_elements(p, j);
    r.absmax = p.absmax[j].empty() ? nullptr : p.absmax[j].data();
    r.absmax_size = p.absmax[j].size();
    return r;
  }
  throw std::invalid_argument(spec_->name + ": no state slot '" + slot + "'");
}

std::vector<double> Optimizer::state(std::size_t param, const std::string& slot) const {
  const Param& p = params_.at(param);
  const RawState r = raw_state(param, slot);
  if (!r.data) return {};
  std::vector<double> out(r.size);
  if (is_int8(r.storage)) {
    std::vector<float> values(p.size);
    run_dequantize8(static_cast<const unsigned char*>(r.data), r.absmax, int64_t(p.size),
                    r.storage == Storage::Int8Signed, values.data());
    std::copy(values.begin(), values.end(), out.begin());
    return out;
  }
  for (std::size_t i = 0; i < r.size; ++i) {
    if (r.storage == Storage::BFloat16)
      out[i] = double(storage::bf16_to_float(static_cast<const uint16_t*>(r.data)[i]));
    else if (p.dtype == DType::Float32)
      out[i] = double(static_cast<const float*>(r.data)[i]);
    else
      out[i] = static_cast<const double*>(r.data)[i];
  }
  return out;
}

}  // namespace pyopt
