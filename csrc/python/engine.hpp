#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "pyopt/registry.hpp"

namespace pyopt::python {

namespace py = pybind11;

class Engine {
 public:
  // tensors: a list of (label, group index, param array, [state per slot], master or None). A
  // state is None (slot unused), an array (the param's compute dtype, or bfloat16 for float32
  // steps) or an 8-bit pair (codes, absmax) for the rule's int8 slots; master is the float32 copy
  // of a 16-bit param. steps (int64, n) and scalars (float64, n × kMaxScalars) are the Python
  // layer's arrays, updated in place. stochastic_rounding: 16-bit writes without a master round
  // stochastically, seeded by the tensor's position in `tensors`.
  Engine(const std::string& name, std::vector<std::vector<double>> group_hyper, py::list tensors,
         py::array_t<int64_t> steps, py::array_t<double> scalars, bool stochastic_rounding = false);
  // One step; grads: one per param in order, None skips a param. clip_value (>= 0, inf: off)
  // clamps every gradient element; clip_norm (>= 0, negative: off) then scales all gradients so
  // their global L2 norm is at most clip_norm, as torch.nn.utils.clip_grad_norm_ does. The norm
  // is computed when clip_norm >= 0 or skip_nonfinite; with skip_nonfinite, a NaN/Inf in any
  // gradient skips the step, touching nothing. Returns (applied, total norm or NaN if not
  // computed, indices of the params whose gradient is not finite).
  py::tuple step(py::sequence grads, double clip_norm = -1.0, double clip_value = INFINITY,
                 bool skip_nonfinite = false);
  // New hyperparameters for a group (validated). Returns false, changing nothing, when they need
  // a state slot its tensors do not have (e.g. amsgrad switched on): the caller rebuilds then.
  bool set_hyper(std::size_t group, std::vector<double> hyper);

 private:
  struct Tensor {
    std::string label;
    int group = 0;
    py::array param;
    DType dtype = DType::Float32;  // what the kernels compute in
    Storage storage = Storage::Compute;
    std::optional<py::array> slots[kMaxSlots];  // absent when these hyperparameters do not use the slot
    Storage slot_storage[kMaxSlots] = {};
    std::optional<py::array> absmax[kMaxSlots];  // 8-bit slots
    std::optional<py::array> master;
  };
  // The memory the step writes (params and state arrays): disjoint byte ranges sorted by start,
  // so that each gradient is checked against all of them by one binary search.
  struct Span {
    const char* begin;
    const char* end;
    std::size_t tensor;
    int slot;  // -1: the param itself; kMaxSlots + j: absmax of slot j; 2 kMaxSlots: the master
  };
  std::string span_label(const Span& s) const;
  void set_slot(Tensor& tensor, int j, py::handle state, const RuleInfo& rule, const std::string& label);
  void check_grad_disjoint(const py::array& grad, std::size_t i) const;

  const OptimizerSpec* spec_;
  std::vector<std::vector<double>> group_hyper_;
  std::vector<Tensor> tensors_;
  py::array_t<int64_t> steps_;
  py::array_t<double> scalars_;
  std::vector<Span> written_;
  bool stochastic_rounding_ = false;
};

// The stateless layer under pyopt.functional: one param, its state arrays, this step's t.
// slots: arrays, or (codes, absmax) pairs for 8-bit slots, as Engine takes them; master: as Engine;
// rounding_seed >= 0 turns stochastic rounding on with that seed.
void apply(const std::string& name, py::handle param, py::handle grad, py::list slots, int64_t step,
           std::vector<double> hyper, py::array_t<double> scalars, py::object master = py::none(),
           int64_t rounding_seed = -1);

// The row-sparse step under pyopt.RowSparse (pyopt/sparse.py): rows[k] is the gradient of row
// indices[k] of the 2-D float32/float64 param; indices are int64, sorted and unique; slots are
// the whole state arrays (the param's dtype and shape), as apply takes them. Only those rows of
// the param and the states change, in place. Everything is checked before anything is written.
void apply_rows(const std::string& name, py::handle param, py::handle indices, py::handle rows, py::list slots,
                int64_t step, std::vector<double> hyper, py::array_t<double> scalars);

}  // namespace pyopt::python
