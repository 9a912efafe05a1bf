#pragma once
// One optimizer step over the checked gradients of a set of params: the global gradient norm,
// skip-on-non-finite, clip-by-norm, the step counters and the kernels. pyopt::Optimizer and the
// Python engine (pyopt.Optimizer.step) both run it, so both compute the same bits.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "pyopt/registry.hpp"
#include "pyopt/types.hpp"

namespace pyopt {

// Options of one step (all off by default): clip_value clamps every gradient element to
// [-clip_value, clip_value]; clip_norm (>= 0) then scales the gradients by clip_norm/(N + 1e-6)
// when that is below 1, N being the global L2 norm of all gradients of the step (torch's
// clip_grad_norm_); skip_nonfinite skips the whole step, touching nothing, when a gradient holds
// NaN or Inf. The caller's gradient buffers are never written.
struct StepOptions {
  double clip_norm = -1.0;
  double clip_value = std::numeric_limits<double>::infinity();
  bool skip_nonfinite = false;
};

// std::invalid_argument, its message prefixed by `who`, for a negative or NaN clip_value or a NaN clip_norm.
void check_step_options(const StepOptions& options, const std::string& who);

struct StepOutcome {
  bool applied = true;  // false: skip_nonfinite skipped the step and nothing was touched
  double grad_norm = std::numeric_limits<double>::quiet_NaN();  // N; NaN when not computed
  std::vector<std::size_t> nonfinite;  // params whose gradient is not finite, ascending (when N was computed)
};

class StepPipeline {
 public:
  // One param that steps: its index (as reported in StepOutcome::nonfinite), its kernel arguments
  // (param, grad, size, hyper, scalars, slots) and its step counter. The pipeline sets step,
  // grad_clip and grad_scale.
  void add(std::size_t param, DType dtype, const TensorArgs& args, int64_t* step_counter);

  // (1) When clip_norm >= 0 or skip_nonfinite: N over every added gradient, its bits independent
  // of the thread count and ISA; a non-finite N with skip_nonfinite returns {applied = false}
  // having touched nothing. (2) before_update() (e.g. to allocate state and fill args.slots with
  // for_each). (3) ++*step_counter of every added param, then one kernel call per dtype.
  // The options must have passed check_step_options.
  StepOutcome run(const RuleInfo& rule, const StepOptions& options, const std::function<void()>& before_update = {});

  template <class F>  // f(param index, TensorArgs&) for every added param
  void for_each(F&& f) {
    for (int d = 0; d < kNumDTypes; ++d)
      for (std::size_t k = 0; k < by_dtype_[d].size(); ++k) f(params_[d][k], by_dtype_[d][k]);
  }

 private:
  double global_norm(std::vector<std::size_t>& nonfinite) const;

  std::vector<TensorArgs> by_dtype_[kNumDTypes];  // one kernel call per dtype
  std::vector<std::size_t> params_[kNumDTypes];   // the param index of each entry of by_dtype_
  std::vector<int64_t*> counters_[kNumDTypes];     // and its step counter
};

}  // namespace pyopt
