#include "pyopt/step_pipeline.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "pyopt/grad_norm.hpp"

namespace pyopt {

void check_step_options(const StepOptions& options, const std::string& who) {
  if (!(options.clip_value >= 0.0))
    throw std::invalid_argument(who + "clip_value must be >= 0, got " + std::to_string(options.clip_value));
  if (std::isnan(options.clip_norm)) throw std::invalid_argument(who + "clip_norm must not be NaN");
}

void StepPipeline::add(std::size_t param, DType dtype, const TensorArgs& args, int64_t* step_counter) {
  by_dtype_[int(dtype)].push_back(args);
  params_[int(dtype)].push_back(param);
  counters_[int(dtype)].push_back(step_counter);
}

// sqrt of the sum of every gradient's sum of squares, in a fixed order (dtype, then param order).
double StepPipeline::global_norm(std::vector<std::size_t>& nonfinite) const {
  double sum = 0.0;
  for (int d = 0; d < kNumDTypes; ++d) {
    std::vector<double> sums(by_dtype_[d].size());
    grad_sq_sums(DType(d), by_dtype_[d].data(), int64_t(sums.size()), sums.data());
    for (std::size_t k = 0; k < sums.size(); ++k) {
      sum += sums[k];
      if (!std::isfinite(sums[k])) nonfinite.push_back(params_[d][k]);
    }
  }
  std::sort(nonfinite.begin(), nonfinite.end());
  return std::sqrt(sum);
}

StepOutcome StepPipeline::run(const RuleInfo& rule, const StepOptions& options,
                              const std::function<void()>& before_update) {
  for_each([&](std::size_t, TensorArgs& a) { a.grad_clip = options.clip_value; });
  StepOutcome outcome;
  if (options.clip_norm >= 0.0 || options.skip_nonfinite) {
    outcome.grad_norm = global_norm(outcome.nonfinite);
    if (options.skip_nonfinite && !std::isfinite(outcome.grad_norm)) {
      outcome.applied = false;
      return outcome;
    }
    const double coef = options.clip_norm / (outcome.grad_norm + 1e-6);  // torch: max_norm / (N + 1e-6), clamped at 1
    if (options.clip_norm >= 0.0 && !(coef >= 1.0)) for_each([&](std::size_t, TensorArgs& a) { a.grad_scale = coef; });
  }
  if (before_update) before_update();
  for (int d = 0; d < kNumDTypes; ++d)
    for (std::size_t k = 0; k < by_dtype_[d].size(); ++k) by_dtype_[d][k].step = ++*counters_[d][k];
  for (int d = 0; d < kNumDTypes; ++d)
    if (!by_dtype_[d].empty()) run_kernel(rule, DType(d), by_dtype_[d].data(), int64_t(by_dtype_[d].size()));
  return outcome;
}

}  // namespace pyopt
