#pragma once
// The catalogue: every rule's metadata (type-erased) and every public optimizer name built on a
// rule ("adamw" is the adam rule with decoupled weight decay and weight_decay = 1e-2), all read
// from the records (csrc/src/records.def, types in record.hpp), plus the runtime pieces: ISA
// dispatch and the thread count.
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "pyopt/types.hpp"

namespace pyopt {

// How pyopt::Optimizer steps an optimizer: an element-wise rule through the kernel tables, or one
// of the optimizers written in Python whose state or step is per tensor, which C++ runs too:
// Adafactor (factored state, its per-ISA kernel) and Muon (Newton-Schulz GEMMs through the BLAS
// CMake found; absent from optimizers() without one).
enum class Engine : uint8_t { Rule = 0, Adafactor = 1, Muon = 2 };

struct RuleInfo {
  const char* name;
  int index;  // position in every kernel table
  const HyperSpec* hyper;  // the record's hyperparameters, in the rule's order
  int num_hyper;
  const char* const* slot_names;
  int num_slots;
  const char* const* scalar_names;
  int num_scalars;
  int (*variant)(const double* hyper);
  unsigned (*slot_mask)(int variant);
  unsigned int8_slots;         // slots that may be 8-bit block-quantized (0: int8 states unsupported)
  unsigned nonnegative_slots;  // of those, the ones quantized with the unsigned map
  int num_reductions;          // per-tensor sums (LAMB, LARS): their states are float32 only
  void (*check)(const double* hyper);  // the rule's cross-field check, or null
  double (*initial_state)(int slot, const double* hyper);
  double (*initial_scalar)(int index);
  Engine engine = Engine::Rule;  // not Rule: no kernel (index -1), slots not shaped like the param

  // Throws std::invalid_argument naming the first hyperparameter out of its record range, then
  // whatever the rule's check throws.
  void validate(const double* hyper) const;
  int hyper_index(const std::string& name) const;  // -1 when the rule has no such hyperparameter
  unsigned slots_needed(const double* hyper) const { return slot_mask(variant(hyper)); }
};

struct OptimizerSpec {
  std::string name;                 // public name, e.g. "adamw"
  const RuleInfo* rule;             // the rule it runs (null for the optimizers C++ does not run)
  std::vector<double> defaults;     // a full hyperparameter vector in the rule's order
  std::vector<std::string> fixed;   // hyperparameters this name pins (e.g. adamw: decoupled_weight_decay)
  std::string summary;              // one line
  std::string reference;            // the implementation it matches
  // From the record:
  std::string class_name;           // the Python class, pyopt.<class_name>
  std::string alias_of;             // the record this alias belongs to ("adam" for adamw), or ""
  std::string paper, paper_url;
  LrRange lr_range{};               // searched by the tuner
  double demo_lr = 0.0;             // pyopt demo's default lr
  // The hyperparameters as this name has them: its defaults and search kinds, with the derived
  // search bounds filled in (see Search in record.hpp).
  std::vector<HyperSpec> hyper;
  std::size_t record_hyper = 0;  // how many of `hyper` the record has (Muon's C++ adjust_lr_fn follows)
  int record = -1;               // position of its record in records.def

  bool is_fixed(const std::string& hyper_name) const;
};

const std::vector<RuleInfo>& all_rules();
// Every optimizer pyopt::Optimizer (and make_optimizer) runs: the rules in the records' order
// (pyopt list's order), then the Python-written ones C++ runs too (adafactor; muon when CMake
// found a BLAS), each with a non-null rule.
const std::vector<OptimizerSpec>& optimizers();
// The optimizers written in Python that C++ does not run (lbfgs; muon without a BLAS): records
// without a rule (OptimizerSpec::rule null).
const std::vector<OptimizerSpec>& python_only_optimizers();
// Whether this build has a BLAS (CMake's find_package(BLAS)), which Muon's Newton-Schulz needs.
bool have_blas();
// Throws std::invalid_argument naming the valid optimizers (or, for python_only_optimizers(),
// saying they are written in Python).
const OptimizerSpec& find_optimizer(const std::string& name);

// Hyperparameters C++ keeps flat and Python (and configs) show as one tuple, torch-style:
// tuple name -> its members in order (an optimizer has a prefix of them, or none).
const std::vector<std::pair<std::string, std::vector<std::string>>>& hyper_tuples();

// "invalid <name>: <value> (must be ...)" when `value` is outside h.range, else "".
std::string range_error(const HyperSpec& h, double value);
// The registration checks every record passes (std::logic_error naming the record): unique
// hyperparameter names, defaults within their ranges and searchable as their search kind says,
// alias overrides naming existing hyperparameters. record_check.hpp adds the checks against the rule.
void check_record(const OptimizerRecord& record);

// Runs one step of `rule` over `count` tensors of one dtype on the selected ISA.
void run_kernel(const RuleInfo& rule, DType dtype, const TensorArgs* tensors, int64_t count);
// Runs one row-sparse step of `rule` (RowsKernelFn in types.hpp) on the selected ISA.
void run_rows_kernel(const RuleInfo& rule, DType dtype, const TensorArgs& table, const int64_t* rows, int64_t count,
                     int64_t cols);

// ISA dispatch: the best path this CPU supports, capped by PYOPT_ISA or set_isa().
std::string isa();
std::vector<std::string> isa_available();  // paths compiled in and supported here, best last
std::vector<std::string> isa_compiled();   // paths compiled in
void set_isa(const std::string& name);     // throws std::invalid_argument

// Threads: OMP_NUM_THREADS (or the core count) unless set_num_threads() says otherwise.
int num_threads();
void set_num_threads(int n);  // n >= 1
// While it lives, num_threads() on the calling thread is n (n >= 1; 0 keeps the setting above):
// one optimizer's steps on their own thread count (the C API's pyopt_set_num_threads).
class ThreadCountScope {
 public:
  explicit ThreadCountScope(int n);
  ~ThreadCountScope();
  ThreadCountScope(const ThreadCountScope&) = delete;
  ThreadCountScope& operator=(const ThreadCountScope&) = delete;

 private:
  int previous_;
};

std::string compiler();
const char* version();

}  // namespace pyopt
