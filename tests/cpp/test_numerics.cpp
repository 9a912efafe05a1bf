// Steps pyopt::Optimizer over several params of mixed sizes for 120 steps, on every available ISA,
// and compares params and state with the double-precision references in reference.hpp.
//
// Error measure, per element: |x − r| / max(|r|, 1e-2·max|r|), max over the tensor (a param or a
// state array). Elements at least 1/100 of the tensor's largest magnitude are measured purely
// relatively; elements that pass close to zero are measured against 1/100 of the tensor's scale,
// since their rounding error comes from the O(scale) terms that cancelled (with FMA on one side and
// not the other, a float64 element of 1e-5·scale differs by ~1e-11 relative, legitimately).
#include <pyopt/pyopt.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "harness.hpp"
#include "reference.hpp"

namespace {

using pyopt::DType;
using pyopt_test::Hyper;
using pyopt_test::RefTensor;

constexpr double kTolF64 = 1e-12;       // vs the reference, float64 params
constexpr double kTolF32 = 1e-4;        // vs the reference, float32 params
constexpr double kPathTolF64 = 1e-13;   // between ISA paths / thread counts, float64
constexpr double kPathTolF32 = 2e-5;    // between ISA paths / thread counts, float32
constexpr double kFloorFraction = 1e-2;

struct Config {
  std::string optimizer;
  Hyper hyper;  // passed to pyopt; anything omitted takes pyopt's default (the reference: RULES.md's)
  std::vector<DType> dtypes;  // one per param
  std::vector<std::size_t> sizes = {1, 7, 17, 1023, 100003};
  std::vector<double> grad_scale = {1.0, 0.01, 3.0, 1e-3, 0.5};
  int steps = 120;
  int lr_change_step = 60;  // before this step: set("lr", get("lr") * lr_factor)
  double lr_factor = 0.5;
  uint32_t seed = 20240611u;
};

// Some params get a nullptr grad on some steps: their own step counter must then lag behind.
bool skipped(int step, std::size_t param) { return (param == 1 && step % 7 == 3) || (param == 3 && step % 11 == 5); }

double round_to(DType d, double x) { return d == DType::Float32 ? double(float(x)) : x; }

// Deterministic values for (step, param): uniform in (−scale, scale), ~1/64 of them exactly 0
// (grads only), rounded to the param's dtype. step 0 gives the initial params.
std::vector<double> make_values(uint32_t seed, uint32_t step, uint32_t param, std::size_t n, double scale, DType d) {
  std::seed_seq seq{seed, step, param};
  std::mt19937 rng(seq);
  std::vector<double> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    const double u = (double(rng()) + 0.5) / 4294967296.0 * 2.0 - 1.0;
    const bool zero = step > 0 && (rng() & 63u) == 0;
    out[i] = zero ? 0.0 : round_to(d, u * scale);
  }
  return out;
}

std::vector<std::string> slot_names(const Config& c) {
  const Hyper h = [&] {
    Hyper r = pyopt_test::rules_md_defaults(c.optimizer);
    for (const auto& [k, v] : c.hyper) r[k] = v;
    return r;
  }();
  if (pyopt_test::reference_rule(c.optimizer) == "adam") {
    std::vector<std::string> s = {"exp_avg", "exp_avg_sq"};
    if (h.at("amsgrad") != 0.0) s.push_back("max_exp_avg_sq");
    return s;
  }
  if (h.at("momentum") != 0.0) return {"momentum_buffer"};
  return {};
}

struct Result {
  std::vector<std::vector<double>> params;
  std::vector<std::map<std::string, std::vector<double>>> state;
  std::vector<int64_t> steps;
};

Result run_reference(const Config& c) {
  Hyper h = pyopt_test::rules_md_defaults(c.optimizer);
  for (const auto& [k, v] : c.hyper) h[k] = v;
  const std::size_t n = c.sizes.size();
  std::vector<RefTensor> t(n);
  for (std::size_t i = 0; i < n; ++i) t[i].p = make_values(c.seed, 0, uint32_t(i), c.sizes[i], 1.0, c.dtypes[i]);
  for (int s = 1; s <= c.steps; ++s) {
    if (s == c.lr_change_step) h["lr"] *= c.lr_factor;
    for (std::size_t i = 0; i < n; ++i) {
      if (skipped(s, i)) continue;
      const auto g = make_values(c.seed, uint32_t(s), uint32_t(i), c.sizes[i], c.grad_scale[i], c.dtypes[i]);
      pyopt_test::ref_step(c.optimizer, t[i], g, h);
    }
  }
  Result r;
  for (auto& x : t) {
    r.params.push_back(x.p);
    r.state.push_back(x.state);
    r.steps.push_back(x.t);
  }
  return r;
}

Result run_pyopt(const Config& c, const std::string& isa, int threads) {
  pyopt::set_isa(isa);
  CHECK_MSG(pyopt::isa() == isa, "set_isa(" << isa << ") left isa() = " << pyopt::isa());
  pyopt::set_num_threads(threads);
  pyopt::Optimizer opt(c.optimizer, c.hyper);
  const std::size_t n = c.sizes.size();
  std::vector<std::vector<float>> pf(n), gf(n);
  std::vector<std::vector<double>> pd(n), gd(n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto init = make_values(c.seed, 0, uint32_t(i), c.sizes[i], 1.0, c.dtypes[i]);
    std::size_t index;
    if (c.dtypes[i] == DType::Float32) {
      pf[i].assign(init.begin(), init.end());
      gf[i].resize(c.sizes[i]);
      index = opt.add_param(pf[i].data(), pf[i].size());
    } else {
      pd[i] = init;
      gd[i].resize(c.sizes[i]);
      index = opt.add_param(pd[i].data(), pd[i].size());
    }
    CHECK(index == i);
  }
  for (int s = 1; s <= c.steps; ++s) {
    if (s == c.lr_change_step) opt.set("lr", opt.get("lr") * c.lr_factor);
    std::vector<pyopt::GradRef> grads;
    for (std::size_t i = 0; i < n; ++i) {
      if (skipped(s, i)) {
        grads.emplace_back(nullptr);
        continue;
      }
      const auto g = make_values(c.seed, uint32_t(s), uint32_t(i), c.sizes[i], c.grad_scale[i], c.dtypes[i]);
      if (c.dtypes[i] == DType::Float32) {
        std::copy(g.begin(), g.end(), gf[i].begin());
        grads.emplace_back(gf[i].data());
      } else {
        std::copy(g.begin(), g.end(), gd[i].begin());
        grads.emplace_back(gd[i].data());
      }
    }
    opt.step(grads);
  }
  Result r;
  const auto slots = slot_names(c);
  for (std::size_t i = 0; i < n; ++i) {
    if (c.dtypes[i] == DType::Float32)
      r.params.emplace_back(pf[i].begin(), pf[i].end());
    else
      r.params.push_back(pd[i]);
    std::map<std::string, std::vector<double>> st;
    for (const auto& name : slots) st[name] = opt.state(i, name);
    r.state.push_back(st);
    r.steps.push_back(opt.step_count(i));
  }
  return r;
}

struct Err {
  double max = 0.0;
  std::size_t index = 0;
  double got = 0.0, want = 0.0;
};

Err max_error(const std::vector<double>& got, const std::vector<double>& want, const std::string& what) {
  CHECK_MSG(got.size() == want.size(), what << ": size " << got.size() << " != " << want.size());
  double scale = 0.0;
  for (double w : want) scale = std::max(scale, std::fabs(w));
  const double floor = scale > 0.0 ? kFloorFraction * scale : 1e-300;
  Err e;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(got[i] - want[i]) / std::max(std::fabs(want[i]), floor);
    CHECK_MSG(std::isfinite(got[i]), what << "[" << i << "] = " << got[i] << " is not finite");
    if (!(err <= e.max)) e = {err, i, got[i], want[i]};
  }
  return e;
}

// Compares two results tensor by tensor; returns the max error per dtype {f32, f64}.
std::pair<double, double> compare(const Result& got, const Result& want, const Config& c, double tol32,
                                  double tol64, const std::string& label) {
  double worst[2] = {0.0, 0.0};
  for (std::size_t i = 0; i < c.sizes.size(); ++i) {
    const int d = int(c.dtypes[i]);
    const double tol = c.dtypes[i] == DType::Float32 ? tol32 : tol64;
    CHECK_MSG(got.steps[i] == want.steps[i],
              label << ": param " << i << " step_count " << got.steps[i] << ", expected " << want.steps[i]);
    auto check = [&](const std::vector<double>& g, const std::vector<double>& w, const std::string& what) {
      const std::string name = label + ": param " + std::to_string(i) + " (size " + std::to_string(c.sizes[i]) +
                               ", " + (d == 0 ? "float32" : "float64") + ") " + what;
      const Err e = max_error(g, w, name);
      char buf[160];
      std::snprintf(buf, sizeof buf, " rel error %.3g > %.3g at [%zu]: got %.17g, expected %.17g", e.max, tol,
                    e.index, e.got, e.want);
      CHECK_MSG(e.max <= tol, name << buf);
      worst[d] = std::max(worst[d], e.max);
    };
    check(got.params[i], want.params[i], "param");
    for (const auto& [slot, w] : want.state[i]) {
      auto it = got.state[i].find(slot);
      CHECK_MSG(it != got.state[i].end(), label << ": no state " << slot);
      check(it->second, w, "state " + slot);
    }
  }
  return {worst[0], worst[1]};
}

void print_errors(const char* what, std::pair<double, double> e, const Config& c) {
  const bool has32 = std::count(c.dtypes.begin(), c.dtypes.end(), DType::Float32) > 0;
  const bool has64 = std::count(c.dtypes.begin(), c.dtypes.end(), DType::Float64) > 0;
  std::printf("  %-34s", what);
  if (has32) std::printf("  float32 max rel err %.3e", e.first);
  if (has64) std::printf("  float64 max rel err %.3e", e.second);
  std::printf("\n");
}

// The whole check for one configuration: every ISA against the reference, every ISA against the
// first, and (on the best ISA) 1 thread against several.
void check_config(const Config& c) {
  CHECK(c.dtypes.size() == c.sizes.size());
  const int saved_threads = pyopt::num_threads();
  const std::string saved_isa = pyopt::isa();
  const Result want = run_reference(c);
  const auto isas = pyopt::isa_available();
  CHECK(!isas.empty());
  std::vector<Result> per_isa;
  for (const auto& isa : isas) {
    per_isa.push_back(run_pyopt(c, isa, saved_threads));
    const auto e = compare(per_isa.back(), want, c, kTolF32, kTolF64, isa + " vs reference");
    print_errors((isa + " vs reference").c_str(), e, c);
  }
  for (std::size_t k = 1; k < isas.size(); ++k) {
    const auto e = compare(per_isa[k], per_isa[0], c, kPathTolF32, kPathTolF64, isas[k] + " vs " + isas[0]);
    print_errors((isas[k] + " vs " + isas[0]).c_str(), e, c);
  }
  // Threads split the concatenated params into chunks; each element's arithmetic must not depend on it.
  const Result one = run_pyopt(c, isas.back(), 1);
  const Result three = run_pyopt(c, isas.back(), 3);
  const auto e1 = compare(one, per_isa.back(), c, kPathTolF32, kPathTolF64, isas.back() + " 1 thread");
  const auto e3 = compare(three, one, c, kPathTolF32, kPathTolF64, isas.back() + " 3 threads vs 1");
  print_errors((isas.back() + " 1 thread vs default").c_str(), e1, c);
  print_errors((isas.back() + " 3 threads vs 1 thread").c_str(), e3, c);
  pyopt::set_num_threads(saved_threads);
  pyopt::set_isa(saved_isa);
}

std::vector<DType> all(DType d) { return std::vector<DType>(5, d); }

}  // namespace

PYOPT_TEST(adam_f64) { check_config({"adam", {{"lr", 5e-3}}, all(DType::Float64)}); }
PYOPT_TEST(adam_f32) { check_config({"adam", {{"lr", 5e-3}}, all(DType::Float32)}); }

// adam with coupled L2 decay and amsgrad, through the "amsgrad" name.
PYOPT_TEST(amsgrad_coupled_wd_f64) {
  check_config({"amsgrad", {{"lr", 5e-3}, {"weight_decay", 0.05}, {"beta2", 0.99}}, all(DType::Float64)});
}
PYOPT_TEST(amsgrad_coupled_wd_f32) {
  check_config({"amsgrad", {{"lr", 5e-3}, {"weight_decay", 0.05}, {"beta2", 0.99}}, all(DType::Float32)});
}

// adamw: decoupled decay; the f32 case relies on the default weight_decay = 1e-2.
PYOPT_TEST(adamw_f64) { check_config({"adamw", {{"lr", 1e-2}, {"weight_decay", 0.1}}, all(DType::Float64)}); }
PYOPT_TEST(adamw_f32) { check_config({"adamw", {{"lr", 1e-2}}, all(DType::Float32)}); }

// float32 and float64 params in one optimizer: one kernel call per dtype per step.
PYOPT_TEST(adamw_mixed_dtypes) {
  check_config({"adamw",
                {{"lr", 1e-2}, {"weight_decay", 0.1}, {"amsgrad", 1.0}},
                {DType::Float32, DType::Float64, DType::Float32, DType::Float64, DType::Float32}});
}

PYOPT_TEST(sgd_nesterov_wd_f64) {
  check_config({"sgd", {{"lr", 1e-2}, {"momentum", 0.9}, {"nesterov", 1.0}, {"weight_decay", 1e-2}},
                all(DType::Float64)});
}
PYOPT_TEST(sgd_nesterov_wd_f32) {
  check_config({"sgd", {{"lr", 1e-2}, {"momentum", 0.9}, {"nesterov", 1.0}, {"weight_decay", 1e-2}},
                all(DType::Float32)});
}
// Heavy-ball momentum with dampening, through the "momentum" name (momentum = 0.9 by default).
PYOPT_TEST(sgd_momentum_dampening_f64) {
  check_config({"momentum", {{"lr", 1e-2}, {"dampening", 0.1}, {"weight_decay", 1e-3}}, all(DType::Float64)});
}
