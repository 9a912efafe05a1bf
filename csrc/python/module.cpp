// pyopt._core: a thin layer over the C++ library. The Python API lives in pyopt/.
#include <algorithm>
#include <cmath>

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "arrays.hpp"
#include "capi.hpp"
#include "engine.hpp"
#include "probe.hpp"
#include "quant8.hpp"
#include "utilities.hpp"
#include "pyopt/registry.hpp"
#include "pyopt/version.hpp"

namespace py = pybind11;
using namespace pyopt;

namespace {

const char* kind_name(HyperKind k) {
  switch (k) {
    case HyperKind::Bool: return "bool";
    case HyperKind::Integer: return "int";
    case HyperKind::Real: break;
  }
  return "real";
}

const char* range_name(Range r) {
  switch (r) {
    case Range::Any: return "any";
    case Range::Number: return "number";
    case Range::Finite: return "finite";
    case Range::NonNegative: return "nonnegative";
    case Range::NonNegativeFinite: return "nonnegative_finite";
    case Range::Positive: return "positive";
    case Range::GreaterThanOne: return "greater_than_one";
    case Range::UnitOpen: return "(0,1)";
    case Range::UnitOpenRight: return "[0,1)";
    case Range::UnitClosed: return "[0,1]";
    case Range::UnitOpenLeft: return "(0,1]";
  }
  return "any";
}

const char* search_name(Search s) {
  switch (s) {
    case Search::Log: return "log";
    case Search::OneMinusLog: return "one_minus_log";
    case Search::Flag: return "flag";
    case Search::WeightDecay: return "weight_decay";
    case Search::Fixed: break;
  }
  return "fixed";
}

py::object or_none(const std::string& s) { return s.empty() ? py::object(py::none()) : py::object(py::str(s)); }

py::dict describe(const OptimizerSpec& s) {
  py::list hyper;
  for (std::size_t i = 0; i < s.record_hyper; ++i) {  // the record's (not Muon's C++ adjust_lr_fn)
    const HyperSpec& h = s.hyper[i];
    py::dict d;
    d["name"] = h.name;
    d["default"] = h.default_value;
    d["kind"] = kind_name(h.kind);
    d["range"] = range_name(h.range);
    d["search"] = search_name(h.search);
    d["low"] = h.low;
    d["high"] = h.high;
    d["keyword_only"] = h.keyword_only;
    d["doc"] = h.doc;
    d["range_note"] = h.range_note;
    hyper.append(d);
  }
  py::list slots, scalars, int8_slots, nonnegative_slots;
  // The Python-written optimizers C++ runs too (adafactor, muon) show as Python's: rule None.
  const RuleInfo* rule = s.rule && s.rule->engine == Engine::Rule ? s.rule : nullptr;
  if (const RuleInfo* r = rule) {
    for (int j = 0; j < r->num_slots; ++j) {
      slots.append(r->slot_names[j]);
      if (r->int8_slots & (1u << j)) int8_slots.append(r->slot_names[j]);
      if (r->nonnegative_slots & (1u << j)) nonnegative_slots.append(r->slot_names[j]);
    }
    for (int j = 0; j < r->num_scalars; ++j) scalars.append(py::make_tuple(r->scalar_names[j], r->initial_scalar(j)));
  }
  py::dict d;
  d["name"] = s.name;
  d["rule"] = rule ? py::object(py::str(rule->name)) : py::object(py::none());
  d["cxx"] = s.rule != nullptr;  // pyopt::Optimizer (make_optimizer) runs it
  d["alias_of"] = or_none(s.alias_of);
  d["class_name"] = s.class_name;
  d["summary"] = s.summary;
  d["reference"] = s.reference;
  d["paper"] = s.paper;
  d["paper_url"] = s.paper_url;
  d["lr_range"] = py::make_tuple(s.lr_range.low, s.lr_range.high);
  d["demo_lr"] = s.demo_lr;
  d["hyper"] = hyper;
  d["fixed"] = s.fixed;
  d["slots"] = slots;
  d["scalars"] = scalars;
  d["int8_slots"] = int8_slots;                // may be 8-bit states (state_dtype="int8")
  d["nonnegative_slots"] = nonnegative_slots;  // of those, quantized with the unsigned map
  // What state_dtype may be: rules with per-tensor sums (their reduction pass stores the states the
  // update pass reads) and the optimizers written in Python keep float32 states.
  py::list state_dtypes;
  state_dtypes.append("float32");
  if (rule && rule->num_reductions == 0) state_dtypes.append("bfloat16");
  if (rule && rule->int8_slots) state_dtypes.append("int8");
  d["state_dtypes"] = state_dtypes;
  // Whether a step reads whole tensors (norms, sums, matrix products), not each element alone: such
  // an optimizer cannot step flat partitions of several params (DeepSpeed ZeRO, pyopt.torch).
  d["per_tensor"] = !rule || rule->num_reductions > 0;
  return d;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "pyopt's C++ core: SIMD optimizer kernels with runtime ISA dispatch";
  m.attr("__version__") = PYOPT_VERSION;
  m.attr("MAX_SCALARS") = kMaxScalars;

  m.def("optimizers", [] {
    py::dict out;
    // The rules, then the Python-written ones (some of which C++ runs too), in the records' order.
    std::vector<const OptimizerSpec*> python_written;
    for (const OptimizerSpec& s : optimizers()) {
      if (s.rule->engine == Engine::Rule) out[py::str(s.name)] = describe(s);
      else python_written.push_back(&s);
    }
    for (const OptimizerSpec& s : python_only_optimizers()) python_written.push_back(&s);
    std::stable_sort(python_written.begin(), python_written.end(),
                     [](const OptimizerSpec* a, const OptimizerSpec* b) { return a->record < b->record; });
    for (const OptimizerSpec* s : python_written) out[py::str(s->name)] = describe(*s);
    return out;
  }, "Every optimizer's record: rule (None: written in Python), cxx (pyopt::Optimizer runs it), alias_of, class_name, summary, reference, "
     "paper, paper_url, lr_range, demo_lr, hyper (dicts: name, default, kind, range, search, low, high, "
     "keyword_only, doc, range_note), fixed, slots, scalars, int8_slots, nonnegative_slots, state_dtypes, "
     "per_tensor.");
  m.def("hyper_tuples", [] {
    py::dict out;
    for (const auto& [name, members] : hyper_tuples()) out[py::str(name)] = members;
    return out;
  }, "Flat hyperparameters Python shows as one tuple: tuple name -> its members in order.");
  m.def("validate", [](const std::string& name, std::vector<double> hyper) {
    const RuleInfo& r = *find_optimizer(name).rule;
    if (int(hyper.size()) != r.num_hyper) throw std::invalid_argument("wrong number of hyperparameters");
    r.validate(hyper.data());
  }, "Raise ValueError if these hyperparameters (in the rule's order) are out of range.");
  m.def("slots_needed", [](const std::string& name, std::vector<double> hyper) {
    const RuleInfo& r = *find_optimizer(name).rule;
    if (int(hyper.size()) != r.num_hyper) throw std::invalid_argument("wrong number of hyperparameters");
    std::vector<std::pair<std::string, double>> out;
    const unsigned mask = r.slots_needed(hyper.data());
    for (int j = 0; j < r.num_slots; ++j)
      if (mask & (1u << j)) out.emplace_back(r.slot_names[j], r.initial_state(j, hyper.data()));
    return out;
  }, "The state slots these hyperparameters need, as (name, initial value).");

  m.def("check_param", &python::check_param, py::arg("param"), py::arg("label"), py::arg("allow_16bit") = false,
        "Raise TypeError/ValueError unless `param` is a writeable, C-contiguous float32/float64 ndarray "
        "(with allow_16bit: also float16 or ml_dtypes.bfloat16).");
  m.def("isa", &isa, "The instruction set the kernels run on.");
  m.def("isa_available", &isa_available, "Instruction sets compiled in and supported by this CPU, best last.");
  m.def("isa_compiled", &isa_compiled, "Instruction sets compiled in.");
  m.def("have_blas", &have_blas, "Whether this build has a BLAS, so that C++ (pyopt::Optimizer) runs Muon.");
  m.def("set_isa", &set_isa, py::arg("name"), "Use the best instruction set up to `name`.");
  m.def("num_threads", &num_threads);
  m.def("set_num_threads", &set_num_threads, py::arg("n"));
  m.def("compiler", &compiler);

  py::class_<python::Engine>(m, "Engine")
      .def(py::init<const std::string&, std::vector<std::vector<double>>, py::list, py::array_t<int64_t>,
                    py::array_t<double>, bool>(),
           py::arg("name"), py::arg("group_hyper"), py::arg("tensors"), py::arg("steps"), py::arg("scalars"),
           py::arg("stochastic_rounding") = false)
      .def("step", &python::Engine::step, py::arg("grads"), py::arg("clip_norm") = -1.0,
           py::arg("clip_value") = INFINITY, py::arg("skip_nonfinite") = false)
      .def("set_hyper", &python::Engine::set_hyper, py::arg("group"), py::arg("hyper"));
  m.def("apply", &python::apply, py::arg("name"), py::arg("param"), py::arg("grad"), py::arg("slots"),
        py::arg("step"), py::arg("hyper"), py::arg("scalars"), py::arg("master") = py::none(),
        py::arg("rounding_seed") = -1);
  m.def("apply_rows", &python::apply_rows, py::arg("name"), py::arg("param"), py::arg("indices"), py::arg("rows"),
        py::arg("slots"), py::arg("step"), py::arg("hyper"), py::arg("scalars"),
        "A row-sparse step in place: rows[k] is the gradient of param row indices[k] (int64, sorted, unique); "
        "slots are the whole state arrays. Threads over rows, the GIL released.");
  python::register_utilities(m);
  python::register_probe(m);
  python::register_quant8(m);
  python::register_capi(m);
}
