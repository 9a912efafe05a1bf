// The public C++ API's contract: errors, validation before any write, hyperparameter access,
// step counters and skipped params.
#include <pyopt/pyopt.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "harness.hpp"
#include "reference.hpp"

namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

template <class T>
bool bitwise_equal(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

std::vector<double> ramp(std::size_t n, double start, double step) {
  std::vector<double> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = start + step * double(i);
  return v;
}

// Relative error at most tol, measured against max(|r|, 1): these tensors are O(1).
bool near(double x, double r, double tol) { return std::fabs(x - r) <= tol * std::max(std::fabs(r), 1.0); }

bool all_zero(const std::vector<double>& v) {
  for (double x : v)
    if (x != 0.0) return false;
  return true;
}

}  // namespace

PYOPT_TEST(unknown_optimizer_name) {
  const std::string msg = CHECK_THROWS(std::invalid_argument, pyopt::Optimizer("adamx"));
  CHECK_MSG(contains(msg, "adamx"), msg);
  // Every registered name is listed, and at least the ones RULES.md describes are registered.
  for (const auto& spec : pyopt::optimizers()) CHECK_MSG(contains(msg, spec.name), "'" << spec.name << "' missing from: " << msg);
  for (const char* name : {"sgd", "momentum", "nag", "adagrad", "rmsprop", "adadelta", "adamax", "adam", "adamw",
                           "amsgrad", "nadam", "radam"})
    CHECK_MSG(contains(msg, std::string(name)), "'" << name << "' missing from: " << msg);
  CHECK_THROWS(std::invalid_argument, pyopt::Optimizer(""));
  CHECK_THROWS(std::invalid_argument, pyopt::Optimizer("Adam"));  // names are case-sensitive
  CHECK_THROWS(std::invalid_argument, pyopt::find_optimizer("adamx"));
  // The element-wise maps optimizers run besides their step (driver/map.hpp) are not optimizers.
  for (const char* internal : {"lerp", "sophia_hessian"}) {
    const std::string m = CHECK_THROWS(std::invalid_argument, pyopt::find_optimizer(internal));
    CHECK_MSG(contains(m, std::string("unknown optimizer '") + internal + "'"), m);
  }
}

PYOPT_TEST(unknown_hyperparameter) {
  const std::string msg = CHECK_THROWS(std::invalid_argument, pyopt::Optimizer("adam", {{"learning_rate", 1e-3}}));
  CHECK_MSG(contains(msg, "learning_rate"), msg);
  pyopt::Optimizer opt("sgd");
  CHECK_THROWS(std::invalid_argument, opt.get("beta1"));
  CHECK_THROWS(std::invalid_argument, opt.set("beta1", 0.5));
}

PYOPT_TEST(hyperparameter_out_of_range) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::string msg = CHECK_THROWS(std::invalid_argument, pyopt::Optimizer("adam", {{"lr", -1e-3}}));
  CHECK_MSG(contains(msg, "lr"), msg);
  msg = CHECK_THROWS(std::invalid_argument, pyopt::Optimizer("adam", {{"beta1", 1.0}}));
  CHECK_MSG(contains(msg, "beta1"), msg);
  msg = CHECK_THROWS(std::invalid_argument, pyopt::Optimizer("adamw", {{"beta2", 1.0}}));
  CHECK_MSG(contains(msg, "beta2"), msg);
  CHECK_THROWS(std::invalid_argument, pyopt::Optimizer("adam", {{"beta1", -0.1}}));
  CHECK_THROWS(std::invalid_argument, pyopt::Optimizer("adam", {{"eps", -1e-8}}));
  CHECK_THROWS(std::invalid_argument, pyopt::Optimizer("adam", {{"weight_decay", -1e-2}}));
  CHECK_THROWS(std::invalid_argument, pyopt::Optimizer("adam", {{"lr", nan}}));
  CHECK_THROWS(std::invalid_argument, pyopt::Optimizer("sgd", {{"lr", -1.0}}));
  CHECK_THROWS(std::invalid_argument, pyopt::Optimizer("sgd", {{"momentum", -0.9}}));
  // Nesterov requires momentum > 0 and dampening = 0.
  CHECK_THROWS(std::invalid_argument, pyopt::Optimizer("sgd", {{"nesterov", 1.0}}));
  CHECK_THROWS(std::invalid_argument, pyopt::Optimizer("nag", {{"dampening", 0.1}}));
  // The closed ends of the ranges are valid.
  pyopt::Optimizer ok("adam", {{"lr", 0.0}, {"beta1", 0.0}, {"beta2", 0.0}, {"eps", 0.0}});
  CHECK(ok.get("beta1") == 0.0);

  // set() validates too, and a rejected value leaves the old one in place.
  pyopt::Optimizer opt("adam", {{"lr", 2e-3}});
  msg = CHECK_THROWS(std::invalid_argument, opt.set("lr", -1.0));
  CHECK_MSG(contains(msg, "lr"), msg);
  CHECK(opt.get("lr") == 2e-3);
  CHECK_THROWS(std::invalid_argument, opt.set("beta1", 1.0));
  CHECK(opt.get("beta1") == 0.9);
  CHECK_THROWS(std::invalid_argument, opt.set("lr", nan));
  CHECK(opt.get("lr") == 2e-3);
  pyopt::Optimizer nag("nag");
  CHECK_THROWS(std::invalid_argument, nag.set("momentum", 0.0));
  CHECK(nag.get("momentum") == 0.9);
}

PYOPT_TEST(wrong_grad_count_leaves_params_untouched) {
  std::vector<float> a = {0.5f, -1.0f, 2.0f}, b = {1.0f};
  std::vector<double> c = ramp(33, -1.0, 0.0625);
  const std::vector<float> ga = {0.1f, 0.2f, -0.3f}, gb = {1.0f};
  const std::vector<double> gc = ramp(33, 0.3, -0.01);
  pyopt::Optimizer opt("adam", {{"lr", 0.1}});
  opt.add_param(a.data(), a.size());
  opt.add_param(b.data(), b.size());
  opt.add_param(c.data(), c.size());

  auto expect_rejected = [&](const std::vector<pyopt::GradRef>& grads) {
    const auto a0 = a, b0 = b;
    const auto c0 = c;
    const auto m0 = opt.state(2, "exp_avg");
    const auto v0 = opt.state(2, "exp_avg_sq");
    const int64_t t0 = opt.step_count(0);
    const std::string msg = CHECK_THROWS(std::invalid_argument, opt.step(grads));
    CHECK_MSG(contains(msg, "3"), msg);  // names the expected count
    CHECK(bitwise_equal(a, a0));
    CHECK(bitwise_equal(b, b0));
    CHECK(bitwise_equal(c, c0));
    CHECK(bitwise_equal(opt.state(2, "exp_avg"), m0));
    CHECK(bitwise_equal(opt.state(2, "exp_avg_sq"), v0));
    for (std::size_t i = 0; i < 3; ++i) CHECK(opt.step_count(i) == t0);
  };
  expect_rejected({});
  expect_rejected({ga.data(), gb.data()});
  expect_rejected({ga.data(), gb.data(), gc.data(), gc.data()});
  // Still usable, and a rejected call after real steps leaves the stepped values alone.
  opt.step({ga.data(), gb.data(), gc.data()});
  CHECK(opt.step_count(0) == 1);
  CHECK(a[0] != 0.5f);
  expect_rejected({ga.data(), gb.data()});
  expect_rejected({nullptr, nullptr, nullptr, nullptr});
}

PYOPT_TEST(dtype_mismatch) {
  std::vector<float> pf = {1.0f, 2.0f, 3.0f};
  std::vector<double> pd = {1.0, 2.0, 3.0};
  const std::vector<float> gf = {0.5f, 0.5f, 0.5f};
  const std::vector<double> gd = {0.5, 0.5, 0.5};
  pyopt::Optimizer opt("sgd", {{"lr", 0.1}});
  opt.add_param(pf.data(), pf.size());
  opt.add_param(pd.data(), pd.size());
  const auto pf0 = pf;
  const auto pd0 = pd;
  // double grad for the float param (the float64 param's grad is fine): nothing is written.
  std::string msg = CHECK_THROWS(std::invalid_argument, opt.step({gd.data(), gd.data()}));
  CHECK_MSG(contains(msg, "float32") && contains(msg, "float64"), msg);
  // float grad for the double param, after a valid float grad for the float param: nothing is written.
  msg = CHECK_THROWS(std::invalid_argument, opt.step({gf.data(), gf.data()}));
  CHECK_MSG(contains(msg, "float32") && contains(msg, "float64"), msg);
  CHECK(bitwise_equal(pf, pf0));
  CHECK(bitwise_equal(pd, pd0));
  CHECK(opt.step_count(0) == 0 && opt.step_count(1) == 0);
  opt.step({gf.data(), gd.data()});
  CHECK(pf[0] == 1.0f - 0.1f * 0.5f && pd[0] == 1.0 - 0.1 * 0.5);
}

PYOPT_TEST(grad_aliasing_param_throws) {
  std::vector<double> p = ramp(8, 1.0, 1.0);
  pyopt::Optimizer opt("sgd", {{"lr", 0.1}});
  opt.add_param(p.data(), p.size());
  const auto p0 = p;
  CHECK_THROWS(std::invalid_argument, opt.step({p.data()}));
  CHECK_THROWS(std::invalid_argument, opt.step({p.data() + 4}));
  CHECK(bitwise_equal(p, p0));
}

PYOPT_TEST(get_set_hyperparameters) {
  pyopt::Optimizer opt("adam");
  CHECK(opt.name() == "adam");
  // Defaults as RULES.md gives them.
  for (const auto& [key, value] : pyopt_test::rules_md_defaults("adam"))
    CHECK_MSG(opt.get(key) == value, key << " = " << opt.get(key) << ", expected " << value);
  pyopt::Optimizer w("adamw");
  CHECK(w.get("weight_decay") == 1e-2);
  CHECK(w.get("decoupled_weight_decay") == 1.0);
  CHECK(pyopt::Optimizer("nag").get("nesterov") == 1.0);
  CHECK(pyopt::Optimizer("momentum").get("momentum") == 0.9);

  opt.set("lr", 0.25);
  opt.set("beta2", 0.95);
  CHECK(opt.get("lr") == 0.25);
  CHECK(opt.get("beta2") == 0.95);
  const auto all = opt.hyperparameters();
  CHECK(all.at("lr") == 0.25 && all.at("beta2") == 0.95 && all.at("beta1") == 0.9);
  for (const auto& [key, value] : pyopt_test::rules_md_defaults("adam")) CHECK_MSG(all.count(key), key);

  // set() takes effect at the next step: two steps, lr changed in between, vs the reference.
  std::vector<double> p = ramp(19, -0.9, 0.1);
  const std::vector<double> g1 = ramp(19, 0.5, -0.05), g2 = ramp(19, -0.2, 0.03);
  opt.add_param(p.data(), p.size());
  pyopt_test::RefTensor ref{p, {}, 0};
  pyopt_test::Hyper h = pyopt_test::rules_md_defaults("adam");
  h["lr"] = 0.25;
  h["beta2"] = 0.95;
  opt.step({g1.data()});
  pyopt_test::ref_adam_step(ref, g1, h);
  opt.set("lr", 0.01);
  opt.set("weight_decay", 0.5);  // switches on coupled decay
  h["lr"] = 0.01;
  h["weight_decay"] = 0.5;
  opt.step({g2.data()});
  pyopt_test::ref_adam_step(ref, g2, h);
  for (std::size_t i = 0; i < p.size(); ++i)
    CHECK_MSG(near(p[i], ref.p[i], 1e-12),
              "[" << i << "] " << p[i] << " vs reference " << ref.p[i]);
}

PYOPT_TEST(fixed_hyperparameter) {
  pyopt::Optimizer w("adamw");
  std::string msg = CHECK_THROWS(std::invalid_argument, w.set("decoupled_weight_decay", 0.0));
  CHECK_MSG(contains(msg, "decoupled_weight_decay"), msg);
  CHECK_THROWS(std::invalid_argument, w.set("decoupled_weight_decay", 1.0));
  CHECK(w.get("decoupled_weight_decay") == 1.0);
  CHECK(w.hyperparameters().at("decoupled_weight_decay") == 1.0);
  CHECK_THROWS(std::invalid_argument, pyopt::Optimizer("adamw", {{"decoupled_weight_decay", 0.0}}));
  pyopt::Optimizer a("amsgrad");
  CHECK_THROWS(std::invalid_argument, a.set("amsgrad", 0.0));
  CHECK(a.get("amsgrad") == 1.0);
  // The same hyperparameter is free on the plain name.
  pyopt::Optimizer adam("adam");
  adam.set("decoupled_weight_decay", 1.0);
  CHECK(adam.get("decoupled_weight_decay") == 1.0);
}

PYOPT_TEST(step_count_increments) {
  std::vector<float> a(5, 1.0f), g(5, 0.5f);
  std::vector<double> b(3, 1.0), gb(3, 0.5);
  pyopt::Optimizer opt("adamw");
  CHECK(opt.num_params() == 0);
  CHECK(opt.add_param(a.data(), a.size()) == 0);
  CHECK(opt.add_param(b.data(), b.size()) == 1);
  CHECK(opt.num_params() == 2);
  CHECK(opt.step_count(0) == 0 && opt.step_count(1) == 0);
  for (int k = 1; k <= 5; ++k) {
    opt.step({g.data(), gb.data()});
    CHECK(opt.step_count(0) == k && opt.step_count(1) == k);
  }
  CHECK_THROWS(std::out_of_range, opt.step_count(2));
}

PYOPT_TEST(nullptr_grad_skips_param) {
  std::vector<double> a = ramp(10, 0.5, 0.1), b = ramp(40, -2.0, 0.1);
  const std::vector<double> ga = ramp(10, 0.3, 0.02), gb = ramp(40, 0.7, -0.03);
  pyopt::Optimizer opt("adam", {{"lr", 0.1}});
  opt.add_param(a.data(), a.size());
  opt.add_param(b.data(), b.size());
  const auto a0 = a, b0 = b;

  opt.step({ga.data(), nullptr});
  CHECK(!bitwise_equal(a, a0));
  CHECK(bitwise_equal(b, b0));
  CHECK(opt.step_count(0) == 1 && opt.step_count(1) == 0);
  CHECK(all_zero(opt.state(1, "exp_avg")) && all_zero(opt.state(1, "exp_avg_sq")));

  const auto a1 = a;
  opt.step({nullptr, nullptr});
  CHECK(bitwise_equal(a, a1) && bitwise_equal(b, b0));
  CHECK(opt.step_count(0) == 1 && opt.step_count(1) == 0);

  // b's first real step is its step 1 (full bias correction), while a is at its step 2.
  opt.step({ga.data(), gb.data()});
  CHECK(opt.step_count(0) == 2 && opt.step_count(1) == 1);
  pyopt_test::Hyper h = pyopt_test::rules_md_defaults("adam");
  h["lr"] = 0.1;
  pyopt_test::RefTensor ra{a0, {}, 0}, rb{b0, {}, 0};
  pyopt_test::ref_adam_step(ra, ga, h);
  pyopt_test::ref_adam_step(ra, ga, h);
  pyopt_test::ref_adam_step(rb, gb, h);
  for (std::size_t i = 0; i < a.size(); ++i)
    CHECK_MSG(near(a[i], ra.p[i], 1e-12), "a[" << i << "] " << a[i] << " vs " << ra.p[i]);
  for (std::size_t i = 0; i < b.size(); ++i)
    CHECK_MSG(near(b[i], rb.p[i], 1e-12), "b[" << i << "] " << b[i] << " vs " << rb.p[i]);
}

PYOPT_TEST(state_slots) {
  std::vector<double> p(4, 1.0), g(4, 0.5);
  pyopt::Optimizer opt("adam");
  opt.add_param(p.data(), p.size());
  CHECK(opt.state(0, "exp_avg").size() == 4);
  CHECK(opt.state(0, "max_exp_avg_sq").empty());  // not used without amsgrad
  CHECK_THROWS(std::invalid_argument, opt.state(0, "momentum_buffer"));
  CHECK_THROWS(std::out_of_range, opt.state(1, "exp_avg"));
  opt.step({g.data()});
  // exp_avg after one step: (1 − β1)·g
  for (double m : opt.state(0, "exp_avg")) CHECK_MSG(std::fabs(m - 0.1 * 0.5) <= 1e-15, m);
  pyopt::Optimizer sgd("sgd");
  sgd.add_param(p.data(), p.size());
  CHECK(sgd.state(0, "momentum_buffer").empty());  // momentum = 0: no buffer
}

PYOPT_TEST(runtime_settings) {
  const auto available = pyopt::isa_available();
  const auto compiled = pyopt::isa_compiled();
  CHECK(!available.empty() && available.size() <= compiled.size());
  CHECK(available.front() == "baseline");
  const std::string msg = CHECK_THROWS(std::invalid_argument, pyopt::set_isa("sse9"));
  CHECK_MSG(contains(msg, "baseline"), msg);
  for (const auto& isa : available) {
    pyopt::set_isa(isa);
    CHECK(pyopt::isa() == isa);
  }
  CHECK(pyopt::isa() == available.back());
  CHECK_THROWS(std::invalid_argument, pyopt::set_num_threads(0));
  const int n = pyopt::num_threads();
  CHECK(n >= 1);
  pyopt::set_num_threads(3);
  CHECK(pyopt::num_threads() == 3);
  pyopt::set_num_threads(n);
  CHECK(std::string(pyopt::version()) == PYOPT_VERSION);
}

PYOPT_TEST(step_options_clip_and_skip) {
  // clip_norm: the same as a plain step on g·c, c = clip_norm/(N + 1e-6).
  std::vector<double> a = ramp(37, 0.5, 0.1), b = a;
  const std::vector<double> g = ramp(37, 0.3, 0.2);
  double n2 = 0.0;
  for (double x : g) n2 += x * x;
  const double coef = 1.0 / (std::sqrt(n2) + 1e-6);
  std::vector<double> scaled(g);
  for (double& x : scaled) x *= coef;
  pyopt::Optimizer clipped("sgd", {{"lr", 0.1}}), plain("sgd", {{"lr", 0.1}});
  clipped.add_param(a.data(), a.size());
  plain.add_param(b.data(), b.size());
  pyopt::StepOptions options;
  options.clip_norm = 1.0;
  CHECK(clipped.step({g.data()}, options));
  plain.step({scaled.data()});
  CHECK(bitwise_equal(a, b));
  CHECK(near(clipped.last_grad_norm(), std::sqrt(n2), 1e-14));

  // skip_nonfinite: a NaN anywhere skips the step and touches nothing.
  std::vector<double> bad(g);
  bad[5] = std::numeric_limits<double>::quiet_NaN();
  const std::vector<double> before = a;
  options.skip_nonfinite = true;
  CHECK(!clipped.step({bad.data()}, options));
  CHECK(bitwise_equal(a, before));
  CHECK(clipped.step_count(0) == 1);
  CHECK(std::isnan(clipped.last_grad_norm()));

  // clip_value clamps; bad options throw before anything changes.
  options = pyopt::StepOptions{};
  options.clip_value = -1.0;
  CHECK_THROWS(std::invalid_argument, clipped.step({g.data()}, options));
  CHECK(clipped.step_count(0) == 1);
}

PYOPT_TEST(ema_averages) {
  // avg_t = lerp(avg_{t-1}, p_t, 1 − decay), starting from a copy of p; float and double.
  std::vector<float> w(19, 1.0f);
  std::vector<double> b = ramp(5, -1.0, 0.5);
  pyopt::Ema ema(0.9);
  CHECK(ema.add_param(w.data(), w.size()) == 0);
  CHECK(ema.add_param(b.data(), b.size()) == 1);
  std::vector<double> ref_w(w.begin(), w.end()), ref_b(b);
  for (int t = 1; t <= 20; ++t) {
    for (float& x : w) x += 0.5f;
    for (double& x : b) x *= 1.1;
    ema.update();
    for (std::size_t i = 0; i < w.size(); ++i) ref_w[i] += 0.1 * (double(w[i]) - ref_w[i]);
    for (std::size_t i = 0; i < b.size(); ++i) ref_b[i] += 0.1 * (b[i] - ref_b[i]);
  }
  const std::vector<double> aw = ema.average(0), ab = ema.average(1);
  for (std::size_t i = 0; i < w.size(); ++i) CHECK(near(aw[i], ref_w[i], 1e-5));
  for (std::size_t i = 0; i < b.size(); ++i) CHECK(near(ab[i], ref_b[i], 1e-13));
  CHECK(!near(aw[0], double(w[0]), 1e-3));  // the average lags the param
  ema.copy_to_params();
  CHECK(double(w[3]) == aw[3] && b[2] == ab[2]);
  CHECK_THROWS(std::invalid_argument, pyopt::Ema(1.5));
  CHECK_THROWS(std::invalid_argument, ema.set_decay(-0.1));
}
