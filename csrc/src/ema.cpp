#include "pyopt/ema.hpp"

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "pyopt/kernels.hpp"

namespace pyopt {
namespace {

std::size_t bytes_of(DType d, std::size_t n) { return n * (d == DType::Float32 ? sizeof(float) : sizeof(double)); }

void check_decay(double decay) {
  if (!(decay >= 0.0 && decay <= 1.0))
    throw std::invalid_argument("Ema: decay must be in [0, 1], got " + std::to_string(decay));
}

}  // namespace

Ema::Ema(double decay) : decay_(decay) { check_decay(decay); }

void Ema::set_decay(double decay) {
  check_decay(decay);
  decay_ = decay;
}

std::size_t Ema::add_param(const float* param, std::size_t size) { return add(param, size, DType::Float32); }
std::size_t Ema::add_param(const double* param, std::size_t size) { return add(param, size, DType::Float64); }

std::size_t Ema::add(const void* param, std::size_t size, DType dtype) {
  if (!param && size) throw std::invalid_argument("Ema::add_param: null buffer");
  Entry e{param, size, dtype, std::vector<char>(bytes_of(dtype, size))};
  if (size) std::memcpy(e.avg.data(), param, e.avg.size());
  params_.push_back(std::move(e));
  return params_.size() - 1;
}

void Ema::update() {
  const double weight = 1.0 - decay_;
  std::vector<MapArgs> by_dtype[kNumDTypes];
  for (Entry& e : params_)
    if (e.size) by_dtype[int(e.dtype)].push_back(MapArgs{e.avg.data(), e.param, int64_t(e.size), weight});
  for (int d = 0; d < kNumDTypes; ++d)
    if (!by_dtype[d].empty()) run_map(ElementMap::Lerp, DType(d), by_dtype[d].data(), int64_t(by_dtype[d].size()));
}

void Ema::copy_to_params() {
  for (Entry& e : params_)
    if (e.size) std::memcpy(const_cast<void*>(e.param), e.avg.data(), e.avg.size());
}

std::vector<double> Ema::average(std::size_t i) const {
  const Entry& e = params_.at(i);
  std::vector<double> out(e.size);
  for (std::size_t k = 0; k < e.size; ++k)
    out[k] = e.dtype == DType::Float32 ? double(reinterpret_cast<const float*>(e.avg.data())[k])
                                       : reinterpret_cast<const double*>(e.avg.data())[k];
  return out;
}

}  // namespace pyopt
