#pragma once
// Registration-time checks of a record against the rule it names (run once, when the catalogue is
// first used; a failure is a programming error: std::logic_error naming the record). Besides
// check_record's checks of the record alone:
//   - the record lists exactly Rule::kNumHyper hyperparameters;
//   - the policy hyperparameters the driver reads by the rule's enum (maximize, weight_decay,
//     decoupled_weight_decay, weight_decouple, fixed_decay) sit at that enum index in the record,
//     and a record has none of them that the rule's enum lacks.
#include <stdexcept>
#include <string>
#include <type_traits>

#include "pyopt/record.hpp"
#include "pyopt/registry.hpp"

namespace pyopt {
namespace record_check {

#define PYOPT_DETECT_ENUMERATOR(name)                                                      \
  template <class Rule, class = void>                                                      \
  struct has_##name : std::false_type {};                                                  \
  template <class Rule>                                                                    \
  struct has_##name<Rule, std::void_t<decltype(Rule::name)>> : std::true_type {};          \
  template <class Rule>                                                                    \
  constexpr int index_of_##name() {                                                        \
    if constexpr (has_##name<Rule>::value) return static_cast<int>(Rule::name);            \
    else return -1;                                                                        \
  }
PYOPT_DETECT_ENUMERATOR(maximize)
PYOPT_DETECT_ENUMERATOR(weight_decay)
PYOPT_DETECT_ENUMERATOR(decoupled_weight_decay)
PYOPT_DETECT_ENUMERATOR(weight_decouple)
PYOPT_DETECT_ENUMERATOR(fixed_decay)
#undef PYOPT_DETECT_ENUMERATOR

inline int record_index(const OptimizerRecord& r, const char* name) {
  int i = 0;
  for (const HyperSpec& h : r.hyper) {
    if (std::string(h.name) == name) return i;
    ++i;
  }
  return -1;
}

inline void check_policy(const OptimizerRecord& r, const char* policy, int enum_index) {
  const int at = record_index(r, policy);
  if (at == enum_index) return;
  throw std::logic_error(std::string("pyopt: record '") + r.name + "': policy hyperparameter '" + policy + "' is " +
                         (at < 0 ? "missing" : "#" + std::to_string(at)) + " in the record but " +
                         (enum_index < 0 ? "absent" : "#" + std::to_string(enum_index)) + " in the rule's enum Hyper");
}

template <class Rule>
void check_rule_record(const OptimizerRecord& r) {
  check_record(r);
  const std::string who = std::string("pyopt: record '") + r.name + "'";
  if (int(r.hyper.size()) != int(Rule::kNumHyper))
    throw std::logic_error(who + " lists " + std::to_string(r.hyper.size()) + " hyperparameters, its rule has " +
                           std::to_string(int(Rule::kNumHyper)));
  check_policy(r, "maximize", index_of_maximize<Rule>());
  check_policy(r, "weight_decay", index_of_weight_decay<Rule>());
  check_policy(r, "decoupled_weight_decay", index_of_decoupled_weight_decay<Rule>());
  check_policy(r, "weight_decouple", index_of_weight_decouple<Rule>());
  check_policy(r, "fixed_decay", index_of_fixed_decay<Rule>());
}

}  // namespace record_check
}  // namespace pyopt
