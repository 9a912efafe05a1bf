// The stateful fast path behind pyopt.Optimizer.step: the Python layer builds an Engine when its
// param groups or hyperparameters change; each step is then one call that checks every gradient,
// and only then bumps the step counters and runs the kernels with the GIL released.
#include "engine.hpp"

#include <algorithm>
#include <stdexcept>

#include "arrays.hpp"
#include "pyopt/step_pipeline.hpp"

namespace pyopt::python {

Engine::Engine(const std::string& name, std::vector<std::vector<double>> group_hyper, py::list tensors,
               py::array_t<int64_t> steps, py::array_t<double> scalars, bool stochastic_rounding)
    : spec_(&find_optimizer(name)),
      group_hyper_(std::move(group_hyper)),
      steps_(steps),
      scalars_(scalars),
      stochastic_rounding_(stochastic_rounding) {
  const RuleInfo& rule = *spec_->rule;
  for (std::size_t g = 0; g < group_hyper_.size(); ++g) {
    if (int(group_hyper_[g].size()) != rule.num_hyper)
      throw std::invalid_argument("group " + std::to_string(g) + ": expected " + std::to_string(rule.num_hyper) +
                                  " hyperparameters");
    rule.validate(group_hyper_[g].data());
  }
  const py::ssize_t n = py::ssize_t(tensors.size());
  if (steps_.ndim() != 1 || steps_.shape(0) != n || !steps_.writeable())
    throw std::invalid_argument("steps must be a writeable int64 array with one entry per param");
  if (scalars_.ndim() != 2 || scalars_.shape(0) != n || scalars_.shape(1) != kMaxScalars || !scalars_.writeable())
    throw std::invalid_argument("scalars must be a writeable float64 array of shape (n, kMaxScalars)");

  for (py::handle item : tensors) {
    auto t = item.cast<py::tuple>();  // (label, group, param, [slot states or None], master or None)
    Tensor tensor;
    tensor.label = t[0].cast<std::string>();
    tensor.group = t[1].cast<int>();
    if (tensor.group < 0 || std::size_t(tensor.group) >= group_hyper_.size())
      throw std::invalid_argument(tensor.label + ": bad group index");
    check_param(t[2], tensor.label, true);
    tensor.param = t[2].cast<py::array>();
    const StoredType type = stored_param_type(tensor.param, tensor.label);
    tensor.dtype = type.compute;
    tensor.storage = type.storage;
    auto slots = t[3].cast<py::list>();
    const unsigned needed = rule.slots_needed(group_hyper_[tensor.group].data());
    for (int j = 0; j < rule.num_slots; ++j) {
      if (j < int(slots.size()) && !slots[j].is_none()) {
        const std::string label = tensor.label + " state '" + rule.slot_names[j] + "'";
        set_slot(tensor, j, slots[j], rule, label);
      } else if (needed & (1u << j)) {
        throw std::invalid_argument(tensor.label + ": missing state '" + rule.slot_names[j] + "'");
      }
    }
    if (t.size() > 4 && !t[4].is_none()) tensor.master = check_master(t[4], tensor.param, tensor.label + " master");
    tensors_.push_back(std::move(tensor));
  }
  for (std::size_t i = 0; i < tensors_.size(); ++i) {
    auto add = [&](const py::array& a, int slot) {
      if (a.nbytes() == 0) return;
      const char* begin = static_cast<const char*>(a.data());
      written_.push_back({begin, begin + a.nbytes(), i, slot});
    };
    add(tensors_[i].param, -1);
    for (int j = 0; j < kMaxSlots; ++j) {
      if (tensors_[i].slots[j]) add(*tensors_[i].slots[j], j);
      if (tensors_[i].absmax[j]) add(*tensors_[i].absmax[j], kMaxSlots + j);
    }
    if (tensors_[i].master) add(*tensors_[i].master, 2 * kMaxSlots);
  }
  std::sort(written_.begin(), written_.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
  for (std::size_t k = 1; k < written_.size(); ++k)
    if (written_[k].begin < written_[k - 1].end)
      throw py::value_error(span_label(written_[k - 1]) + " and " + span_label(written_[k]) + " share memory");
}

std::string Engine::span_label(const Span& s) const {
  const Tensor& t = tensors_[s.tensor];
  if (s.slot < 0) return t.label;
  if (s.slot == 2 * kMaxSlots) return t.label + " master";
  const std::string state = t.label + " state '" + spec_->rule->slot_names[s.slot % kMaxSlots] + "'";
  return s.slot >= kMaxSlots ? state + " absmax" : state;
}

// A state of the rule's slot j: an array (Compute or BFloat16) or, for the rule's int8 slots, an
// 8-bit (codes, absmax) pair quantized with the slot's map.
void Engine::set_slot(Tensor& tensor, int j, py::handle state, const RuleInfo& rule, const std::string& label) {
  if (py::isinstance<py::tuple>(state)) {
    if (!((rule.int8_slots >> j) & 1u))
      throw py::type_error(label + ": " + spec_->name + " cannot keep this state in 8 bits");
    Int8State pair = check_int8_state(state, tensor.param, label);
    tensor.slots[j] = std::move(pair.codes);
    tensor.absmax[j] = std::move(pair.absmax);
    tensor.slot_storage[j] = ((rule.nonnegative_slots >> j) & 1u) ? Storage::Int8Unsigned : Storage::Int8Signed;
    return;
  }
  tensor.slot_storage[j] = check_state(state, tensor.param, label);
  tensor.slots[j] = state.cast<py::array>();
}

// A gradient is only read, but it must not share memory with any array the step writes (its own
// param, another param, any state): the result would depend on the order, i.e. the thread count.
void Engine::check_grad_disjoint(const py::array& grad, std::size_t i) const {
  const py::ssize_t size = grad.nbytes();
  if (size == 0 || written_.empty()) return;
  const char* begin = static_cast<const char*>(grad.data());
  const char* end = begin + size;
  // The spans are disjoint and sorted, so the last one starting before `end` ends last of those.
  auto it = std::lower_bound(written_.begin(), written_.end(), end,
                             [](const Span& s, const char* e) { return s.begin < e; });
  if (it == written_.begin()) return;
  --it;
  if (it->end > begin)
    throw py::value_error(tensors_[i].label + ": gradient shares memory with " +
                          (it->tensor == i && it->slot < 0 ? std::string("its param") : span_label(*it)));
}

py::tuple Engine::step(py::sequence grads, double clip_norm, double clip_value, bool skip_nonfinite) {
  const std::size_t n = tensors_.size();
  if (std::size_t(py::len(grads)) != n)
    throw std::invalid_argument("expected " + std::to_string(n) + " gradients (one per param), got " +
                                std::to_string(py::len(grads)));
  const StepOptions options{clip_norm, clip_value, skip_nonfinite};
  check_step_options(options, "");

  // Check (and convert where needed) every gradient; nothing is written yet.
  // py::object, not py::array: a default-constructed py::array is a new (empty) numpy array.
  std::vector<py::object> held(n);
  StepPipeline pipeline;
  int64_t* steps = steps_.mutable_data();
  double* scalars = scalars_.mutable_data();
  for (std::size_t i = 0; i < n; ++i) {
    Tensor& t = tensors_[i];
    py::handle g = grads[i];
    if (g.is_none()) continue;
    if (!t.param.writeable()) throw py::value_error(t.label + ": array became read-only");
    py::array grad = grad_for(g, t.param, t.label);
    check_grad_disjoint(grad, i);
    TensorArgs a{t.param.mutable_data(), grad.data(), {}, int64_t(t.param.size()), 0,
                 group_hyper_[t.group].data(), scalars + i * kMaxScalars};
    for (int j = 0; j < kMaxSlots; ++j) {
      a.slots[j] = t.slots[j] ? t.slots[j]->mutable_data() : nullptr;
      a.slot_storage[j] = t.slot_storage[j];
      a.slot_absmax[j] = t.absmax[j] ? static_cast<float*>(t.absmax[j]->mutable_data()) : nullptr;
    }
    a.master = t.master ? static_cast<float*>(t.master->mutable_data()) : nullptr;
    a.stochastic_rounding = stochastic_rounding_;
    a.rounding_seed = uint64_t(i);
    a.param_storage = t.storage;
    a.grad_storage = storage_of(grad);
    pipeline.add(i, t.dtype, a, steps + i);
    held[i] = std::move(grad);
  }
  StepOutcome outcome;
  {
    py::gil_scoped_release release;
    outcome = pipeline.run(*spec_->rule, options);
  }
  return py::make_tuple(outcome.applied, outcome.grad_norm, py::cast(outcome.nonfinite));
}

bool Engine::set_hyper(std::size_t group, std::vector<double> hyper) {
  const RuleInfo& rule = *spec_->rule;
  if (group >= group_hyper_.size()) throw std::invalid_argument("no param group " + std::to_string(group));
  if (int(hyper.size()) != rule.num_hyper)
    throw std::invalid_argument("expected " + std::to_string(rule.num_hyper) + " hyperparameters");
  rule.validate(hyper.data());
  const unsigned needed = rule.slots_needed(hyper.data());
  for (const Tensor& t : tensors_) {
    if (t.group != int(group)) continue;
    for (int j = 0; j < rule.num_slots; ++j)
      if ((needed & (1u << j)) && !t.slots[j]) return false;
  }
  group_hyper_[group] = std::move(hyper);
  return true;
}

// The rule of a one-off step (apply, apply_rows), its hyperparameters and step count checked.
static const RuleInfo& checked_rule(const OptimizerSpec& spec, const std::string& name,
                                    const std::vector<double>& hyper, int64_t step) {
  const RuleInfo& rule = *spec.rule;
  if (int(hyper.size()) != rule.num_hyper)
    throw std::invalid_argument(name + ": expected " + std::to_string(rule.num_hyper) + " hyperparameters");
  rule.validate(hyper.data());
  if (step < 1) throw std::invalid_argument("step must be >= 1 (the count of this step), got " + std::to_string(step));
  return rule;
}

void apply(const std::string& name, py::handle param_obj, py::handle grad_obj, py::list slot_objs, int64_t step,
           std::vector<double> hyper, py::array_t<double> scalars, py::object master_obj, int64_t rounding_seed) {
  const OptimizerSpec& spec = find_optimizer(name);
  const RuleInfo& rule = checked_rule(spec, name, hyper, step);
  check_param(param_obj, "param", true);
  auto param = py::reinterpret_borrow<py::array>(param_obj);
  const StoredType type = stored_param_type(param, "param");
  const DType dtype = type.compute;
  py::array grad = grad_for(grad_obj, param, "grad");

  const unsigned needed = rule.slots_needed(hyper.data());
  int expected = 0;
  for (int j = 0; j < rule.num_slots; ++j) expected += (needed >> j) & 1u;
  if (int(slot_objs.size()) != expected) {
    std::string names;
    for (int j = 0; j < rule.num_slots; ++j)
      if (needed & (1u << j)) names += (names.empty() ? "" : ", ") + std::string(rule.slot_names[j]);
    throw std::invalid_argument(name + " with these hyperparameters takes " + std::to_string(expected) +
                                " state arrays (" + names + "), got " + std::to_string(slot_objs.size()));
  }
  TensorArgs a{param.mutable_data(), grad.data(), {}, int64_t(param.size()), step, hyper.data(), nullptr};
  a.param_storage = type.storage;
  a.grad_storage = storage_of(grad);
  std::vector<py::array> held;
  int k = 0;
  for (int j = 0; j < rule.num_slots; ++j) {
    if (!(needed & (1u << j))) continue;
    const std::string label = std::string("state '") + rule.slot_names[j] + "'";
    py::handle state = slot_objs[k++];
    if (py::isinstance<py::tuple>(state)) {
      if (!((rule.int8_slots >> j) & 1u)) throw py::type_error(label + ": " + name + " cannot keep this state in 8 bits");
      Int8State pair = check_int8_state(state, param, label);
      a.slot_storage[j] = ((rule.nonnegative_slots >> j) & 1u) ? Storage::Int8Unsigned : Storage::Int8Signed;
      held.push_back(pair.codes);
      a.slots[j] = pair.codes.mutable_data();
      held.push_back(pair.absmax);
      a.slot_absmax[j] = static_cast<float*>(pair.absmax.mutable_data());
    } else {
      a.slot_storage[j] = check_state(state, param, label);
      held.push_back(state.cast<py::array>());
      a.slots[j] = held.back().mutable_data();
    }
  }
  if (!master_obj.is_none()) {
    held.push_back(check_master(master_obj, param, "master"));
    a.master = static_cast<float*>(held.back().mutable_data());
  }
  a.stochastic_rounding = rounding_seed >= 0;
  a.rounding_seed = uint64_t(rounding_seed);
  // A handful of arrays: pairwise. (check_state and grad_for have checked each against the param.)
  for (std::size_t x = 0; x < held.size(); ++x) {
    if (overlaps(grad, held[x])) throw py::value_error("grad shares memory with state array " + std::to_string(x));
    for (std::size_t y = x + 1; y < held.size(); ++y)
      if (overlaps(held[x], held[y]))
        throw py::value_error("state arrays " + std::to_string(x) + " and " + std::to_string(y) + " share memory");
  }
  if (scalars.ndim() != 1 || scalars.shape(0) != kMaxScalars || !scalars.writeable())
    throw std::invalid_argument("scalars must be a writeable float64 array of length " + std::to_string(kMaxScalars));
  a.scalars = scalars.mutable_data();
  if (a.size == 0) return;
  py::gil_scoped_release release;
  run_kernel(rule, dtype, &a, 1);
}

void apply_rows(const std::string& name, py::handle param_obj, py::handle indices_obj, py::handle rows_obj,
                py::list slot_objs, int64_t step, std::vector<double> hyper, py::array_t<double> scalars) {
  const OptimizerSpec& spec = find_optimizer(name);
  const RuleInfo& rule = checked_rule(spec, name, hyper, step);
  check_param(param_obj, "param");  // float32/float64, C-contiguous, writeable
  auto param = py::reinterpret_borrow<py::array>(param_obj);
  if (param.ndim() != 2)
    throw py::value_error("param: row-sparse steps need a 2-D param, got " + std::to_string(param.ndim()) + "-D");
  const DType dtype = param_dtype(param, "param");
  const int64_t table_rows = param.shape(0), cols = param.shape(1);

  if (!py::isinstance<py::array>(indices_obj)) throw py::type_error("indices: expected a numpy.ndarray");
  auto indices = py::reinterpret_borrow<py::array>(indices_obj);
  if (!indices.dtype().equal(py::dtype::of<int64_t>()))
    throw py::type_error("indices: dtype must be int64, got " + std::string(py::str(indices.dtype())));
  if (indices.ndim() != 1 || !(indices.flags() & py::array::c_style))
    throw py::value_error("indices: must be a 1-D C-contiguous array");
  const int64_t count = indices.shape(0);
  // A checked copy: the kernels run without the GIL, and no other thread may move an index out of
  // range (nor may the step itself, through a state array aliasing the indices) after the check.
  const std::vector<int64_t> index(static_cast<const int64_t*>(indices.data()),
                                   static_cast<const int64_t*>(indices.data()) + count);
  for (int64_t k = 0; k < count; ++k) {
    if (index[k] < 0 || index[k] >= table_rows)
      throw py::value_error("indices: row " + std::to_string(index[k]) + " is out of range for a param of " +
                            std::to_string(table_rows) + " rows");
    if (k > 0 && index[k] <= index[k - 1])
      throw py::value_error("indices: must be sorted and unique (" + std::to_string(index[k - 1]) + " then " +
                            std::to_string(index[k]) + ")");
  }

  if (!py::isinstance<py::array>(rows_obj)) throw py::type_error("rows: expected a numpy.ndarray");
  auto rows = py::reinterpret_borrow<py::array>(rows_obj);
  if (!rows.dtype().equal(param.dtype()))
    throw py::type_error("rows: dtype " + std::string(py::str(rows.dtype())) + " does not match the param's " +
                         std::string(py::str(param.dtype())));
  if (rows.ndim() != 2 || rows.shape(0) != count || rows.shape(1) != cols || !(rows.flags() & py::array::c_style))
    throw py::value_error("rows: must be C-contiguous of shape (" + std::to_string(count) + ", " +
                          std::to_string(cols) + "): one row of the param's columns per index");

  const unsigned needed = rule.slots_needed(hyper.data());
  int expected = 0;
  for (int j = 0; j < rule.num_slots; ++j) expected += (needed >> j) & 1u;
  if (int(slot_objs.size()) != expected)
    throw std::invalid_argument(name + " with these hyperparameters takes " + std::to_string(expected) +
                                " state arrays, got " + std::to_string(slot_objs.size()));
  TensorArgs a{param.mutable_data(), rows.data(), {}, int64_t(param.size()), step, hyper.data(), nullptr};
  std::vector<py::array> written{param};
  int k = 0;
  for (int j = 0; j < rule.num_slots; ++j) {
    if (!(needed & (1u << j))) continue;
    const std::string label = std::string("state '") + rule.slot_names[j] + "'";
    py::handle state = slot_objs[k++];
    if (!py::isinstance<py::array>(state))
      throw py::type_error(label + ": row-sparse steps take float32/float64 state arrays");
    if (check_state(state, param, label) != Storage::Compute)
      throw py::type_error(label + ": row-sparse steps take states of the param's dtype (no bfloat16)");
    written.push_back(py::reinterpret_borrow<py::array>(state));
    a.slots[j] = written.back().mutable_data();
  }
  // The kernels read the rows while writing the param and the states: they may not alias.
  for (std::size_t x = 0; x < written.size(); ++x) {
    if (overlaps(rows, written[x])) throw py::value_error("rows share memory with an array the step writes");
    for (std::size_t y = x + 1; y < written.size(); ++y)
      if (overlaps(written[x], written[y]))
        throw py::value_error("state arrays " + std::to_string(x - 1) + " and " + std::to_string(y - 1) +
                              " share memory");
  }
  if (scalars.ndim() != 1 || scalars.shape(0) != kMaxScalars || !scalars.writeable())
    throw std::invalid_argument("scalars must be a writeable float64 array of length " + std::to_string(kMaxScalars));
  a.scalars = scalars.mutable_data();
  py::gil_scoped_release release;
  run_rows_kernel(rule, dtype, a, index.data(), count, cols);
}

}  // namespace pyopt::python
