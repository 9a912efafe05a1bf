// The driver's contract with a rule, on toy rules defined here (not registered anywhere):
// a variant outside the rule's table is an error raised before anything is touched, and the shared
// policies (maximize, weight decay) do what rules/base.hpp says, in its order.
#include <pyopt/driver/driver.hpp>

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "harness.hpp"

namespace {

namespace rules = pyopt::rules;

// A plain gradient step whose variant() can return a value its table does not have: num_variants
// is deliberately 2, and `flag` = 1 asks for variant 2. It keeps scalar state, which prepare()
// advances, so a half-done step would show.
struct WrongTableRule : rules::RuleBase {
  static constexpr const char* name = "wrong_table";
  enum Hyper { lr, flag, kNumHyper };
  static constexpr const char* slot_names[] = {"unused"};
  static constexpr int num_scalars = 1;
  static constexpr int num_variants = 2;
  static int variant(const double* h) { return h[flag] != 0.0 ? 2 : 0; }
  static constexpr unsigned slot_mask(int) { return 0u; }
  template <class T>
  struct Coeffs {
    T neg_lr;
  };
  template <class T>
  static Coeffs<T> prepare(const double* h, int64_t, double* scalars) {
    scalars[0] += 1.0;
    return {T(-h[lr])};
  }
  template <int V, class T>
  static void update(const Coeffs<T>& k, T& p, T g, T*) {
    p = p + k.neg_lr * g;
  }
};

// p ← p − lr·g after the driver's policies, with torch's decoupled_weight_decay flag.
struct PolicyRule : rules::RuleBase {
  static constexpr const char* name = "policy_toy";
  enum Hyper { lr, weight_decay, decoupled_weight_decay, maximize, kNumHyper };
  static constexpr const char* slot_names[] = {"unused"};
  static constexpr bool maximize_policy = true;
  static constexpr rules::Decay decay_policy = rules::Decay::TorchFlag;
  static constexpr int num_variants = 1;
  static int variant(const double*) { return 0; }
  static constexpr unsigned slot_mask(int) { return 0u; }
  template <class T>
  struct Coeffs {
    T neg_lr;
  };
  template <class T>
  static Coeffs<T> prepare(const double* h, int64_t, double*) {
    return {T(-h[lr])};
  }
  template <int V, class T>
  static void update(const Coeffs<T>& k, T& p, T g, T*) {
    p = p + k.neg_lr * g;
  }
};

pyopt::TensorArgs tensor(double* p, const double* g, int64_t n, const double* hyper, double* scalars) {
  pyopt::TensorArgs a{};
  a.param = p;
  a.grad = g;
  a.size = n;
  a.step = 1;
  a.hyper = hyper;
  a.scalars = scalars;
  return a;
}

}  // namespace

PYOPT_TEST(driver_variant_outside_table_throws) {
  const double good[] = {0.5, 0.0}, bad[] = {0.5, 1.0};
  std::vector<double> p0(40, 1.0), p1(40, 1.0), g(40, 2.0);
  double s0[pyopt::kMaxScalars] = {}, s1[pyopt::kMaxScalars] = {};
  // The first tensor is fine, the second asks for a kernel the table lacks: neither may change.
  const pyopt::TensorArgs tensors[] = {tensor(p0.data(), g.data(), 40, good, s0),
                                       tensor(p1.data(), g.data(), 40, bad, s1)};
  const std::string what =
      CHECK_THROWS(std::logic_error, (pyopt::driver::run<WrongTableRule, double>(tensors, 2, 1)));
  CHECK_MSG(what.find("wrong_table") != std::string::npos && what.find("variant") != std::string::npos, what);
  for (int i = 0; i < 40; ++i) CHECK(p0[i] == 1.0 && p1[i] == 1.0);
  CHECK(s0[0] == 0.0 && s1[0] == 0.0);
  // A variant inside the table still steps.
  pyopt::driver::run<WrongTableRule, double>(tensors, 1, 1);
  CHECK(p0[0] == 0.0 && s0[0] == 1.0);
}

PYOPT_TEST(driver_maximize_and_decay_policies) {
  const double lr = 0.5, wd = 0.25, p_init = 2.0, grad = 1.0;
  struct Expect {
    double decoupled, maximize, p;
  };
  // maximize: g ← −g; decoupled: p ← p·(1 − lr·wd); coupled: g ← g + wd·p (p after any decay).
  const Expect cases[] = {
      {0, 0, p_init - lr * (grad + wd * p_init)},
      {0, 1, p_init - lr * (-grad + wd * p_init)},
      {1, 0, p_init * (1 - lr * wd) - lr * grad},
      {1, 1, p_init * (1 - lr * wd) + lr * grad},
  };
  for (const Expect& c : cases) {
    const double hyper[] = {lr, wd, c.decoupled, c.maximize};
    std::vector<double> p(20, p_init), g(20, grad);
    double scalars[pyopt::kMaxScalars] = {};
    const pyopt::TensorArgs a = tensor(p.data(), g.data(), 20, hyper, scalars);
    pyopt::driver::run<PolicyRule, double>(&a, 1, 1);
    for (double x : p) CHECK_MSG(x == c.p, "decoupled " << c.decoupled << " maximize " << c.maximize << ": " << x);
  }
  // weight_decay = 0 never touches p·wd: an infinite param stays infinite instead of turning NaN.
  const double no_decay[] = {lr, 0.0, 0.0, 0.0};
  std::vector<double> p(4, INFINITY), g(4, grad);
  double scalars[pyopt::kMaxScalars] = {};
  const pyopt::TensorArgs a = tensor(p.data(), g.data(), 4, no_decay, scalars);
  pyopt::driver::run<PolicyRule, double>(&a, 1, 1);
  for (double x : p) CHECK(x == INFINITY);
}
