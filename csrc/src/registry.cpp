// The catalogue, built once from the records (records.def): the rules in kernel-table order, the
// public names (a record and its aliases) and the optimizers written in Python. Every record is checked against its rule on first use (record_check.hpp).
#include "pyopt/registry.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <deque>
#include <stdexcept>
#include <type_traits>

#include "pyopt/adafactor.hpp"
#include "pyopt/engines.hpp"
#include "pyopt/muon.hpp"
#include "pyopt/record_check.hpp"
#include "pyopt/rules/all.hpp"

namespace pyopt {
namespace {

std::string format_value(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// The rule's conditions across hyperparameters (SGD's nesterov rule), or null. Single-value
// ranges are the record's.
template <class Rule, class = void>
struct HasCheck : std::false_type {};
template <class Rule>
struct HasCheck<Rule, std::void_t<decltype(&Rule::check)>> : std::true_type {};

template <class Rule>
constexpr auto rule_check() -> void (*)(const double*) {
  if constexpr (HasCheck<Rule>::value) return &Rule::check;
  else return nullptr;
}

constexpr int kNumRules = 0
#define PYOPT_RULE(Rule, ...) +1
#define PYOPT_PYTHON_ONLY(...)
#include "pyopt/records.def"
#undef PYOPT_RULE
#undef PYOPT_PYTHON_ONLY
    ;

int find_hyper(const std::vector<HyperSpec>& hyper, const char* name) {
  for (std::size_t i = 0; i < hyper.size(); ++i)
    if (std::string(hyper[i].name) == name) return int(i);
  return -1;
}

// Search bounds left 0, 0 in a record, derived as tuner/space.py has always derived them.
void derive_search_bounds(HyperSpec& h, LrRange lr_range) {
  if (h.low != 0.0 || h.high != 0.0) return;
  const double d = h.default_value;
  switch (h.search) {
    case Search::Log:
      if (std::string(h.name) == "lr") {
        h.low = lr_range.low;
        h.high = lr_range.high;
      } else {
        h.low = d / 100.0;
        h.high = d * 100.0;
      }
      break;
    case Search::OneMinusLog: {
      const double gap = 1.0 - d;
      h.low = gap <= 0 ? 1e-4 : std::max(gap / 10.0, 1e-5);
      h.high = gap <= 0 ? 0.5 : std::min(0.5, gap * 30.0);
      break;
    }
    case Search::WeightDecay:
      h.low = 1e-6;
      h.high = 0.3;
      break;
    case Search::Fixed:
    case Search::Flag:
      break;
  }
}

// The engine that runs a record written in Python in C++ too (Engine::Rule: none, C++ refuses it).
Engine engine_of(const OptimizerRecord& r) {
  const std::string name = r.name;
  if (name == "adafactor") return Engine::Adafactor;
  if (name == "muon" && have_blas()) return Engine::Muon;
  return Engine::Rule;
}

struct Catalogue {
  std::deque<std::vector<HyperSpec>> tables;  // each rule's record hyperparameters (stable addresses)
  std::vector<RuleInfo> rule_infos;           // kernel-table order
  std::deque<RuleInfo> engine_infos;          // the Python-written optimizers C++ runs (no kernel table)
  std::vector<OptimizerSpec> optimizers;      // public, run by C++
  std::vector<OptimizerSpec> engine_specs;    // run by C++, appended to `optimizers` after the rules
  std::vector<OptimizerSpec> python_only;
  int records = 0;                            // records seen so far

  template <class Rule>
  const RuleInfo& add_rule(const OptimizerRecord& r) {
    record_check::check_rule_record<Rule>(r);
    const std::vector<HyperSpec>& table = tables.emplace_back(r.hyper);
    rule_infos.push_back(RuleInfo{r.name,
                             int(rule_infos.size()),
                             table.data(),
                             int(table.size()),
                             Rule::slot_names,
                             int(sizeof(Rule::slot_names) / sizeof(Rule::slot_names[0])),
                             Rule::scalar_names,
                             Rule::num_scalars,
                             &Rule::variant,
                             +[](int v) { return Rule::slot_mask(v); },
                             Rule::int8_slots,
                             Rule::nonnegative_slots,
                             Rule::num_reductions,
                             rule_check<Rule>(),
                             &Rule::initial_state,
                             &Rule::initial_scalar});
    return rule_infos.back();
  }

  // The spec of the record itself (alias = null) or of one of its aliases.
  static OptimizerSpec make_spec(const OptimizerRecord& r, const AliasRecord* alias, const RuleInfo* rule) {
    OptimizerSpec s;
    s.name = alias ? alias->name : r.name;
    s.rule = rule;
    s.summary = alias ? alias->summary : r.summary;
    s.reference = alias ? alias->reference : r.reference;
    s.class_name = alias ? alias->class_name : r.class_name;
    s.alias_of = alias ? r.name : "";
    s.paper = alias ? alias->paper : r.paper;
    s.paper_url = alias ? alias->paper_url : r.paper_url;
    s.lr_range = alias ? alias->lr_range : r.lr_range;
    s.demo_lr = alias ? alias->demo_lr : r.demo_lr;
    if (rule) s.hyper.assign(rule->hyper, rule->hyper + rule->num_hyper);  // the record's, then an engine's own
    else s.hyper.assign(r.hyper.begin(), r.hyper.end());
    s.record_hyper = r.hyper.size();
    if (alias) {
      for (const DefaultOverride& o : alias->defaults) s.hyper[std::size_t(find_hyper(s.hyper, o.name))].default_value = o.value;
      for (const SearchOverride& o : alias->search) s.hyper[std::size_t(find_hyper(s.hyper, o.name))].search = o.search;
      for (const char* key : alias->fixed) s.fixed.emplace_back(key);
    }
    for (HyperSpec& h : s.hyper) {
      derive_search_bounds(h, s.lr_range);
      s.defaults.push_back(h.default_value);
    }
    if (rule) {
      try {
        rule->validate(s.defaults.data());
      } catch (const std::invalid_argument& e) {
        throw std::logic_error("pyopt: the defaults of '" + s.name + "' are invalid: " + e.what());
      }
    }
    return s;
  }

  template <class Rule>
  void add(const OptimizerRecord& r) {
    const RuleInfo& rule = add_rule<Rule>(r);
    optimizers.push_back(make_spec(r, nullptr, &rule));
    for (const AliasRecord& a : r.aliases) optimizers.push_back(make_spec(r, &a, &rule));
    for (std::size_t k = optimizers.size() - 1 - r.aliases.size(); k < optimizers.size(); ++k) optimizers[k].record = records;
    ++records;
  }
  void add_python_only(const OptimizerRecord& r) {
    check_record(r);
    const Engine engine = engine_of(r);
    if (engine == Engine::Rule) {
      python_only.push_back(make_spec(r, nullptr, nullptr));
      python_only.back().record = records++;
      return;
    }
    std::vector<HyperSpec> table(r.hyper);
    for (const HyperSpec& h : engines::extra_hyper(engine)) table.push_back(h);
    const std::vector<HyperSpec>& stored = tables.emplace_back(std::move(table));
    const engines::Layout layout = engines::layout(engine);
    engine_infos.push_back(RuleInfo{r.name, -1, stored.data(), int(stored.size()), layout.slot_names, layout.num_slots,
                                    nullptr, 0, +[](const double*) { return 0; },
                                    layout.slot_mask, 0u, 0u, 0, layout.check,
                                    +[](int, const double*) { return 0.0; }, +[](int) { return 0.0; }, engine});
    engine_specs.push_back(make_spec(r, nullptr, &engine_infos.back()));
    engine_specs.back().record = records++;
  }

  Catalogue() {
    using namespace record_terms;
    rule_infos.reserve(kNumRules);  // specs point into it
#define PYOPT_RULE(Rule, ...) add<rules::Rule>(OptimizerRecord __VA_ARGS__);
#define PYOPT_PYTHON_ONLY(...) add_python_only(OptimizerRecord __VA_ARGS__);
#include "pyopt/records.def"
#undef PYOPT_RULE
#undef PYOPT_PYTHON_ONLY
    for (OptimizerSpec& s : engine_specs) optimizers.push_back(std::move(s));
    engine_specs.clear();
    std::vector<std::string> names;
    for (const auto* list : {&optimizers, &python_only})
      for (const OptimizerSpec& s : *list) {
        for (const std::string& n : names)
          if (n == s.name) throw std::logic_error("pyopt: two records name '" + s.name + "'");
        names.push_back(s.name);
      }
  }
};

const Catalogue& catalogue() {
  static const Catalogue c;
  return c;
}

}  // namespace

std::string range_error(const HyperSpec& h, double v) {
  const char* must = nullptr;
  switch (h.range) {
    case Range::Any:
      break;
    case Range::Number:
      if (std::isnan(v)) return std::string("invalid ") + h.name + ": nan (must be a number)";
      break;
    case Range::Finite:
      if (!std::isfinite(v)) must = "must be finite";
      break;
    case Range::NonNegative:
      if (!(v >= 0.0)) must = "must be >= 0";
      break;
    case Range::NonNegativeFinite:
      if (!(v >= 0.0)) must = "must be >= 0";
      else if (!std::isfinite(v)) must = "must be finite";
      break;
    case Range::Positive:
      if (!(v > 0.0) || !std::isfinite(v)) must = "must be > 0";
      break;
    case Range::GreaterThanOne:
      if (!(v > 1.0)) must = "must be > 1";
      break;
    case Range::UnitOpen:
      if (!(v > 0.0 && v < 1.0)) must = "must be in (0, 1)";
      break;
    case Range::UnitOpenRight:
      if (!(v >= 0.0 && v < 1.0)) must = "must be in [0, 1)";
      break;
    case Range::UnitClosed:
      if (!(v >= 0.0 && v <= 1.0)) must = "must be in [0, 1]";
      break;
    case Range::UnitOpenLeft:
      if (!(v > 0.0 && v <= 1.0)) must = "must be in (0, 1]";
      break;
  }
  if (!must) return "";
  const std::string note = h.range_note && *h.range_note ? std::string(": ") + h.range_note : "";
  return std::string("invalid ") + h.name + ": " + format_value(v) + " (" + must + note + ")";
}

void check_record(const OptimizerRecord& r) {
  const std::string who = std::string("pyopt: record '") + r.name + "'";
  const std::vector<HyperSpec> hyper(r.hyper);
  for (std::size_t i = 0; i < hyper.size(); ++i) {
    const HyperSpec& h = hyper[i];
    if (find_hyper(hyper, h.name) != int(i)) throw std::logic_error(who + " lists '" + h.name + "' twice");
    if (h.kind == HyperKind::Bool && h.default_value != 0.0 && h.default_value != 1.0)
      throw std::logic_error(who + ": flag '" + h.name + "' defaults to " + format_value(h.default_value));
  }
  auto check_defaults = [&](const std::vector<HyperSpec>& hs, const std::string& name) {
    for (const HyperSpec& h : hs) {
      const std::string error = range_error(h, h.default_value);
      if (!error.empty()) throw std::logic_error("pyopt: the default of '" + name + "' is out of range: " + error);
      const bool derived = h.low == 0.0 && h.high == 0.0 && std::string(h.name) != "lr";
      if ((h.search == Search::OneMinusLog && derived && !(h.default_value > 0.0 && h.default_value < 1.0)) ||
          (h.search == Search::Log && derived && !(h.default_value > 0.0)))
        throw std::logic_error("pyopt: '" + name + "' searches '" + h.name +
                               "' around its default, which gives no range: say Fixed, or give low and high");
    }
  };
  check_defaults(hyper, r.name);
  for (const AliasRecord& a : r.aliases) {
    std::vector<HyperSpec> own = hyper;
    auto at = [&](const char* key, const char* what) {
      const int i = find_hyper(own, key);
      if (i < 0) throw std::logic_error(std::string("pyopt: alias '") + a.name + "' " + what + " '" + key + "', which record '" + r.name + "' does not have");
      return std::size_t(i);
    };
    for (const DefaultOverride& o : a.defaults) own[at(o.name, "sets the default of")].default_value = o.value;
    for (const SearchOverride& o : a.search) own[at(o.name, "sets the search of")].search = o.search;
    for (const char* key : a.fixed) at(key, "pins");
    check_defaults(own, a.name);
  }
}

void RuleInfo::validate(const double* h) const {
  for (int i = 0; i < num_hyper; ++i) {
    const std::string error = range_error(hyper[i], h[i]);
    if (!error.empty()) throw std::invalid_argument(error);
  }
  if (check) check(h);
}

int RuleInfo::hyper_index(const std::string& key) const {
  for (int i = 0; i < num_hyper; ++i)
    if (key == hyper[i].name) return i;
  return -1;
}

bool OptimizerSpec::is_fixed(const std::string& key) const {
  for (const std::string& f : fixed)
    if (f == key) return true;
  return false;
}

const std::vector<RuleInfo>& all_rules() { return catalogue().rule_infos; }
const std::vector<OptimizerSpec>& optimizers() { return catalogue().optimizers; }
const std::vector<OptimizerSpec>& python_only_optimizers() { return catalogue().python_only; }

const OptimizerSpec& find_optimizer(const std::string& name) {
  const Catalogue& c = catalogue();
  for (const OptimizerSpec& s : c.optimizers)
    if (s.name == name) return s;
  std::string valid;
  for (const OptimizerSpec& s : c.optimizers) valid += (valid.empty() ? "" : ", ") + s.name;
  for (const OptimizerSpec& s : c.python_only)
    if (s.name == name)
      throw std::invalid_argument("optimizer '" + name + "' is written in Python (pyopt." + s.class_name +
                                  ") and has no C++ Optimizer" +
                                  (name == "muon" ? " in this build (it needs a BLAS; CMake's find_package(BLAS) found none)"
                                                  : "") +
                                  "; available in C++: " + valid);
  throw std::invalid_argument("unknown optimizer '" + name + "'; available: " + valid);
}

const std::vector<std::pair<std::string, std::vector<std::string>>>& hyper_tuples() {
  static const std::vector<std::pair<std::string, std::vector<std::string>>> t = {
      {"betas", {"beta1", "beta2", "beta3"}},
      {"etas", {"etaminus", "etaplus"}},
      {"step_sizes", {"step_size_min", "step_size_max"}},
      {"nus", {"nu1", "nu2"}},
      {"ns_coefficients", {"ns_a", "ns_b", "ns_c"}},  // Muon (Python-only)
      // Not Adafactor's eps = (eps1, eps2): the rules' eps is a number, and a tuple needs a name of its own.
  };
  return t;
}

}  // namespace pyopt
