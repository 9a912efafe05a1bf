// pyopt::Optimizer over float16/bfloat16 params (uint16_t buffers) and its storage options: the
// 16-bit step equals "upcast, float32 step, round to nearest even", master weights follow the
// float32 trajectory bit for bit, the bookkeeping of bfloat16 / 8-bit states, and errors that
// leave everything as it was.
#include <pyopt/driver/storage.hpp>  // float16 conversions of the model
#include <pyopt/pyopt.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "harness.hpp"

namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Written out here (not the library's conversion): bfloat16 is the top half of a float32, rounded
// to nearest even; no NaN occurs in these tests.
uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
float from_bf16(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Deterministic values in about [-scale, scale].
std::vector<float> wave(std::size_t n, double phase, double scale) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = float(scale * std::sin(0.37 * double(i) + phase) * (1.0 + 0.001 * double(i % 97)));
  return v;
}

std::vector<uint16_t> bf16_of(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = to_bf16(v[i]);
  return out;
}

struct IsaGuard {  // restores the ISA and thread count a case changed
  std::string isa = pyopt::isa();
  int threads = pyopt::num_threads();
  ~IsaGuard() {
    pyopt::set_isa(isa);
    pyopt::set_num_threads(threads);
  }
};

const std::size_t kSizes[] = {0, 1, 17, 1000, 5000, 40000};  // 40000: more than one thread's chunk

}  // namespace

// bfloat16 params with float32 states, bfloat16 or float32 grads, every ISA path and 1 or 2
// threads: each step equals the float32 optimizer on the upcast param, rounded to nearest even.
PYOPT_TEST(storage_bf16_params_equal_upcast_step_round) {
  IsaGuard guard;
  for (const std::string& isa : pyopt::isa_available())
    for (int threads : {1, 2})
      for (bool grad16 : {true, false}) {
        pyopt::set_isa(isa);
        pyopt::set_num_threads(threads);
        const std::map<std::string, double> hyper = {{"lr", 0.01}, {"weight_decay", 0.1}};
        pyopt::Optimizer opt("adamw", hyper), model("adamw", hyper);
        std::vector<std::vector<uint16_t>> params, expected;
        std::vector<std::vector<float>> model_params;
        for (std::size_t n : kSizes) {
          params.push_back(bf16_of(wave(n, 0.5 * double(params.size()), 1.0)));
          expected.push_back(params.back());
          model_params.emplace_back(n);
        }
        for (std::size_t k = 0; k < params.size(); ++k) {
          opt.add_param(params[k].data(), params[k].size(), pyopt::Storage::BFloat16);
          model.add_param(model_params[k].data(), model_params[k].size());
        }
        for (int t = 0; t < 3; ++t) {
          std::vector<std::vector<float>> grads32;
          std::vector<std::vector<uint16_t>> grads16;
          std::vector<pyopt::GradRef> refs, model_refs;
          for (std::size_t k = 0; k < params.size(); ++k) {
            grads32.push_back(wave(params[k].size(), 3.0 + t + double(k), 2.0));
            grads16.push_back(bf16_of(grads32.back()));
            if (grad16)  // the model sees the gradient the optimizer sees: its float32 value
              for (std::size_t i = 0; i < grads32[k].size(); ++i) grads32[k][i] = from_bf16(grads16[k][i]);
          }
          for (std::size_t k = 0; k < params.size(); ++k) {
            if (grad16)
              refs.emplace_back(grads16[k].data(), pyopt::Storage::BFloat16);
            else
              refs.emplace_back(grads32[k].data());
            model_refs.emplace_back(grads32[k].data());
            for (std::size_t i = 0; i < params[k].size(); ++i) model_params[k][i] = from_bf16(expected[k][i]);
          }
          opt.step(refs);
          model.step(model_refs);
          for (std::size_t k = 0; k < params.size(); ++k)
            for (std::size_t i = 0; i < params[k].size(); ++i) expected[k][i] = to_bf16(model_params[k][i]);
        }
        for (std::size_t k = 0; k < params.size(); ++k) {
          CHECK_MSG(params[k] == expected[k], isa << " threads " << threads << " grad16 " << grad16 << " size "
                                                  << params[k].size());
          CHECK(opt.state(k, "exp_avg_sq") == model.state(k, "exp_avg_sq"));
        }
        CHECK(opt.step_count(3) == 3);
      }
}

// float16 params: the same model with float16 rounding (the library's conversion, which the
// Python tests check against numpy for every value class).
PYOPT_TEST(storage_f16_params_step_and_round) {
  const std::size_t n = 5000;
  std::vector<float> start = wave(n, 0.1, 1.0);
  std::vector<uint16_t> param(n);
  for (std::size_t i = 0; i < n; ++i) param[i] = pyopt::storage::float_to_f16(start[i]);
  std::vector<float> model_param(n);
  pyopt::Optimizer opt("lion", {{"lr", 0.01}}), model("lion", {{"lr", 0.01}});
  opt.add_param(param.data(), {50, 100}, pyopt::Storage::Float16);
  model.add_param(model_param.data(), n);
  for (int t = 0; t < 3; ++t) {
    std::vector<uint16_t> g16(n);
    std::vector<float> g = wave(n, 1.0 + t, 3.0);
    for (std::size_t i = 0; i < n; ++i) {
      g16[i] = pyopt::storage::float_to_f16(g[i]);
      g[i] = pyopt::storage::f16_to_float(g16[i]);
      model_param[i] = pyopt::storage::f16_to_float(param[i]);
    }
    std::vector<uint16_t> before = param;
    opt.step({pyopt::GradRef(g16.data(), pyopt::Storage::Float16)});
    model.step({g.data()});
    for (std::size_t i = 0; i < n; ++i)
      CHECK_MSG(param[i] == pyopt::storage::float_to_f16(model_param[i]), "step " << t << " element " << i);
    CHECK(param != before);
  }
}

// Which slots are stored how, for each state_dtype (StorageOptions), and fresh states.
PYOPT_TEST(storage_options_choose_slot_storage) {
  using pyopt::Storage;
  std::vector<uint16_t> big(4096), small(4095);
  std::vector<float> big32(5000);
  std::vector<double> big64(5000);
  auto build = [&](pyopt::StateDType d) {
    pyopt::StorageOptions storage;
    storage.state_dtype = d;
    pyopt::Optimizer opt("adam", {{"amsgrad", 1}}, storage);
    opt.add_param(big.data(), big.size(), Storage::BFloat16);
    opt.add_param(small.data(), small.size(), Storage::Float16);
    opt.add_param(big32.data(), big32.size());
    opt.add_param(big64.data(), big64.size());
    return opt;
  };
  const char* slots[] = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
  {
    const pyopt::Optimizer opt = build(pyopt::StateDType::Float32);
    for (const char* s : slots) {
      CHECK(opt.raw_state(0, s).storage == Storage::Compute && opt.raw_state(0, s).size == 4096);
      CHECK(opt.raw_state(3, s).storage == Storage::Compute);
    }
  }
  {
    const pyopt::Optimizer opt = build(pyopt::StateDType::BFloat16);
    for (const char* s : slots) {
      for (std::size_t i : {0, 1, 2}) CHECK(opt.raw_state(i, s).storage == Storage::BFloat16);
      CHECK(opt.raw_state(3, s).storage == Storage::Compute);  // float64 params keep float64 states
      CHECK(opt.state(2, s) == std::vector<double>(5000, 0.0));
    }
  }
  {
    const pyopt::Optimizer opt = build(pyopt::StateDType::Int8);
    CHECK(opt.raw_state(0, "exp_avg").storage == Storage::Int8Signed);
    CHECK(opt.raw_state(0, "exp_avg_sq").storage == Storage::Int8Unsigned);
    CHECK(opt.raw_state(0, "max_exp_avg_sq").storage == Storage::Int8Unsigned);
    CHECK(opt.raw_state(2, "exp_avg").storage == Storage::Int8Signed);
    for (const char* s : slots) {
      const pyopt::RawState r = opt.raw_state(0, s);
      CHECK(r.size == 4096 && r.absmax_size == 16 && opt.raw_state(2, s).absmax_size == 20);  // ceil(5000 / 256)
      const auto* codes = static_cast<const uint8_t*>(r.data);
      for (std::size_t i = 0; i < r.size; ++i) CHECK(codes[i] == 0);  // bitsandbytes' fresh state
      for (std::size_t b = 0; b < r.absmax_size; ++b) CHECK(r.absmax[b] == 0.0f);
      CHECK(opt.state(0, s) == std::vector<double>(4096, 0.0));
      CHECK(opt.raw_state(1, s).storage == Storage::Compute);  // under kMin8bitSize
      CHECK(opt.raw_state(3, s).storage == Storage::Compute);  // float64
    }
  }
  // A nonzero initial value is quantized: adagrad's sum starts at initial_accumulator_value.
  pyopt::StorageOptions int8;
  int8.state_dtype = pyopt::StateDType::Int8;
  pyopt::Optimizer adagrad("adagrad", {{"initial_accumulator_value", 0.25}}, int8);
  adagrad.add_param(big.data(), big.size(), Storage::BFloat16);
  const pyopt::RawState r = adagrad.raw_state(0, "sum");
  CHECK(r.storage == Storage::Int8Unsigned && r.absmax[0] == 0.25f && static_cast<const uint8_t*>(r.data)[7] == 255);
  CHECK(adagrad.state(0, "sum") == std::vector<double>(4096, 0.25));
  // bfloat16 states of a nonzero initial value: its nearest bfloat16.
  pyopt::StorageOptions bf16;
  bf16.state_dtype = pyopt::StateDType::BFloat16;
  pyopt::Optimizer adagrad16("adagrad", {{"initial_accumulator_value", 0.1}}, bf16);
  adagrad16.add_param(big.data(), 3, Storage::BFloat16);
  CHECK(static_cast<const uint16_t*>(adagrad16.raw_state(0, "sum").data)[2] == to_bf16(0.1f));
  CHECK(adagrad16.state(0, "sum") == std::vector<double>(3, double(from_bf16(to_bf16(0.1f)))));
}

// The master copy: taken from the param when it first steps, none for float32 params.
PYOPT_TEST(storage_master_weights_bookkeeping) {
  pyopt::StorageOptions storage;
  storage.master_weights = true;
  pyopt::Optimizer opt("sgd", {{"lr", 0.5}}, storage);
  std::vector<uint16_t> w = bf16_of({1.0f, -2.0f, 3.5f});
  std::vector<float> w32 = {1.0f, 2.0f};
  opt.add_param(w.data(), w.size(), pyopt::Storage::BFloat16);
  opt.add_param(w32.data(), w32.size());
  CHECK(opt.master(0).empty() && opt.master(1).empty());
  w[0] = to_bf16(4.0f);  // the caller may still set the param before its first step
  std::vector<float> g = {1.0f, 1.0f, 1.0f};
  opt.step({g.data(), g.data()});
  CHECK((opt.master(0) == std::vector<float>{3.5f, -2.5f, 3.0f}));
  CHECK(opt.master(1).empty());
  CHECK(opt.param_storage(0) == pyopt::Storage::BFloat16 && opt.param_storage(1) == pyopt::Storage::Compute);
}

PYOPT_TEST(storage_errors_change_nothing) {
  using pyopt::Storage;
  pyopt::StorageOptions int8;
  int8.state_dtype = pyopt::StateDType::Int8;
  std::string msg = CHECK_THROWS(std::invalid_argument, pyopt::Optimizer("adadelta", {}, int8));
  CHECK_MSG(contains(msg, "adadelta has no 8-bit states") && contains(msg, "adamw"), msg);
  pyopt::StorageOptions bf16_states;
  bf16_states.state_dtype = pyopt::StateDType::BFloat16;
  msg = CHECK_THROWS(std::invalid_argument, pyopt::Optimizer("lamb", {}, bf16_states));
  CHECK_MSG(contains(msg, "lamb keeps float32 states only"), msg);
  pyopt::StorageOptions bad;
  bad.state_dtype = pyopt::StateDType(7);
  CHECK_THROWS(std::invalid_argument, pyopt::Optimizer("adam", {}, bad));
  CHECK(pyopt::parse_state_dtype("bfloat16") == pyopt::StateDType::BFloat16);
  msg = CHECK_THROWS(std::invalid_argument, pyopt::parse_state_dtype("int4"));
  CHECK_MSG(contains(msg, "int4"), msg);

  pyopt::Optimizer opt("adam", {{"lr", 0.1}});
  std::vector<uint16_t> a(8, to_bf16(1.0f)), b(8, 0x3c00 /* float16 1.0 */);
  std::vector<float> c(8, 1.0f);
  for (Storage kind : {Storage::Compute, Storage::Int8Signed, Storage::Int8Unsigned}) {
    msg = CHECK_THROWS(std::invalid_argument, opt.add_param(a.data(), a.size(), kind));
    CHECK_MSG(contains(msg, "Float16") && contains(msg, "BFloat16"), msg);
  }
  CHECK(opt.num_params() == 0);
  opt.add_param(a.data(), a.size(), Storage::BFloat16);
  opt.add_param(b.data(), b.size(), Storage::Float16);
  opt.add_param(c.data(), c.size());
  // 16-bit params take two bytes per element when checking overlaps.
  msg = CHECK_THROWS(std::invalid_argument, opt.add_param(reinterpret_cast<float*>(a.data() + 6), 1));
  CHECK_MSG(contains(msg, "overlaps param 0"), msg);
  CHECK(opt.num_params() == 3);

  const std::vector<uint16_t> a0 = a, b0 = b;
  const std::vector<float> c0 = c;
  std::vector<uint16_t> g16(8, to_bf16(0.5f));
  std::vector<float> g32(8, 0.5f);
  std::vector<double> g64(8, 0.5);
  auto check_unchanged = [&] {
    CHECK(a == a0 && b == b0 && c == c0);
    for (std::size_t i = 0; i < 3; ++i) CHECK(opt.step_count(i) == 0);
    CHECK(opt.master(0).empty());
  };
  // A bfloat16 gradient for the float16 param, float64 for a 16-bit param, 16-bit for float32.
  msg = CHECK_THROWS(std::invalid_argument,
                     opt.step({g32.data(), pyopt::GradRef(g16.data(), Storage::BFloat16), g32.data()}));
  CHECK_MSG(contains(msg, "gradient 1 is bfloat16 but its param is float16 (pass float16 or float32)"), msg);
  check_unchanged();
  msg = CHECK_THROWS(std::invalid_argument, opt.step({g64.data(), g32.data(), g32.data()}));
  CHECK_MSG(contains(msg, "gradient 0 is float64 but its param is bfloat16"), msg);
  msg = CHECK_THROWS(std::invalid_argument,
                     opt.step({g32.data(), g32.data(), pyopt::GradRef(g16.data(), Storage::BFloat16)}));
  CHECK_MSG(contains(msg, "gradient 2 is bfloat16 but its param is float32"), msg);
  msg = CHECK_THROWS(std::invalid_argument,
                     opt.step({pyopt::GradRef(g16.data(), Storage::Int8Signed), g32.data(), g32.data()}));
  CHECK_MSG(contains(msg, "gradient 0 is int8"), msg);
  // A 16-bit gradient overlapping a param: its two bytes per element count.
  msg = CHECK_THROWS(std::invalid_argument,
                     opt.step({g32.data(), pyopt::GradRef(a.data() + 7, Storage::Float16), g32.data()}));
  CHECK_MSG(contains(msg, "gradient 1 overlaps param 0"), msg);
  check_unchanged();
  opt.step({pyopt::GradRef(g16.data(), Storage::BFloat16), g32.data(), g32.data()});
  CHECK(a != a0 && b != b0 && c != c0);
}

// master_weights: the master follows the float32 optimizer on the same gradients bit for bit (every
// ISA path, 1 and 2 threads, bfloat16 or float32 gradients), and the param is the master rounded.
PYOPT_TEST(storage_master_trajectory_equals_float32) {
  IsaGuard guard;
  pyopt::StorageOptions storage;
  storage.master_weights = true;
  for (const std::string& isa : pyopt::isa_available())
    for (int threads : {1, 2}) {
      pyopt::set_isa(isa);
      pyopt::set_num_threads(threads);
      const std::size_t n = 40000;
      const std::map<std::string, double> hyper = {{"lr", 0.003}, {"weight_decay", 0.1}, {"amsgrad", 1}};
      pyopt::Optimizer opt("adamw", hyper, storage), reference("adamw", hyper);
      std::vector<uint16_t> param = bf16_of(wave(n, 0.3, 1.0));
      std::vector<float> param32(n);
      for (std::size_t i = 0; i < n; ++i) param32[i] = from_bf16(param[i]);
      opt.add_param(param.data(), param.size(), pyopt::Storage::BFloat16);
      reference.add_param(param32.data(), param32.size());
      for (int t = 0; t < 4; ++t) {
        std::vector<float> g = wave(n, 1.0 + t, 1.5);
        std::vector<uint16_t> g16 = bf16_of(g);
        if (t % 2) {
          for (std::size_t i = 0; i < n; ++i) g[i] = from_bf16(g16[i]);
          opt.step({pyopt::GradRef(g16.data(), pyopt::Storage::BFloat16)});
        } else {
          opt.step({g.data()});
        }
        reference.step({g.data()});
        CHECK_MSG(opt.master(0) == param32, isa << " threads " << threads << " step " << t);
        CHECK(bf16_of(param32) == param);
      }
      CHECK(opt.state(0, "max_exp_avg_sq") == reference.state(0, "max_exp_avg_sq"));
    }
}

// 8-bit states: the moments stay within quantization noise (5% of their block's absmax) of the
// float32 optimizer's, and so does the param. (The exact "dequantize, float32 step, quantize" model
// is checked in tests/python/test_storage_options.py on every ISA path.)
PYOPT_TEST(storage_int8_states_step_within_quantization_noise) {
  pyopt::StorageOptions storage;
  storage.state_dtype = pyopt::StateDType::Int8;
  const std::size_t n = 5000;
  pyopt::Optimizer opt("adamw", {{"lr", 0.01}}, storage), reference("adamw", {{"lr", 0.01}});
  std::vector<float> w = wave(n, 0.2, 1.0), w32 = w;
  opt.add_param(w.data(), w.size());
  reference.add_param(w32.data(), w32.size());
  for (int t = 0; t < 5; ++t) {
    const std::vector<float> g = wave(n, 2.0 + t, 1.0);
    opt.step({g.data()});
    reference.step({g.data()});
  }
  for (const char* slot : {"exp_avg", "exp_avg_sq"}) {
    const std::vector<double> q = opt.state(0, slot), r = reference.state(0, slot);
    const pyopt::RawState raw = opt.raw_state(0, slot);
    CHECK(raw.absmax_size == 20);
    for (std::size_t i = 0; i < n; ++i) {
      const double absmax = raw.absmax[i / 256];
      CHECK_MSG(std::fabs(q[i] - r[i]) <= 0.05 * absmax, slot << " element " << i << ": " << q[i] << " vs " << r[i]);
    }
  }
  double max_diff = 0.0;
  for (std::size_t i = 0; i < n; ++i) max_diff = std::max(max_diff, double(std::fabs(w[i] - w32[i])));
  CHECK_MSG(max_diff > 0.0 && max_diff < 0.01, max_diff);  // 5 steps of lr 0.01: noise, not divergence
}

// stochastic_rounding: the same bits for 1 and 2 threads and on every run (seeded by param index
// and step), not the round-to-nearest result, and unbiased on average.
PYOPT_TEST(storage_stochastic_rounding_is_deterministic) {
  IsaGuard guard;
  pyopt::StorageOptions storage;
  storage.stochastic_rounding = true;
  const std::size_t n = 40000;
  std::vector<std::vector<uint16_t>> results;
  for (int threads : {1, 2, 1}) {
    pyopt::set_num_threads(threads);
    pyopt::Optimizer opt("sgd", {{"lr", 1e-3}}, storage);
    std::vector<uint16_t> w(n, to_bf16(1.0f));
    opt.add_param(w.data(), w.size(), pyopt::Storage::BFloat16);
    const std::vector<float> g(n, 1.0f);  // 1 − 1e-3: between the bfloat16 neighbours 0.99609375 and 1
    opt.step({g.data()});
    results.push_back(w);
  }
  CHECK(results[0] == results[1] && results[0] == results[2]);
  double mean = 0.0;
  for (uint16_t h : results[0]) mean += double(from_bf16(h));
  mean /= double(n);
  // Round to nearest gives 1.0 everywhere; the stochastic mean is 0.999 within a few standard errors.
  const double sd = std::sqrt((1.0 - 0.999) * (0.999 - 0.99609375) / double(n));
  CHECK_MSG(std::fabs(mean - double(1.0f - 1e-3f)) < 6 * sd, mean);
}

// best.json of `pyopt tune --precision`: its "storage" reaches the optimizer (make_optimizer).
PYOPT_TEST(storage_options_from_config) {
  pyopt::Optimizer opt = pyopt::make_optimizer_from_json(
      R"({"optimizer": "adamw", "hyperparameters": {"lr": 0.01}, "storage": {"master_weights": true, "state_dtype": "int8"}})");
  CHECK(opt.storage().master_weights && opt.storage().state_dtype == pyopt::StateDType::Int8 &&
        !opt.storage().stochastic_rounding);
  CHECK(!pyopt::make_optimizer_from_json(R"({"optimizer": "adamw"})").storage().master_weights);
  for (const char* bad : {R"("int8")", R"({"state_dtype": "int4"})", R"({"master_weights": 1})", R"({"fast": true})"}) {
    const std::string msg = CHECK_THROWS(std::invalid_argument, pyopt::make_optimizer_from_json(
                                                                    std::string(R"({"optimizer": "adam", "storage": )") + bad + "}"));
    CHECK_MSG(contains(msg, "make_optimizer: bad 'storage'"), msg);
  }
  const std::string msg = CHECK_THROWS(std::invalid_argument, pyopt::make_optimizer_from_json(
                                                                  R"({"optimizer": "adadelta", "storage": {"state_dtype": "int8"}})"));
  CHECK_MSG(contains(msg, "adadelta has no 8-bit states"), msg);
}
