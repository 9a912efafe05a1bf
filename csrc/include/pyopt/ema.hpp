#pragma once
// pyopt::Ema — exponential moving averages of caller-owned parameter buffers (weight EMA), updated
// by one fused kernel over all of them: avg ← lerp(avg, param, 1 − decay), rounded as torch.lerp
// (the Lerp map of driver/map.hpp, as Python's pyopt.EMA; on the ISA path set_isa() selects).
//
//   pyopt::Ema ema(0.999);
//   ema.add_param(w.data(), w.size());
//   for (...) { opt.step(...); ema.update(); }
//   ema.copy_to_params();  // e.g. before evaluating or exporting
#include <cstddef>
#include <vector>

#include "pyopt/types.hpp"

namespace pyopt {

class Ema {
 public:
  explicit Ema(double decay);  // decay in [0, 1]; throws std::invalid_argument

  // Registers a caller-owned param; its average starts as a copy of it. Returns its index.
  std::size_t add_param(const float* param, std::size_t size);
  std::size_t add_param(const double* param, std::size_t size);

  void update();           // avg ← avg + (1 − decay)·(param − avg), every param, one parallel region
  void copy_to_params();   // param ← avg (the params must be writeable buffers)
  double decay() const { return decay_; }
  void set_decay(double decay);
  std::size_t num_params() const { return params_.size(); }
  // The average of param i, as doubles.
  std::vector<double> average(std::size_t i) const;

 private:
  struct Entry {
    const void* param;
    std::size_t size;
    DType dtype;
    std::vector<char> avg;
  };
  std::size_t add(const void* param, std::size_t size, DType dtype);
  double decay_;
  std::vector<Entry> params_;
};

}  // namespace pyopt
