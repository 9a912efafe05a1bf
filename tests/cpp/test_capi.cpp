// The C API (pyopt/capi.h) through its header, as a C or Cython extension calls it (the table
// taken from the library here, not from the Python capsule): the same bits as pyopt::Optimizer,
// errors as -1 / NULL with the calling thread's message, nothing thrown across the boundary.
#include <pyopt/capi.h>
#include <pyopt/pyopt.hpp>

#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"

namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

void import_table() { CHECK(pyopt_import_capi_from(pyopt_capi_table()) == 0); }

template <class T>
std::vector<T> ramp(std::size_t n, double start, double step) {
  std::vector<T> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = T(start + step * double(i));
  return v;
}

template <class T>
bool bitwise_equal(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

}  // namespace

PYOPT_TEST(capi_steps_equal_the_cpp_optimizer) {
  import_table();
  const char* config = R"({"optimizer": "adamw", "hyperparameters": {"lr": 0.01, "betas": [0.8, 0.95]}})";
  // 40000 floats: the kernels' parallel path; a float64 param beside it.
  std::vector<float> a = ramp<float>(40000, -1.0, 5e-5), a_ref = a;
  std::vector<double> b = ramp<double>(9, 0.5, 0.25), b_ref = b;
  PyoptOptimizer* opt = pyopt_create(config);
  CHECK_MSG(opt != nullptr, pyopt_last_error());
  CHECK(pyopt_add_param_f32(opt, a.data(), a.size()) == 0);
  CHECK(pyopt_add_param_f64(opt, b.data(), b.size()) == 1);
  CHECK(pyopt_num_params(opt) == 2);
  pyopt::Optimizer ref = pyopt::make_optimizer_from_json(config);
  ref.add_param(a_ref.data(), a_ref.size());
  ref.add_param(b_ref.data(), b_ref.size());
  for (int s = 0; s < 4; ++s) {
    const std::vector<float> ga = ramp<float>(a.size(), 0.3 * s - 0.5, 1e-5);
    const std::vector<double> gb = ramp<double>(b.size(), 0.1 * s, -0.05);
    const double lr = 0.01 * (1.0 - 0.2 * s);
    CHECK(pyopt_set_hyperparameter(opt, "lr", lr) == 0);
    ref.set("lr", lr);
    CHECK(pyopt_set_num_threads(opt, s % 2 ? 1 : 2) == 0);  // the bits never depend on it
    const void* grads[2] = {ga.data(), s == 1 ? nullptr : gb.data()};
    CHECK_MSG(pyopt_step(opt, grads, 2) == 0, pyopt_last_error());
    ref.step({ga.data(), s == 1 ? nullptr : gb.data()});
    CHECK(bitwise_equal(a, a_ref) && bitwise_equal(b, b_ref));
  }
  double lr = 0;
  CHECK(pyopt_get_hyperparameter(opt, "lr", &lr) == 0 && lr == ref.get("lr"));
  CHECK(pyopt_step_count(opt, 0) == 4 && pyopt_step_count(opt, 1) == 3);
  CHECK(!bitwise_equal(a, ramp<float>(40000, -1.0, 5e-5)));
  pyopt_destroy(opt);
  pyopt_destroy(nullptr);
}

PYOPT_TEST(capi_errors_return_codes_and_messages) {
  import_table();
  CHECK(pyopt_create(R"({"optimizer": "adamx"})") == nullptr);
  CHECK_MSG(contains(pyopt_last_error(), "pyopt_create") && contains(pyopt_last_error(), "adamx"), pyopt_last_error());
  CHECK(pyopt_create(R"({"optimizer": "adamw", "hyperparameters": {"eps": -1}})") == nullptr);
  CHECK_MSG(contains(pyopt_last_error(), "eps"), pyopt_last_error());
  CHECK(pyopt_create("not json") == nullptr);
  CHECK(pyopt_create(nullptr) == nullptr);
  CHECK_MSG(contains(pyopt_last_error(), "NULL"), pyopt_last_error());

  PyoptOptimizer* opt = pyopt_create(R"({"optimizer": "lion"})");
  CHECK(opt != nullptr);
  std::vector<float> w(8, 1.0f);
  const std::vector<float> w0 = w;
  CHECK(pyopt_add_param_f32(opt, w.data(), w.size()) == 0);
  CHECK(pyopt_add_param_f32(opt, w.data() + 4, 4) == -1);
  CHECK_MSG(contains(pyopt_last_error(), "overlaps param 0"), pyopt_last_error());
  CHECK(pyopt_add_param_f32(opt, w.data(), SIZE_MAX / 2) == -1);
  CHECK_MSG(contains(pyopt_last_error(), "larger than any buffer"), pyopt_last_error());
  CHECK(pyopt_add_param_f64(opt, nullptr, 3) == -1);
  CHECK(pyopt_add_param_f32(nullptr, w.data(), 1) == -1);
  CHECK_MSG(contains(pyopt_last_error(), "the optimizer is NULL"), pyopt_last_error());
  CHECK(pyopt_num_params(opt) == 1);

  const void* two[2] = {w.data(), w.data()};
  CHECK(pyopt_step(opt, two, 2) == -1);
  CHECK_MSG(contains(pyopt_last_error(), "got 2 grads for 1 params"), pyopt_last_error());
  const void* aliasing[1] = {w.data()};  // a grad that is the param: refused before any write
  CHECK(pyopt_step(opt, aliasing, 1) == -1);
  CHECK(bitwise_equal(w, w0) && pyopt_step_count(opt, 0) == 0);

  double value = 0;
  CHECK(pyopt_set_hyperparameter(opt, "lr", -1.0) == -1);
  CHECK_MSG(contains(pyopt_last_error(), "lr"), pyopt_last_error());
  CHECK(pyopt_get_hyperparameter(opt, "no_such_name", &value) == -1);
  CHECK_MSG(contains(pyopt_last_error(), "no_such_name"), pyopt_last_error());
  CHECK(pyopt_get_hyperparameter(opt, "lr", nullptr) == -1);
  CHECK(pyopt_set_num_threads(opt, -2) == -1);
  CHECK(pyopt_step_count(opt, 1) == -1 && pyopt_step_count(opt, -1) == -1);
  pyopt_destroy(opt);
}

PYOPT_TEST(capi_last_error_is_per_thread) {
  import_table();
  CHECK(pyopt_create(R"({"optimizer": "adamx_main"})") == nullptr);
  std::string before, own;
  std::thread other([&] {
    before = pyopt_last_error();
    CHECK(pyopt_create(R"({"optimizer": "adamx_other"})") == nullptr);
    own = pyopt_last_error();
  });
  other.join();
  CHECK_MSG(before.empty(), before);
  CHECK_MSG(contains(own, "adamx_other"), own);
  CHECK_MSG(contains(pyopt_last_error(), "adamx_main"), pyopt_last_error());
}

PYOPT_TEST(capi_not_imported_fails_cleanly) {
  const PyoptCApi* saved = pyopt_capi;
  pyopt_capi = nullptr;
  const bool created = pyopt_create(R"({"optimizer": "adamw"})") != nullptr;
  const std::string message = pyopt_last_error();
  const int64_t added = pyopt_add_param_f32(nullptr, nullptr, 0);
  pyopt_capi = saved;
  CHECK(!created && added == -1);
  CHECK_MSG(contains(message, "pyopt_import_capi"), message);
  CHECK(pyopt_import_capi_from(nullptr) == -1);
  PyoptCApi old = *pyopt_capi_table();
  old.version = PYOPT_CAPI_VERSION - 1;  // a library older than this header
  CHECK(pyopt_import_capi_from(&old) == -1);
}

PYOPT_TEST(thread_count_scope_is_per_thread_and_restores) {
  const int global = pyopt::num_threads();
  {
    pyopt::ThreadCountScope one(1);
    CHECK(pyopt::num_threads() == 1);
    {
      pyopt::ThreadCountScope keep(0);  // 0: leaves the current count
      CHECK(pyopt::num_threads() == 1);
      pyopt::ThreadCountScope three(3);
      CHECK(pyopt::num_threads() == 3);
    }
    CHECK(pyopt::num_threads() == 1);
    int elsewhere = 0;
    std::thread other([&] { elsewhere = pyopt::num_threads(); });
    other.join();
    CHECK(elsewhere == global);
  }
  CHECK(pyopt::num_threads() == global);
  CHECK_THROWS(std::invalid_argument, pyopt::ThreadCountScope(-1));
}
