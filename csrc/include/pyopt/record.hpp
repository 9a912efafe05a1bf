#pragma once
// The declarative record of an optimizer: what csrc/src/records.def states once for each one
// (name, class, papers, lr range, hyperparameters with defaults, valid ranges and tuner search
// kinds, aliases). Plain types and no code, so every per-ISA translation unit may include it.
#include <initializer_list>
#include <limits>

namespace pyopt {

enum class HyperKind { Real, Bool, Integer };  // bools travel as 0.0 / 1.0

// Valid values. Out-of-range messages read "invalid <name>: <value> (must be ...)"; every range
// but Any rejects NaN.
enum class Range {
  Any,                // not checked (flags)
  Number,             // not NaN: "(must be a number)"
  Finite,             // "(must be finite)"
  NonNegative,        // [0, inf]: "(must be >= 0)"
  NonNegativeFinite,  // [0, inf): "(must be >= 0)", then "(must be finite)"
  Positive,           // (0, inf): "(must be > 0)"
  GreaterThanOne,     // (1, inf]: "(must be > 1)"
  UnitOpen,           // (0, 1): "(must be in (0, 1))"
  UnitOpenRight,      // [0, 1): "(must be in [0, 1))"
  UnitClosed,         // [0, 1]: "(must be in [0, 1])"
  UnitOpenLeft,       // (0, 1]: "(must be in (0, 1])"
};

// How the tuner searches a hyperparameter. low = high = 0 means "derived":
//   Log          lr: the record's lr_range; otherwise default/100 .. default*100
//   OneMinusLog  1 - value, log-uniform over (1 - d)/10 .. min(0.5, 30(1 - d)) (floor 1e-5)
//   WeightDecay  off, or log-uniform 1e-6 .. 0.3
enum class Search { Fixed, Log, OneMinusLog, Flag, WeightDecay };

// One hyperparameter, in the rule's order (its index in the flat double vector).
struct HyperSpec {
  const char* name;
  double default_value;
  HyperKind kind;
  Range range = Range::Any;
  Search search = Search::Fixed;
  double low = 0, high = 0;   // search bounds (0, 0: derived, see Search)
  bool keyword_only = false;  // after `*` in the Python signature
  const char* doc = "";
  const char* range_note = "";  // appended to the out-of-range message: "(must be > 0: <note>)"
};

struct LrRange {
  double low, high;
};

struct DefaultOverride {
  const char* name;
  double value;
};

struct SearchOverride {
  const char* name;
  Search search;
};

// Another public name for a rule with other defaults, e.g. adamw = adam with decoupled weight
// decay pinned on and weight_decay = 1e-2.
struct AliasRecord {
  const char* name;
  const char* class_name;  // the Python class (pyopt.<class_name>)
  const char* summary;
  const char* reference;   // the implementation it is tested against
  const char* paper;
  const char* paper_url;
  LrRange lr_range;        // searched by the tuner
  double demo_lr;          // pyopt demo's default lr
  std::initializer_list<DefaultOverride> defaults;
  std::initializer_list<const char*> fixed;  // pinned: not settable under this name
  std::initializer_list<SearchOverride> search;
};

struct OptimizerRecord {
  const char* name;
  const char* class_name;
  const char* summary;
  const char* reference;
  const char* paper;
  const char* paper_url;
  LrRange lr_range;
  double demo_lr;
  std::initializer_list<HyperSpec> hyper;  // in the rule's order (Rule::Hyper)
  std::initializer_list<AliasRecord> aliases = {};
};

// Short names for the record entries of records.def.
namespace record_terms {
constexpr HyperKind Real = HyperKind::Real, Bool = HyperKind::Bool, Integer = HyperKind::Integer;
constexpr Range Any = Range::Any, Number = Range::Number, Finite = Range::Finite, NonNegative = Range::NonNegative,
                NonNegativeFinite = Range::NonNegativeFinite, Positive = Range::Positive,
                GreaterThanOne = Range::GreaterThanOne, UnitOpen = Range::UnitOpen, UnitOpenRight = Range::UnitOpenRight,
                UnitClosed = Range::UnitClosed, UnitOpenLeft = Range::UnitOpenLeft;
constexpr Search Fixed = Search::Fixed, Log = Search::Log, OneMinusLog = Search::OneMinusLog, Flag = Search::Flag,
                 WeightDecay = Search::WeightDecay;
constexpr bool KeywordOnly = true;
constexpr double kNone = std::numeric_limits<double>::quiet_NaN();  // a Python-only default of None
constexpr LrRange kDefaultLrRange = {1e-5, 1e-1};  // pyopt.Optimizer.lr_range
}  // namespace record_terms

}  // namespace pyopt
