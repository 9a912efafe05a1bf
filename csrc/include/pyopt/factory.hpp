#pragma once
// Optimizers from a config: the best.json `pyopt tune` writes, as pyopt.from_config reads it.
//
//   {"optimizer": "adamw", "hyperparameters": {"lr": 0.003, "betas": [0.9, 0.99], "amsgrad": false},
//    "value": 0.07, "task": "...", "study": "..."}          (other keys are ignored)
//
//   pyopt::Optimizer opt = pyopt::make_optimizer_from_file("runs/best.json");
//   opt.add_param(w.data(), w.size());
//
// A run of `pyopt tune --precision ...` adds the optimizer's storage options (StorageOptions):
//   "storage": {"master_weights": true, "state_dtype": "int8", "stochastic_rounding": false}
// (any of the three keys; the others keep their defaults), applied as Python's from_config does.
//
// Hyperparameters use the Python (torch) spelling: tuples travel as JSON arrays and map onto the
// flat C++ names — betas -> beta1, beta2 (, beta3); etas -> etaminus, etaplus;
// step_sizes -> step_size_min, step_size_max; nus -> nu1, nu2; Muon's ns_coefficients -> ns_a,
// ns_b, ns_c; Adafactor's eps -> eps1, eps2, eps1 null (None) being NaN — flags are JSON true/false
// (0/1 in C++), and Muon's adjust_lr_fn is null, "original" or "match_rms_adamw" (0, 1, 2 in C++). Exactly what Python accepts is accepted: an unknown optimizer or hyperparameter,
// a pinned one (adamw's decoupled_weight_decay), a wrong type or tuple length, or an out-of-range
// value throws std::invalid_argument with a message naming it.
#include <map>
#include <string>

#include "pyopt/json.hpp"
#include "pyopt/optimizer.hpp"

namespace pyopt {

struct OptimizerConfig {
  std::string name;
  std::map<std::string, double> hyperparameters;  // flat C++ names, bools as 0/1
  StorageOptions storage;
};

// Parses and checks a config object (as above) without building the optimizer.
OptimizerConfig parse_config(const json::Value& config);

Optimizer make_optimizer(const json::Value& config);
Optimizer make_optimizer(const OptimizerConfig& config);
Optimizer make_optimizer_from_json(const std::string& json_text);
Optimizer make_optimizer_from_file(const std::string& path);

// Python-spelled hyperparameters (a JSON object as in best.json) -> the flat C++ map for
// optimizer `name`; throws as above. Values are not range-checked here (the Optimizer does it).
std::map<std::string, double> flat_hyperparameters(const std::string& name, const json::Value& hyperparameters);
// Storage options from JSON (best.json's and a checkpoint's "storage"): an object with any of
// master_weights (bool), state_dtype ("float32" | "bfloat16" | "int8"), stochastic_rounding (bool);
// std::invalid_argument naming what is wrong otherwise. And back (all three keys).
StorageOptions storage_options_from_json(const json::Value& storage);
json::Value storage_options_json(const StorageOptions& options);
// The other way: all settable hyperparameters of `name` in Python's spelling and order (the
// pinned ones left out), from a full flat map such as Optimizer::hyperparameters().
json::Value public_hyperparameters(const std::string& name, const std::map<std::string, double>& flat);

}  // namespace pyopt
