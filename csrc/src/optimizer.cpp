#include "pyopt/optimizer.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace pyopt {
namespace {

std::size_t dtype_size(DType d) { return d == DType::Float32 ? sizeof(float) : sizeof(double); }
const char* dtype_name(DType d) { return d == DType::Float32 ? "float32" : "float64"; }

template <class T>
void fill(std::vector<char>& buffer, std::size_t size, double value) {
  buffer.assign(size * sizeof(T), 0);
  T* p = reinterpret_cast<T*>(buffer.data());
  for (std::size_t i = 0; i < size; ++i) p[i] = T(value);
}

}  // namespace

Optimizer::Optimizer(const std::string& name, const std::map<std::string, double>& hyper)
    : spec_(&find_optimizer(name)), hyper_(spec_->defaults) {
  for (const auto& [key, value] : hyper) {
    const int i = spec_->rule->hyper_index(key);
    if (i < 0) throw std::invalid_argument(name + ": unknown hyperparameter '" + key + "'");
    if (spec_->is_fixed(key)) throw std::invalid_argument(name + ": hyperparameter '" + key + "' is fixed");
    hyper_[i] = value;
  }
  spec_->rule->validate(hyper_.data());
}

std::size_t Optimizer::add_param(float* data, std::size_t size) { return add(data, size, DType::Float32); }
std::size_t Optimizer::add_param(double* data, std::size_t size) { return add(data, size, DType::Float64); }

namespace {
std::size_t product(const std::vector<std::size_t>& shape) {
  std::size_t n = 1;
  for (std::size_t d : shape) n *= d;
  return n;
}
}  // namespace

std::size_t Optimizer::add_param(float* data, const std::vector<std::size_t>& shape) {
  const std::size_t i = add(data, product(shape), DType::Float32);
  params_[i].shape = shape;
  return i;
}
std::size_t Optimizer::add_param(double* data, const std::vector<std::size_t>& shape) {
  const std::size_t i = add(data, product(shape), DType::Float64);
  params_[i].shape = shape;
  return i;
}

std::size_t Optimizer::add(void* data, std::size_t size, DType dtype) {
  if (!data && size) throw std::invalid_argument("add_param: null buffer");
  const char* begin = static_cast<const char*>(data);
  const Span span{begin, begin + size * dtype_size(dtype), params_.size()};
  if (const Span* other = overlapping(span))
    throw std::invalid_argument("add_param: param " + std::to_string(span.param) + " overlaps param " +
                                std::to_string(other->param));
  Param p{data, size, dtype, {}, {}, 0, {}};
  for (int j = 0; j < spec_->rule->num_scalars; ++j) p.scalars[j] = spec_->rule->initial_scalar(j);
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

void Optimizer::ensure_slots(Param& p) {
  const unsigned mask = spec_->rule->slots_needed(hyper_.data());
  for (int j = 0; j < spec_->rule->num_slots; ++j) {
    if (!(mask & (1u << j)) || !p.slots[j].empty() || p.size == 0) continue;
    const double init = spec_->rule->initial_state(j, hyper_.data());
    if (p.dtype == DType::Float32)
      fill<float>(p.slots[j], p.size, init);
    else
      fill<double>(p.slots[j], p.size, init);
  }
}

void Optimizer::step(const std::vector<GradRef>& grads) { step(grads, StepOptions{}); }

bool Optimizer::step(const std::vector<GradRef>& grads, const StepOptions& options) {
  check_step_options(options, "step: ");
  if (grads.size() != params_.size())
    throw std::invalid_argument("step: expected " + std::to_string(params_.size()) + " gradients, got " +
                                std::to_string(grads.size()));
  for (std::size_t i = 0; i < grads.size(); ++i) {
    const Param& p = params_[i];
    if (!grads[i].data) continue;
    if (grads[i].dtype != p.dtype)
      throw std::invalid_argument("step: gradient " + std::to_string(i) + " is " + dtype_name(grads[i].dtype) +
                                  " but its param is " + dtype_name(p.dtype));
    // A gradient must not overlap any param (it would be read while being written, so the result
    // would depend on the thread count); the state is the optimizer's own memory.
    const char* g = static_cast<const char*>(grads[i].data);
    if (const Span* other = overlapping({g, g + p.size * dtype_size(p.dtype), i}))
      throw std::invalid_argument("step: gradient " + std::to_string(i) + " overlaps " +
                                  (other->param == i ? std::string("its param") : "param " + std::to_string(other->param)));
  }
  StepPipeline pipeline;
  for (std::size_t i = 0; i < grads.size(); ++i) {
    if (!grads[i].data) continue;
    Param& p = params_[i];
    pipeline.add(i, p.dtype, TensorArgs{p.data, grads[i].data, {}, int64_t(p.size), 0, hyper_.data(), p.scalars},
                 &p.step);
  }
  // State is allocated (for slots a set() switched on) only once the step is sure to happen.
  const StepOutcome outcome = pipeline.run(*spec_->rule, options, [&] {
    for (Param& p : params_) ensure_slots(p);
    pipeline.for_each([&](std::size_t i, TensorArgs& a) {
      for (int j = 0; j < kMaxSlots; ++j) a.slots[j] = params_[i].slots[j].empty() ? nullptr : params_[i].slots[j].data();
    });
  });
  last_grad_norm_ = outcome.grad_norm;
  return outcome.applied;
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

std::vector<double> Optimizer::state(std::size_t param, const std::string& slot) const {
  const Param& p = params_.at(param);
  for (int j = 0; j < spec_->rule->num_slots; ++j) {
    if (slot != spec_->rule->slot_names[j]) continue;
    if (p.slots[j].empty()) return {};
    std::vector<double> out(p.size);
    for (std::size_t i = 0; i < p.size; ++i)
      out[i] = p.dtype == DType::Float32 ? double(reinterpret_cast<const float*>(p.slots[j].data())[i])
                                         : reinterpret_cast<const double*>(p.slots[j].data())[i];
    return out;
  }
  throw std::invalid_argument(spec_->name + ": no state slot '" + slot + "'");
}

}  // namespace pyopt
