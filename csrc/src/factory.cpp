#include "pyopt/factory.hpp"

#include <cmath>
#include <limits>
#include <set>
#include <stdexcept>
#include <utility>
#include <vector>

#include "pyopt/muon.hpp"

namespace pyopt {
namespace {

using Tuples = std::vector<std::pair<std::string, std::vector<std::string>>>;

bool is_engine(const OptimizerSpec& spec, Engine engine) { return spec.rule && spec.rule->engine == engine; }

// The tuples of this optimizer: hyper_tuples(), and Adafactor's eps = (eps1, eps2), whose eps1 may
// be None (null in JSON, NaN in C++: the dtype's machine epsilon).
Tuples tuples(const OptimizerSpec& spec) {
  Tuples out = hyper_tuples();
  if (is_engine(spec, Engine::Adafactor)) out.push_back({"eps", {"eps1", "eps2"}});
  return out;
}
bool may_be_none(const OptimizerSpec& spec, const std::string& member) {
  return is_engine(spec, Engine::Adafactor) && member == "eps1";
}

// Muon's adjust_lr_fn: Python's None / "original" / "match_rms_adamw", C++'s 0 / 1 / 2.
double adjust_lr_code(const std::string& where, const json::Value& v) {
  if (v.is_null()) return double(MuonAdjustLr::None);
  for (MuonAdjustLr a : {MuonAdjustLr::Original, MuonAdjustLr::MatchRmsAdamW})
    if (v.is_string() && v.as_string() == muon_adjust_lr_name(a)) return double(a);
  throw std::invalid_argument(where + " must be null, \"original\" or \"match_rms_adamw\", got " + json::dump(v));
}
json::Value adjust_lr_json(double code) {
  const MuonAdjustLr a = MuonAdjustLr(int(code));
  return a == MuonAdjustLr::None ? json::Value() : json::Value(muon_adjust_lr_name(a));
}

// The members of tuple `t` the rule has.
std::vector<std::string> members_of(const RuleInfo& rule, const std::vector<std::string>& all) {
  std::vector<std::string> out;
  for (const std::string& m : all)
    if (rule.hyper_index(m) >= 0) out.push_back(m);
  return out;
}

// Tuple name and position of a flat member, or {"", -1}.
std::pair<std::string, int> tuple_of(const Tuples& all, const std::string& key) {
  for (const auto& [t, members] : all)
    for (std::size_t i = 0; i < members.size(); ++i)
      if (members[i] == key) return {t, int(i)};
  return {"", -1};
}

// Public names of an optimizer, in Python's order (Spec.defaults).
std::vector<std::string> public_names(const OptimizerSpec& spec) {
  std::vector<std::string> out;
  const RuleInfo& rule = *spec.rule;
  const Tuples all = tuples(spec);
  for (int i = 0; i < rule.num_hyper; ++i) {
    const std::string key = rule.hyper[i].name;
    if (spec.is_fixed(key)) continue;
    const auto [t, index] = tuple_of(all, key);
    if (index < 0) out.push_back(key);
    else if (index == 0) out.push_back(t);
  }
  return out;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

double real_value(const std::string& where, const json::Value& v) {
  if (!v.is_number())
    throw std::invalid_argument(where + " must be a real number, got " + (v.is_bool() ? "a bool" : json::type_name(v.type())) +
                                " (" + json::dump(v) + ")");
  return v.as_number();
}

}  // namespace

std::map<std::string, double> flat_hyperparameters(const std::string& name, const json::Value& hyper) {
  const OptimizerSpec& spec = find_optimizer(name);
  const RuleInfo& rule = *spec.rule;
  if (!hyper.is_object())
    throw std::invalid_argument(name + ": 'hyperparameters' must be an object, got " + json::type_name(hyper.type()));
  const std::vector<std::string> valid = public_names(spec);
  const Tuples spec_tuples = tuples(spec);
  std::map<std::string, double> out;
  for (const auto& [key, value] : hyper.as_object()) {
    const std::string where = name + ": " + key;
    bool is_tuple = false;
    for (const auto& [t, all] : spec_tuples) {
      if (t != key) continue;
      const std::vector<std::string> members = members_of(rule, all);
      if (members.empty()) break;
      is_tuple = true;
      if (!value.is_array() || value.size() != members.size())
        throw std::invalid_argument(where + " must be " +
                                    (members.size() == 2 ? std::string("a pair") : "a list of " + std::to_string(members.size())) +
                                    " of numbers, got " + json::dump(value));
      for (std::size_t i = 0; i < members.size(); ++i)
        out[members[i]] = may_be_none(spec, members[i]) && value[i].is_null()
                              ? std::numeric_limits<double>::quiet_NaN()
                              : real_value(where + "[" + std::to_string(i) + "]", value[i]);
    }
    if (is_tuple) continue;
    const int index = rule.hyper_index(key);
    if (index < 0 || tuple_of(spec_tuples, key).second >= 0) {
      throw std::invalid_argument(name + ": unknown hyperparameter '" + key + "'; valid: " + join(valid));
    }
    if (spec.is_fixed(key))
      throw std::invalid_argument(name + ": hyperparameter '" + key + "' is fixed by this optimizer; valid: " + join(valid));
    if (is_engine(spec, Engine::Muon) && key == "adjust_lr_fn") {
      out[key] = adjust_lr_code(where, value);
    } else if (rule.hyper[index].kind == HyperKind::Bool) {
      if (!value.is_bool())
        throw std::invalid_argument(where + " must be a bool (true/false), got " + json::dump(value));
      out[key] = value.as_bool() ? 1.0 : 0.0;
    } else {
      out[key] = real_value(where, value);
    }
  }
  return out;
}

json::Value public_hyperparameters(const std::string& name, const std::map<std::string, double>& flat) {
  const OptimizerSpec& spec = find_optimizer(name);
  const RuleInfo& rule = *spec.rule;
  auto get = [&](const std::string& key) {
    auto it = flat.find(key);
    if (it != flat.end()) return it->second;
    return spec.defaults[std::size_t(rule.hyper_index(key))];
  };
  json::Value out = json::Value::object();
  for (const std::string& key : public_names(spec)) {
    bool is_tuple = false;
    for (const auto& [t, all] : tuples(spec)) {
      if (t != key) continue;
      is_tuple = true;
      json::Value::Array items;
      for (const std::string& m : members_of(rule, all))
        items.push_back(may_be_none(spec, m) && std::isnan(get(m)) ? json::Value() : json::Value(get(m)));
      out.set(key, json::Value(std::move(items)));
    }
    if (is_tuple) continue;
    const int index = rule.hyper_index(key);
    if (is_engine(spec, Engine::Muon) && key == "adjust_lr_fn")
      out.set(key, adjust_lr_json(get(key)));
    else if (rule.hyper[index].kind == HyperKind::Bool)
      out.set(key, json::Value(get(key) != 0.0));
    else
      out.set(key, json::Value(get(key)));
  }
  return out;
}

OptimizerConfig parse_config(const json::Value& config) {
  if (!config.is_object() || !config.find("optimizer") || !config["optimizer"].is_string())
    throw std::invalid_argument(
        "make_optimizer: the config must be an object with an 'optimizer' name (and 'hyperparameters'), "
        "as pyopt tune's best.json");
  OptimizerConfig out;
  out.name = config["optimizer"].as_string();
  bool listed = false;
  std::vector<std::string> names;
  for (const OptimizerSpec& s : optimizers()) {
    listed = listed || s.name == out.name;
    names.push_back(s.name);
  }
  if (!listed) {
    find_optimizer(out.name);  // says so when it is written in Python (muon, adafactor)
    throw std::invalid_argument("unknown optimizer '" + out.name + "'; available: " + join(names));
  }
  if (const json::Value* h = config.find("hyperparameters")) {
    if (!h->is_object())
      throw std::invalid_argument("make_optimizer: 'hyperparameters' must be an object, got " + json::dump(*h));
    out.hyperparameters = flat_hyperparameters(out.name, *h);
  }
  if (const json::Value* storage = config.find("storage")) {
    try {
      out.storage = storage_options_from_json(*storage);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(std::string("make_optimizer: ") + e.what());
    }
  }
  return out;
}

StorageOptions storage_options_from_json(const json::Value& v) {
  const std::string bad = "bad 'storage' " + json::dump(v).substr(0, 200) +
                          " (an object of master_weights: bool, state_dtype: \"float32\" | \"bfloat16\" | \"int8\", "
                          "stochastic_rounding: bool)";
  if (!v.is_object()) throw std::invalid_argument(bad);
  StorageOptions o;
  std::set<std::string> seen;
  for (const auto& [key, value] : v.as_object()) {
    if (!seen.insert(key).second) throw std::invalid_argument(bad);
    if (key == "master_weights" && value.is_bool()) {
      o.master_weights = value.as_bool();
    } else if (key == "stochastic_rounding" && value.is_bool()) {
      o.stochastic_rounding = value.as_bool();
    } else if (key == "state_dtype" && value.is_string()) {
      try {
        o.state_dtype = parse_state_dtype(value.as_string());
      } catch (const std::invalid_argument&) {
        throw std::invalid_argument(bad);
      }
    } else {
      throw std::invalid_argument(bad);
    }
  }
  return o;
}

json::Value storage_options_json(const StorageOptions& o) {
  json::Value v = json::Value::object();
  v.set("master_weights", json::Value(o.master_weights));
  v.set("state_dtype", json::Value(state_dtype_name(o.state_dtype)));
  v.set("stochastic_rounding", json::Value(o.stochastic_rounding));
  return v;
}

Optimizer make_optimizer(const OptimizerConfig& config) {
  return Optimizer(config.name, config.hyperparameters, config.storage);
}
Optimizer make_optimizer(const json::Value& config) { return make_optimizer(parse_config(config)); }
Optimizer make_optimizer_from_json(const std::string& text) { return make_optimizer(json::parse(text)); }

Optimizer make_optimizer_from_file(const std::string& path) {
  json::Value v;
  try {
    v = json::parse_file(path);
  } catch (const std::exception& e) {
    throw std::invalid_argument(std::string("make_optimizer_from_file: ") + e.what());
  }
  try {
    return make_optimizer(v);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(path + ": " + e.what());
  }
}

}  // namespace pyopt
