#pragma once
// The catalogue: every rule's metadata (type-erased) and every public optimizer name built on a
// rule ("adamw" is the adam rule with decoupled weight decay and weight_decay = 1e-2), plus the
// runtime pieces: ISA dispatch and the thread count.
#include <cstdint>
#include <string>
#include <vector>

#include "pyopt/types.hpp"

namespace pyopt {

struct RuleInfo {
  const char* name;
  int index;  // position in every kernel table
  const HyperSpec* hyper;
  int num_hyper;
  const char* const* slot_names;
  int num_slots;
  const char* const* scalar_names;
  int num_scalars;
  int (*variant)(const double* hyper);
  unsigned (*slot_mask)(int variant);
  void (*validate)(const double* hyper);  // throws std::invalid_argument
  double (*initial_state)(int slot, const double* hyper);
  double (*initial_scalar)(int index);

  int hyper_index(const std::string& name) const;  // -1 when the rule has no such hyperparameter
  unsigned slots_needed(const double* hyper) const { return slot_mask(variant(hyper)); }
};

struct OptimizerSpec {
  std::string name;                 // public name, e.g. "adamw"
  const RuleInfo* rule;             // the rule it runs
  std::vector<double> defaults;     // a full hyperparameter vector in the rule's order
  std::vector<std::string> fixed;   // hyperparameters this name pins (e.g. adamw: decoupled_weight_decay)
  std::string summary;              // one line
  std::string reference;            // the implementation it matches

  bool is_fixed(const std::string& hyper_name) const;
};

const std::vector<RuleInfo>& all_rules();
const std::vector<OptimizerSpec>& optimizers();
// Throws std::invalid_argument naming the valid optimizers.
const OptimizerSpec& find_optimizer(const std::string& name);

// Runs one step of `rule` over `count` tensors of one dtype on the selected ISA.
void run_kernel(const RuleInfo& rule, DType dtype, const TensorArgs* tensors, int64_t count);

// ISA dispatch: the best path this CPU supports, capped by PYOPT_ISA or set_isa().
std::string isa();
std::vector<std::string> isa_available();  // paths compiled in and supported here, best last
std::vector<std::string> isa_compiled();   // paths compiled in
void set_isa(const std::string& name);     // throws std::invalid_argument

// Threads: OMP_NUM_THREADS (or the core count) unless set_num_threads() says otherwise.
int num_threads();
void set_num_threads(int n);  // n >= 1

std::string compiler();
const char* version();

}  // namespace pyopt
