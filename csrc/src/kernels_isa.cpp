// Compiled once per ISA (see cmake/pyopt_isa.cmake), each time with its own -m flags and
// PYOPT_ISA_TAG, so every rule and the driver exist once per ISA in their own namespace.
#include "pyopt/driver/driver.hpp"
#include "pyopt/rules/all.hpp"

PYOPT_KERNEL_NAMESPACE_BEGIN

#define PYOPT_KERNEL_ENTRY(Rule) {{&driver::run<rules::Rule, float>, &driver::run<rules::Rule, double>}},
extern const RuleKernels kernel_table[];
const RuleKernels kernel_table[] = {PYOPT_FOR_EACH_RULE(PYOPT_KERNEL_ENTRY)};
#undef PYOPT_KERNEL_ENTRY

PYOPT_KERNEL_NAMESPACE_END
