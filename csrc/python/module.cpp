// pyopt._core: a thin layer over the C++ library. The Python API lives in pyopt/.
#include <cmath>

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "arrays.hpp"
#include "engine.hpp"
#include "probe.hpp"
#include "utilities.hpp"
#include "pyopt/registry.hpp"
#include "pyopt/version.hpp"

namespace py = pybind11;
using namespace pyopt;

namespace {

py::dict describe(const OptimizerSpec& s) {
  const RuleInfo& r = *s.rule;
  py::list hyper;
  for (int i = 0; i < r.num_hyper; ++i)
    hyper.append(py::make_tuple(r.hyper[i].name, s.defaults[i], r.hyper[i].kind == HyperKind::Bool ? "bool" : "real"));
  py::list slots, scalars;
  for (int j = 0; j < r.num_slots; ++j) slots.append(r.slot_names[j]);
  for (int j = 0; j < r.num_scalars; ++j) scalars.append(py::make_tuple(r.scalar_names[j], r.initial_scalar(j)));
  py::dict d;
  d["name"] = s.name;
  d["rule"] = r.name;
  d["hyper"] = hyper;
  d["fixed"] = s.fixed;
  d["slots"] = slots;
  d["scalars"] = scalars;
  d["summary"] = s.summary;
  d["reference"] = s.reference;
  return d;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "pyopt's C++ core: SIMD optimizer kernels with runtime ISA dispatch";
  m.attr("__version__") = PYOPT_VERSION;
  m.attr("MAX_SCALARS") = kMaxScalars;

  m.def("optimizers", [] {
    py::dict out;
    for (const OptimizerSpec& s : optimizers()) out[py::str(s.name)] = describe(s);
    return out;
  }, "Every optimizer: its rule, hyperparameters (name, default, kind), pinned names, state slots.");
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

  m.def("check_param", &python::check_param, py::arg("param"), py::arg("label"),
        "Raise TypeError/ValueError unless `param` is a writeable, C-contiguous float32/float64 ndarray.");
  m.def("isa", &isa, "The instruction set the kernels run on.");
  m.def("isa_available", &isa_available, "Instruction sets compiled in and supported by this CPU, best last.");
  m.def("isa_compiled", &isa_compiled, "Instruction sets compiled in.");
  m.def("set_isa", &set_isa, py::arg("name"), "Use the best instruction set up to `name`.");
  m.def("num_threads", &num_threads);
  m.def("set_num_threads", &set_num_threads, py::arg("n"));
  m.def("compiler", &compiler);

  py::class_<python::Engine>(m, "Engine")
      .def(py::init<const std::string&, std::vector<std::vector<double>>, py::list, py::array_t<int64_t>,
                    py::array_t<double>>(),
           py::arg("name"), py::arg("group_hyper"), py::arg("tensors"), py::arg("steps"), py::arg("scalars"))
      .def("step", &python::Engine::step, py::arg("grads"), py::arg("clip_norm") = -1.0,
           py::arg("clip_value") = INFINITY, py::arg("skip_nonfinite") = false)
      .def("set_hyper", &python::Engine::set_hyper, py::arg("group"), py::arg("hyper"));
  m.def("apply", &python::apply, py::arg("name"), py::arg("param"), py::arg("grad"), py::arg("slots"),
        py::arg("step"), py::arg("hyper"), py::arg("scalars"));
  python::register_utilities(m);
  python::register_probe(m);
}
