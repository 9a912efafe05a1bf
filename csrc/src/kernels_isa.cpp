// Compiled once per ISA (see cmake/pyopt_isa.cmake), each time with its own -m flags and
// PYOPT_ISA_TAG, so every rule, map and the driver exist once per ISA in their own namespace.
// The rule table lists the rules of records.def in its order (RuleInfo::index).
#include "pyopt/driver/adafactor.hpp"
#include "pyopt/driver/driver.hpp"
#include "pyopt/driver/map.hpp"
#include "pyopt/driver/quant8.hpp"
#include "pyopt/rules/all.hpp"

PYOPT_KERNEL_NAMESPACE_BEGIN

#define PYOPT_RULE(Rule, ...)                                                       \
  {{&driver::run<rules::Rule, float>, &driver::run<rules::Rule, double>},            \
   {&driver::run_rows<rules::Rule, float>, &driver::run_rows<rules::Rule, double>}},
#define PYOPT_PYTHON_ONLY(...)
static const RuleKernels kernel_table[] = {
#include "pyopt/records.def"
};
#undef PYOPT_RULE
#undef PYOPT_PYTHON_ONLY

#define PYOPT_MAP_ENTRY(Map) {&driver::run_map<maps::Map, float>, &driver::run_map<maps::Map, double>},
extern const IsaKernels isa_kernels;
const IsaKernels isa_kernels = {kernel_table,
                                {PYOPT_FOR_EACH_MAP(PYOPT_MAP_ENTRY)},
                                {&driver::adafactor<float>, &driver::adafactor<double>},
                                &driver::quant8::quantize,
                                &driver::quant8::dequantize};
#undef PYOPT_MAP_ENTRY

PYOPT_KERNEL_NAMESPACE_END
