// Adafactor's checks and entry point; the kernel is compiled per ISA (driver/adafactor.hpp) and
// runs on the path set_isa() selected.
#include "pyopt/adafactor.hpp"

#include <stdexcept>
#include <string>

#include "pyopt/kernels.hpp"

namespace pyopt {

void validate_adafactor(const AdafactorHyper& h) {
  auto bad = [](const char* name, double v, const char* rule) {
    throw std::invalid_argument(std::string("invalid ") + name + ": " + std::to_string(v) + " (" + rule + ")");
  };
  if (!(h.lr >= 0.0)) bad("lr", h.lr, "must be >= 0");
  if (!(h.beta2_decay <= 0.0)) bad("beta2_decay", h.beta2_decay, "must be <= 0");
  if (!(h.eps1 >= 0.0) && h.eps1 != -1.0) bad("eps[0]", h.eps1, "must be >= 0 or None");
  if (!(h.eps2 >= 0.0)) bad("eps[1]", h.eps2, "must be >= 0");
  if (!(h.d >= 1.0)) bad("d", h.d, "must be >= 1, the clipping threshold");
  if (!(h.weight_decay >= 0.0)) bad("weight_decay", h.weight_decay, "must be >= 0");
}

template <class T>
void adafactor_step(T* p, const T* g, T* row_var, T* col_var, T* variance, int64_t batch, int64_t rows,
                    int64_t cols, int64_t n, int64_t step, const AdafactorHyper& h) {
  const AdafactorArgs args{p, g, row_var, col_var, variance, batch, rows, cols, n, step, h};
  run_adafactor(sizeof(T) == sizeof(float) ? DType::Float32 : DType::Float64, args);
}

template void adafactor_step<float>(float*, const float*, float*, float*, float*, int64_t, int64_t, int64_t, int64_t,
                                    int64_t, const AdafactorHyper&);
template void adafactor_step<double>(double*, const double*, double*, double*, double*, int64_t, int64_t, int64_t,
                                     int64_t, int64_t, const AdafactorHyper&);

}  // namespace pyopt
