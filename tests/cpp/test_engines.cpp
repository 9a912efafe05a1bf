// The optimizers written in Python that pyopt::Optimizer runs too (Adafactor; Muon with a BLAS), and
// SophiaG's update_hessian. Bit-for-bit and cross-language comparisons with the Python optimizers
// are in tests/python/test_cmake_package.py (through pyopt_step_driver).
#include <pyopt/pyopt.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "harness.hpp"

namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::string temp_path(const std::string& name) {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/pyopt_cpp_test_engines_" + name;
}

template <class T>
std::vector<T> wave(std::size_t n, double phase, double scale = 1.0) {
  std::vector<T> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = T(scale * std::sin(0.7 * double(i) + phase));
  return v;
}

bool has_optimizer(const std::string& name) {
  for (const pyopt::OptimizerSpec& s : pyopt::optimizers())
    if (s.name == name) return true;
  return false;
}

// Adafactor through pyopt::Optimizer against its kernel called directly with hand-kept state, for
// one param of `shape`.
template <class T>
void check_adafactor_against_kernel(const std::vector<std::size_t>& shape, const std::map<std::string, double>& hyper) {
  std::size_t n = 1;
  for (std::size_t d : shape) n *= d;
  std::vector<T> w = wave<T>(n, 0.3), ref = w;
  pyopt::Optimizer opt("adafactor", hyper);
  opt.add_param(w.data(), shape);
  pyopt::AdafactorHyper h;
  h.lr = opt.get("lr");
  h.beta2_decay = opt.get("beta2_decay");
  h.eps1 = std::isnan(opt.get("eps1")) ? -1.0 : opt.get("eps1");
  h.eps2 = opt.get("eps2");
  h.d = opt.get("d");
  h.weight_decay = opt.get("weight_decay");
  h.maximize = opt.get("maximize") != 0.0;
  int64_t batch = 0, rows = 0, cols = 0;
  if (shape.size() >= 2) {
    rows = int64_t(shape[shape.size() - 2]);
    cols = int64_t(shape.back());
    batch = int64_t(n) / std::max<int64_t>(rows * cols, 1);
  }
  std::vector<T> row(std::size_t(batch * rows)), col(std::size_t(batch * cols)), var(rows ? 0 : n);
  for (int t = 1; t <= 12; ++t) {
    const std::vector<T> g = wave<T>(n, 0.9 * t, t % 3 == 0 ? 1e3 : 1.0);
    opt.step({g.data()});
    pyopt::adafactor_step<T>(ref.data(), g.data(), row.data(), col.data(), var.data(), batch, rows, cols, int64_t(n), t, h);
  }
  CHECK_MSG(w == ref, "adafactor param of " << shape.size() << " axes");
  CHECK(opt.step_count(0) == 12);
  auto as_double = [](const std::vector<T>& v) { return std::vector<double>(v.begin(), v.end()); };
  if (rows) {
    CHECK(opt.state(0, "row_var") == as_double(row) && opt.state(0, "col_var") == as_double(col));
    CHECK(opt.state(0, "variance").empty() && opt.raw_state(0, "row_var").size == row.size());
  } else {
    CHECK(opt.state(0, "variance") == as_double(var) && opt.state(0, "row_var").empty());
  }
}

}  // namespace

PYOPT_TEST(adafactor_optimizer_equals_its_kernel) {
  CHECK(has_optimizer("adafactor"));
  for (const auto& shape : std::vector<std::vector<std::size_t>>{{17}, {7, 5}, {3, 4, 6}, {1, 33}, {9, 1}}) {
    check_adafactor_against_kernel<float>(shape, {});
    check_adafactor_against_kernel<double>(shape, {});
    check_adafactor_against_kernel<float>(shape, {{"eps1", 1e-20}, {"weight_decay", 0.1}, {"d", 2.0}, {"maximize", 1}});
    check_adafactor_against_kernel<double>(shape, {{"lr", 0.1}, {"beta2_decay", -0.5}, {"eps2", 0.0}});
  }
  // Without a shape a param is a vector: a full variance.
  std::vector<float> w = wave<float>(12, 0.0);
  pyopt::Optimizer opt("adafactor");
  opt.add_param(w.data(), w.size());
  const std::vector<float> g = wave<float>(12, 1.0);
  opt.step({g.data()});
  CHECK(opt.state(0, "variance").size() == 12 && opt.state(0, "row_var").empty());
}

// A checkpoint holds Adafactor's factors in pyopt.Adafactor's shapes; a fresh optimizer loading it
// continues with the same bits.
PYOPT_TEST(adafactor_checkpoint_round_trip) {
  const std::string path = temp_path("adafactor.npz");
  std::vector<double> a3 = wave<double>(24, 0.1), a1 = wave<double>(5, 0.2);
  pyopt::Optimizer a("adafactor", {{"lr", 0.05}, {"eps1", 1e-25}});
  a.add_param(a3.data(), std::vector<std::size_t>{2, 3, 4});
  a.add_param(a1.data(), std::vector<std::size_t>{5});
  auto grads = [](int t) { return std::make_pair(wave<double>(24, 0.3 * t), wave<double>(5, 0.7 * t)); };
  for (int t = 0; t < 3; ++t) {
    const auto [g3, g1] = grads(t);
    a.step({g3.data(), g1.data()});
  }
  a.save(path);
  const pyopt::npz::Archive archive = pyopt::npz::load(path);
  const pyopt::npz::Array* row = pyopt::npz::find(archive, "state/0/row_var");
  const pyopt::npz::Array* col = pyopt::npz::find(archive, "state/0/col_var");
  const pyopt::npz::Array* var = pyopt::npz::find(archive, "state/1/variance");
  CHECK(row && row->shape == (std::vector<std::size_t>{2, 3, 1}) && row->descr == "<f8");
  CHECK(col && col->shape == (std::vector<std::size_t>{2, 1, 4}));
  CHECK(var && var->shape == std::vector<std::size_t>{5});
  CHECK(!pyopt::npz::find(archive, "state/0/variance") && !pyopt::npz::find(archive, "state/1/row_var"));
  const pyopt::json::Value meta = pyopt::checkpoint_meta(path);
  const pyopt::json::Value& group = meta["param_groups"][0];
  CHECK(group["eps"].size() == 2 && group["eps"][0].as_number() == 1e-25 && group["eps"][1].as_number() == 1e-3);

  std::vector<double> b3 = a3, b1 = a1;
  pyopt::Optimizer b("adafactor");  // eps1 None, lr 0.01: load() restores the saved ones
  b.add_param(b3.data(), std::vector<std::size_t>{2, 3, 4});
  b.add_param(b1.data(), std::vector<std::size_t>{5});
  b.load(path);
  CHECK(b.get("eps1") == 1e-25 && b.get("lr") == 0.05 && b.step_count(1) == 3);
  for (int t = 3; t < 6; ++t) {
    const auto [g3, g1] = grads(t);
    a.step({g3.data(), g1.data()});
    b.step({g3.data(), g1.data()});
  }
  CHECK(a3 == b3 && a1 == b1);

  // eps1 None travels as null; a file whose factors have the wrong shape changes nothing.
  pyopt::Optimizer c("adafactor");
  std::vector<double> c3 = wave<double>(24, 0.1), c1 = wave<double>(5, 0.2);
  c.add_param(c3.data(), std::vector<std::size_t>{2, 3, 4});
  c.add_param(c1.data(), std::vector<std::size_t>{5});
  c.save(path);
  CHECK(pyopt::checkpoint_meta(path)["param_groups"][0]["eps"][0].is_null());
  pyopt::Optimizer d("adafactor");
  std::vector<double> d3 = c3, d1 = c1;
  d.add_param(d3.data(), std::vector<std::size_t>{4, 3, 2});  // same size, other factors
  d.add_param(d1.data(), std::vector<std::size_t>{5});
  a.save(path);
  const std::string m = CHECK_THROWS(std::invalid_argument, d.load(path));
  CHECK_MSG(contains(m, "state 'row_var' has 6 elements, expected 12"), m);
  CHECK(d.step_count(0) == 0 && d.get("lr") == 0.01);
  std::remove(path.c_str());
}

// What Adafactor and Muon refuse, before anything changes.
PYOPT_TEST(engine_optimizers_refuse_what_python_refuses) {
  pyopt::StorageOptions bf16;
  bf16.state_dtype = pyopt::StateDType::BFloat16;
  std::string m = CHECK_THROWS(std::invalid_argument, pyopt::Optimizer("adafactor", {}, bf16));
  CHECK_MSG(contains(m, "no storage options"), m);
  pyopt::Optimizer opt("adafactor");
  std::vector<uint16_t> half(8);
  m = CHECK_THROWS(std::invalid_argument, opt.add_param(half.data(), half.size(), pyopt::Storage::BFloat16));
  CHECK_MSG(contains(m, "float32 and float64 params only"), m);
  std::vector<float> w = wave<float>(6, 0.0);
  const std::vector<float> w0 = w, g = wave<float>(6, 1.0);
  opt.add_param(w.data(), std::vector<std::size_t>{2, 3});
  pyopt::StepOptions clip;
  clip.clip_norm = 1.0;
  m = CHECK_THROWS(std::invalid_argument, opt.step({g.data()}, clip));
  CHECK_MSG(contains(m, "no StepOptions"), m);
  CHECK(w == w0 && opt.step_count(0) == 0);
  CHECK_THROWS(std::invalid_argument, pyopt::Optimizer("adafactor", {{"beta2_decay", 0.5}}));
  CHECK_THROWS(std::invalid_argument, pyopt::Optimizer("adafactor", {{"d", 0.5}}));
  CHECK_THROWS(std::invalid_argument, opt.set("eps1", -1.0));
  opt.set("eps1", std::nan(""));  // None
  CHECK(std::isnan(opt.get("eps1")));
  m = CHECK_THROWS(std::invalid_argument, opt.update_hessian({g.data()}));
  CHECK_MSG(contains(m, "keeps no Hessian"), m);
  if (!pyopt::have_blas()) return;
  pyopt::Optimizer muon("muon");
  m = CHECK_THROWS(std::invalid_argument, muon.add_param(w.data(), w.size()));
  CHECK_MSG(contains(m, "Muon takes only 2-D params"), m);
  m = CHECK_THROWS(std::invalid_argument, muon.add_param(w.data(), std::vector<std::size_t>{1, 2, 3}));
  CHECK_MSG(contains(m, "got 3-D"), m);
  CHECK_THROWS(std::invalid_argument, pyopt::Optimizer("muon", {{"ns_steps", 0}}));
  CHECK_THROWS(std::invalid_argument, pyopt::Optimizer("muon", {{"ns_steps", 100}}));
  CHECK_THROWS(std::invalid_argument, pyopt::Optimizer("muon", {{"adjust_lr_fn", 3}}));
  CHECK_THROWS(std::invalid_argument, pyopt::Optimizer("muon", {{"momentum", 1.0}}));
  CHECK_THROWS(std::invalid_argument, pyopt::Optimizer("muon", {{"ns_a", std::nan("")}}));
}

// Muon is listed exactly when the library has a BLAS; without one it is refused by name.
PYOPT_TEST(muon_listed_exactly_with_a_blas) {
  CHECK(has_optimizer("muon") == pyopt::have_blas());
  bool python_only = false;
  for (const pyopt::OptimizerSpec& s : pyopt::python_only_optimizers()) python_only |= s.name == "muon";
  CHECK(python_only == !pyopt::have_blas());
  if (!pyopt::have_blas()) {
    const std::string m = CHECK_THROWS(std::invalid_argument, pyopt::Optimizer("muon"));
    CHECK_MSG(contains(m, "needs a BLAS"), m);
  }
}

// Newton-Schulz orthogonalizes: with no momentum history and no weight decay, one step moves the
// param by −lr·s·X, X's singular values near 1 (the quintic's band, in bfloat16) for tall, wide,
// square and 1 × N params; the momentum buffer is the lerp of the gradients.
PYOPT_TEST(muon_step_orthogonalizes) {
  if (!pyopt::have_blas()) {
    std::printf("  skipped: no BLAS in this build\n");
    return;
  }
  for (const auto& [rows, cols] : std::vector<std::pair<std::size_t, std::size_t>>{{8, 3}, {3, 8}, {6, 6}, {1, 9}, {40, 17}}) {
    for (double adjust : {0.0, 2.0}) {
      std::vector<double> w(rows * cols, 0.0);
      const double lr = 0.01;
      pyopt::Optimizer opt("muon", {{"lr", lr}, {"adjust_lr_fn", adjust}, {"nesterov", 0}});
      opt.add_param(w.data(), std::vector<std::size_t>{rows, cols});
      std::mt19937_64 rng(rows * 100 + cols);  // full rank (a sine wave's matrix has rank 2)
      std::normal_distribution<double> normal(0.0, 3.0);
      std::vector<double> g(rows * cols);
      for (double& v : g) v = normal(rng);
      opt.step({g.data()});
      const double scale = adjust == 2.0 ? 0.2 * std::sqrt(double(std::max(rows, cols)))
                                         : std::sqrt(std::max(1.0, double(rows) / double(cols)));
      std::vector<double> x(w.size());
      for (std::size_t i = 0; i < w.size(); ++i) x[i] = -w[i] / (lr * scale);
      // The Gram matrix of the short side: X Xᵀ (rows ≤ cols) or Xᵀ X, near the identity.
      const std::size_t k = std::min(rows, cols);
      for (std::size_t a = 0; a < k; ++a)
        for (std::size_t b = 0; b < k; ++b) {
          double dot = 0.0;
          for (std::size_t j = 0; j < std::max(rows, cols); ++j)
            dot += rows <= cols ? x[a * cols + j] * x[b * cols + j] : x[j * cols + a] * x[j * cols + b];
          // Singular values in about [0.7, 1.2] after 5 steps of the quintic: a Gram matrix with
          // eigenvalues in [0.45, 1.45].
          const bool ok = a == b ? dot > 0.45 && dot < 1.45 : std::abs(dot) < 0.5;
          CHECK_MSG(ok, rows << "x" << cols << " gram[" << a << "," << b << "] = " << dot);
        }
      const std::vector<double> buf = opt.state(0, "momentum_buffer");
      for (std::size_t i = 0; i < g.size(); ++i) CHECK(std::abs(buf[i] - 0.05 * g[i]) <= 1e-15 * std::abs(g[i]));
    }
  }
}

// update_hessian: h ← beta2·h + (1 − beta2)·estimate per param (nullptr skips one), no step
// counted; the next step divides by it. Bad calls change nothing.
PYOPT_TEST(sophia_update_hessian) {
  const double beta2 = 0.9;
  pyopt::Optimizer opt("sophia", {{"beta2", beta2}, {"lr", 1e-2}});
  std::vector<float> wf = wave<float>(19, 0.0);
  std::vector<double> wd = wave<double>(7, 1.0);
  opt.add_param(wf.data(), wf.size());
  opt.add_param(wd.data(), wd.size());
  std::vector<double> hf(19, 0.0), hd(7, 0.0);
  for (int k = 0; k < 4; ++k) {
    const std::vector<float> ef = wave<float>(19, k, 2.0);
    const std::vector<double> ed = wave<double>(7, k + 0.5, 2.0);
    std::vector<float> ef2(ef.size());
    for (std::size_t i = 0; i < ef.size(); ++i) ef2[i] = ef[i] * ef[i];
    std::vector<double> ed2(ed.size());
    for (std::size_t i = 0; i < ed.size(); ++i) ed2[i] = ed[i] * ed[i];
    if (k == 2) {
      opt.update_hessian({nullptr, ed2.data()});
    } else {
      opt.update_hessian({ef2.data(), ed2.data()});
      for (std::size_t i = 0; i < hf.size(); ++i) hf[i] = beta2 * hf[i] + (1 - beta2) * double(ef2[i]);
    }
    for (std::size_t i = 0; i < hd.size(); ++i) hd[i] = beta2 * hd[i] + (1 - beta2) * ed2[i];
  }
  const std::vector<double> got_f = opt.state(0, "hessian"), got_d = opt.state(1, "hessian");
  for (std::size_t i = 0; i < hf.size(); ++i) CHECK_MSG(std::abs(got_f[i] - hf[i]) <= 1e-6 * hf[i] + 1e-30, i);
  for (std::size_t i = 0; i < hd.size(); ++i) CHECK_MSG(std::abs(got_d[i] - hd[i]) <= 1e-14 * hd[i] + 1e-300, i);
  CHECK(opt.step_count(0) == 0 && opt.step_count(1) == 0);

  const std::vector<float> gf = wave<float>(19, 3.0);
  const std::vector<double> gd = wave<double>(7, 3.0);
  const std::vector<float> wf0 = wf;
  const std::vector<double> ef(7, 1.0);
  std::string m = CHECK_THROWS(std::invalid_argument, opt.update_hessian({gf.data()}));
  CHECK_MSG(contains(m, "expected 2 estimates, got 1"), m);
  m = CHECK_THROWS(std::invalid_argument, opt.update_hessian({ef.data(), ef.data()}));
  CHECK_MSG(contains(m, "estimate 0 is float64 but its param is float32"), m);
  CHECK(opt.state(1, "hessian") == got_d);
  // The step reads h: a larger Hessian gives a smaller step than h = 0 (a sign step of lr).
  pyopt::Optimizer fresh("sophia", {{"beta2", beta2}, {"lr", 1e-2}});
  std::vector<float> wf_fresh = wf;
  std::vector<double> wd_fresh = wd;
  fresh.add_param(wf_fresh.data(), wf_fresh.size());
  fresh.add_param(wd_fresh.data(), wd_fresh.size());
  opt.step({gf.data(), gd.data()});
  fresh.step({gf.data(), gd.data()});
  CHECK(wf != wf0 && wf != wf_fresh);
}
