// The records (pyopt/records.def): the registration checks that guard them, the range messages
// validation derives from them, and what the catalogue exposes.
#include <pyopt/pyopt.hpp>
#include <pyopt/record_check.hpp>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "harness.hpp"

namespace {

using namespace pyopt;
using namespace pyopt::record_terms;

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// A toy rule: only what the checks read (its enum Hyper).
struct Toy {
  enum Hyper { lr, weight_decay, maximize, kNumHyper };
};

// A record named toy with these hyperparameters and aliases.
OptimizerRecord toy_record(std::initializer_list<HyperSpec> hyper, std::initializer_list<AliasRecord> aliases = {}) {
  return OptimizerRecord{"toy", "Toy", "a toy", "none", "", "", kDefaultLrRange, 1e-2, hyper, aliases};
}

template <class F>
std::string logic_error_of(F&& f) {
  try {
    f();
  } catch (const std::logic_error& e) {
    if (dynamic_cast<const std::invalid_argument*>(&e)) return std::string("invalid_argument: ") + e.what();
    return e.what();
  }
  return "";
}

}  // namespace

PYOPT_TEST(record_checks_accept_a_valid_record) {
  const std::string msg = logic_error_of([] {
    record_check::check_rule_record<Toy>(toy_record({{"lr", 1e-3, Real, NonNegative, Log},
                                                     {"weight_decay", 0.0, Real, NonNegative, WeightDecay},
                                                     {"maximize", 0.0, Bool, Any, Fixed, 0, 0, KeywordOnly}}));
  });
  CHECK_MSG(msg.empty(), msg);
}

PYOPT_TEST(record_checks_hyper_count_against_the_rule) {
  const std::string msg = logic_error_of([] {
    record_check::check_rule_record<Toy>(toy_record({{"lr", 1e-3, Real, NonNegative, Log},
                                                     {"weight_decay", 0.0, Real, NonNegative, WeightDecay}}));
  });
  CHECK_MSG(contains(msg, "'toy' lists 2 hyperparameters, its rule has 3"), msg);
}

PYOPT_TEST(record_checks_policy_hyperparameters_sit_at_the_enum_index) {
  std::string msg = logic_error_of([] {
    record_check::check_rule_record<Toy>(toy_record({{"lr", 1e-3, Real, NonNegative, Log},
                                                     {"maximize", 0.0, Bool, Any, Fixed},
                                                     {"weight_decay", 0.0, Real, NonNegative, WeightDecay}}));
  });
  CHECK_MSG(contains(msg, "'maximize' is #1 in the record but #2 in the rule's enum Hyper"), msg);
  // A policy name in the record that the rule's enum does not have.
  msg = logic_error_of([] {
    record_check::check_rule_record<Toy>(toy_record({{"lr", 1e-3, Real, NonNegative, Log},
                                                     {"weight_decay", 0.0, Real, NonNegative, WeightDecay},
                                                     {"fixed_decay", 0.0, Bool, Any, Fixed}}));
  });
  CHECK_MSG(contains(msg, "'maximize' is missing in the record but #2"), msg);
}

PYOPT_TEST(record_checks_names_defaults_and_aliases) {
  std::string msg = logic_error_of([] {
    check_record(toy_record({{"lr", 1e-3, Real, NonNegative, Log}, {"lr", 1e-3, Real, NonNegative, Log}}));
  });
  CHECK_MSG(contains(msg, "lists 'lr' twice"), msg);
  msg = logic_error_of([] { check_record(toy_record({{"lr", -1.0, Real, NonNegative, Log}})); });
  CHECK_MSG(contains(msg, "default of 'toy' is out of range: invalid lr: -1 (must be >= 0)"), msg);
  msg = logic_error_of([] { check_record(toy_record({{"maximize", 2.0, Bool, Any, Fixed}})); });
  CHECK_MSG(contains(msg, "flag 'maximize' defaults to 2"), msg);
  // Searched around a default that gives no range (1 - 0 is no momentum-like gap).
  msg = logic_error_of([] { check_record(toy_record({{"momentum", 0.0, Real, NonNegative, OneMinusLog}})); });
  CHECK_MSG(contains(msg, "searches 'momentum' around its default"), msg);
  // An alias may only name hyperparameters the record has, and its defaults must be in range.
  msg = logic_error_of([] {
    check_record(toy_record({{"lr", 1e-3, Real, NonNegative, Log}},
                            {{"toy2", "Toy2", "", "", "", "", kDefaultLrRange, 1e-2, {{"momentum", 0.9}}, {}, {}}}));
  });
  CHECK_MSG(contains(msg, "alias 'toy2' sets the default of 'momentum'"), msg);
  msg = logic_error_of([] {
    check_record(toy_record({{"lr", 1e-3, Real, NonNegative, Log}},
                            {{"toy2", "Toy2", "", "", "", "", kDefaultLrRange, 1e-2, {}, {"maximize"}, {}}}));
  });
  CHECK_MSG(contains(msg, "alias 'toy2' pins 'maximize'"), msg);
  msg = logic_error_of([] {
    check_record(toy_record({{"lr", 1e-3, Real, NonNegative, Log}},
                            {{"toy2", "Toy2", "", "", "", "", kDefaultLrRange, 1e-2, {{"lr", -2.0}}, {}, {}}}));
  });
  CHECK_MSG(contains(msg, "default of 'toy2' is out of range"), msg);
}

PYOPT_TEST(record_ranges_give_the_rules_messages) {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  CHECK(range_error({"lr", 0, Real, NonNegative}, -1.5) == "invalid lr: -1.5 (must be >= 0)");
  CHECK(range_error({"lr", 0, Real, NonNegative}, nan).find("(must be >= 0)") != std::string::npos);
  CHECK(range_error({"lr", 0, Real, NonNegative}, inf).empty());
  CHECK(range_error({"t", 0, Real, NonNegativeFinite}, inf) == "invalid t: inf (must be finite)");
  CHECK(range_error({"beta1", 0, Real, UnitOpenRight}, 1.0) == "invalid beta1: 1 (must be in [0, 1))");
  CHECK(range_error({"rho", 0, Real, UnitClosed}, 1.5) == "invalid rho: 1.5 (must be in [0, 1])");
  CHECK(range_error({"etaminus", 0, Real, UnitOpen}, 0.0) == "invalid etaminus: 0 (must be in (0, 1))");
  CHECK(range_error({"etaplus", 0, Real, GreaterThanOne}, 1.0) == "invalid etaplus: 1 (must be > 1)");
  CHECK(range_error({"lambd", 0, Real, Number}, nan) == "invalid lambd: nan (must be a number)");
  CHECK(range_error({"lambd", 0, Real, Number}, -inf).empty());
  CHECK(range_error({"w", 0, Real, UnitOpenLeft}, 0.0) == "invalid w: 0 (must be in (0, 1])");
  CHECK(range_error({"bs", 1, Real, Positive, Fixed, 0, 0, false, "", "tokens or examples per batch"}, inf) ==
        "invalid bs: inf (must be > 0: tokens or examples per batch)");
  CHECK(range_error({"x", 0, Real, Any}, nan).empty());
  // And the catalogue validates with them, before the rule's cross-field check.
  const RuleInfo& sophia = *find_optimizer("sophia").rule;
  std::vector<double> h = find_optimizer("sophia").defaults;
  h[std::size_t(sophia.hyper_index("bs"))] = 0.0;
  const std::string msg = CHECK_THROWS(std::invalid_argument, sophia.validate(h.data()));
  CHECK_MSG(msg == "invalid bs: 0 (must be > 0: tokens or examples per batch)", msg);
}

PYOPT_TEST(catalogue_comes_from_the_records) {
  const OptimizerSpec& adamw = find_optimizer("adamw");
  CHECK(adamw.alias_of == "adam" && adamw.class_name == "AdamW" && std::string(adamw.rule->name) == "adam");
  CHECK(adamw.is_fixed("decoupled_weight_decay"));
  CHECK(adamw.defaults[std::size_t(adamw.rule->hyper_index("weight_decay"))] == 1e-2);
  CHECK(adamw.paper == "Loshchilov & Hutter, 2019");
  // The bug the records fixed: SophiaG's rho is a clipping scale, searched on a log scale.
  const OptimizerSpec& sophia = find_optimizer("sophia");
  const HyperSpec& rho = sophia.hyper[std::size_t(sophia.rule->hyper_index("rho"))];
  CHECK(rho.search == Search::Log && rho.low == 0.01 && rho.high == 0.1);
  // Derived search bounds are filled in: lr from lr_range, a beta from its default.
  CHECK(sophia.hyper[0].low == 1e-6 && sophia.hyper[0].high == 1e-2);
  const OptimizerSpec& momentum = find_optimizer("momentum");
  const HyperSpec& mu = momentum.hyper[std::size_t(momentum.rule->hyper_index("momentum"))];
  CHECK(mu.search == Search::OneMinusLog && mu.default_value == 0.9);
  CHECK(find_optimizer("sgd").hyper[std::size_t(momentum.rule->hyper_index("momentum"))].search == Search::Fixed);
  // Written in Python and not run by C++: listed apart, refused by name with where to find it.
  // Adafactor (and Muon, given a BLAS) are written in Python and run by C++ too: after the rules.
  auto python_only_has = [](const std::string& name) {
    for (const auto& s : python_only_optimizers())
      if (s.name == name) return true;
    return false;
  };
  for (const auto& s : python_only_optimizers()) CHECK_MSG(s.rule == nullptr, s.name);
  CHECK(python_only_has("lbfgs") && python_only_has("rowwise_adagrad") && python_only_has("prodigy"));
  CHECK(!python_only_has("adafactor"));
  CHECK(python_only_has("muon") == !have_blas());
  const std::string msg = CHECK_THROWS(std::invalid_argument, find_optimizer("lbfgs"));
  CHECK_MSG(contains(msg, "'lbfgs' is written in Python (pyopt.LBFGS)"), msg);
  for (const OptimizerSpec& s : optimizers()) CHECK_MSG(s.rule != nullptr && !s.class_name.empty(), s.name);
  std::vector<std::string> engines;
  for (const OptimizerSpec& s : optimizers())
    if (s.rule->engine != Engine::Rule) engines.push_back(s.name);
  CHECK(engines == (have_blas() ? std::vector<std::string>{"muon", "adafactor"} : std::vector<std::string>{"adafactor"}));
  CHECK(optimizers().back().name == "adafactor" && find_optimizer("adafactor").rule->index == -1);
  CHECK(find_optimizer("adafactor").record_hyper == find_optimizer("adafactor").hyper.size());
  if (have_blas()) {  // C++ keeps Muon's adjust_lr_fn (a string in Python) after the record's hyperparameters
    const OptimizerSpec& muon = find_optimizer("muon");
    CHECK(muon.hyper.size() == muon.record_hyper + 1 && std::string(muon.hyper.back().name) == "adjust_lr_fn");
  }
}
