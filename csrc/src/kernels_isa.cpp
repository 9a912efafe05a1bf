// Compiled once per ISA (see cmake/pyopt_isa.cmake), each time with its own -m flags and
// PYOPT_ISA_TAG, so every rule and the driver exist once per ISA in their own namespace.
// The table lists the rules of records.def in its order (RuleInfo::index).
#include "pyopt/driver/driver.hpp"
#include "pyopt/rules/all.hpp"

PYOPT_KERNEL_NAMESPACE_BEGIN

#define PYOPT_RULE(Rule, ...) {{&driver::run<rules::Rule, float>, &driver::run<rules::Rule, double>}},
#define PYOPT_INTERNAL(Rule, ...) {{&driver::run<rules::Rule, float>, &driver::run<rules::Rule, double>}},
#define PYOPT_PYTHON_ONLY(...)
extern const RuleKernels kernel_table[];
const RuleKernels kernel_table[] = {
#include "pyopt/records.def"
};
#undef PYOPT_RULE
#undef PYOPT_INTERNAL
#undef PYOPT_PYTHON_ONLY

PYOPT_KERNEL_NAMESPACE_END
