// The package layer of the C++ API: the JSON reader/writer, the npz (zip + npy) reader/writer,
// make_optimizer from best.json-style configs, checkpoints, and every optimizer stepping on
// float and double. (Bit-equality with Python steps is checked by tests/python/test_cmake_package.py.)
#include <pyopt/pyopt.hpp>

#include <algorithm>
#include <map>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "harness.hpp"

namespace {

namespace json = pyopt::json;
namespace npz = pyopt::npz;

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::string temp_path(const std::string& name) {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/pyopt_cpp_test_" + name;
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

// Equal hyperparameter maps, NaN equal to NaN (Adafactor's eps1 None).
bool same_hyper(const std::map<std::string, double>& a, const std::map<std::string, double>& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](const auto& x, const auto& y) {
           return x.first == y.first && (x.second == y.second || (std::isnan(x.second) && std::isnan(y.second)));
         });
}

template <class T>
std::vector<T> wave(std::size_t n, double phase) {
  std::vector<T> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = T(std::sin(0.7 * double(i) + phase));
  return v;
}

}  // namespace

// ------------------------------------------------------------------------------------------ JSON
PYOPT_TEST(json_parses_all_value_kinds) {
  const json::Value v = json::parse(
      " {\"s\": \"a\\\"b\\\\c\\/d\\n\\t\\u00e9\\ud83d\\ude00\", \"n\": [0, -0.5e-3, 1E+2, 12345678901234, 3.141592653589793],"
      " \"t\": true, \"f\": false, \"z\": null, \"o\": {\"x\": {}}, \"e\": [], \"nan\": NaN, \"inf\": -Infinity}\n");
  CHECK(v.is_object() && v.size() == 9);
  CHECK(v["s"].as_string() == "a\"b\\c/d\n\t\xc3\xa9\xf0\x9f\x98\x80");
  CHECK(v["n"].size() == 5);
  CHECK(v["n"][0].as_number() == 0.0);
  CHECK(v["n"][1].as_number() == -0.5e-3);
  CHECK(v["n"][2].as_number() == 100.0);
  CHECK(v["n"][3].as_number() == 12345678901234.0);
  CHECK(v["n"][4].as_number() == 3.141592653589793);
  CHECK(v["t"].as_bool() && !v["f"].as_bool() && v["z"].is_null());
  CHECK(v["o"]["x"].is_object() && v["o"]["x"].size() == 0);
  CHECK(v["e"].is_array() && v["e"].size() == 0);
  CHECK(std::isnan(v["nan"].as_number()) && v["inf"].as_number() == -std::numeric_limits<double>::infinity());
  CHECK(v.find("missing") == nullptr);
  CHECK_THROWS(std::out_of_range, v["missing"]);
  CHECK_THROWS(std::out_of_range, v["n"][5]);
  const std::string msg = CHECK_THROWS(std::invalid_argument, v["s"].as_number());
  CHECK_MSG(contains(msg, "expected a number, got a string"), msg);
  CHECK(json::parse("{\"a\": 1, \"a\": 2}")["a"].as_number() == 2.0);  // last wins, as Python
}

PYOPT_TEST(json_rejects_malformed_text) {
  for (const char* bad : {"", "   ", "{", "[1,]", "[1 2]", "{\"a\" 1}", "{\"a\": 1,}", "{a: 1}", "01", "1.", "-", "1e",
                          "\"\\x\"", "\"\\u12g4\"", "tru", "nul", "\"abc", "[1] 2", "\"a\tb\"", "'a'", "+1"}) {
    const std::string msg = CHECK_THROWS(json::ParseError, json::parse(bad));
    CHECK_MSG(contains(msg, "line 1, column"), bad << " -> " << msg);
  }
  const std::string msg = CHECK_THROWS(json::ParseError, json::parse("{\n  \"a\": [1,\n  2,,]\n}"));
  CHECK_MSG(contains(msg, "line 3"), msg);
  CHECK_THROWS(std::runtime_error, json::parse_file(temp_path("no_such_file.json")));
}

PYOPT_TEST(json_dump_round_trips) {
  for (double x : {0.0, 1.0, -2.0, 0.1, 1e-300, 5e-324, 3.141592653589793, 1e22, 1.7976931348623157e308, 0.001, 2.5e-8,
                   123456789.125, -0.0}) {
    const json::Value back = json::parse(json::dump(json::Value(x)));
    CHECK_MSG(back.as_number() == x && std::signbit(back.as_number()) == std::signbit(x), x << " -> " << json::dump(json::Value(x)));
  }
  CHECK(json::dump(json::Value(0.001)) == "0.001");
  CHECK(json::dump(json::Value(3.0)) == "3");
  CHECK(json::dump(json::Value(std::numeric_limits<double>::infinity())) == "Infinity");
  const std::string text =
      "{\"optimizer\": \"adamw\", \"hyperparameters\": {\"lr\": 0.0003, \"betas\": [0.9, 0.999], \"amsgrad\": false}, "
      "\"note\": \"\\u00e9\\n\\\"q\\\"\", \"value\": null}";
  CHECK_MSG(json::dump(json::parse(text)) == text, json::dump(json::parse(text)));
  json::Value o = json::Value::object();
  o.set("b", json::Value(1));
  o.set("a", json::Value("x"));
  o.set("b", json::Value(true));
  CHECK(json::dump(o) == "{\"b\": true, \"a\": \"x\"}");
}

// ------------------------------------------------------------------------------------------ npz
PYOPT_TEST(npz_crc32_and_zip) {
  CHECK(npz::crc32("123456789", 9) == 0xCBF43926u);
  CHECK(npz::crc32("", 0) == 0u);
  const std::vector<std::pair<std::string, std::string>> files = {{"a.txt", "hello"}, {"dir/b.bin", std::string("\0\1\2", 3)}, {"empty", ""}};
  const std::string zip = npz::zip_stored(files);
  CHECK(npz::unzip(zip) == files);
  std::string corrupt = zip;
  corrupt[30 + 5] ^= 1;  // a byte of "hello"
  const std::string msg = CHECK_THROWS(std::runtime_error, npz::unzip(corrupt));
  CHECK_MSG(contains(msg, "CRC-32"), msg);
  std::string deflated = zip;
  deflated[8] = 8;  // local header method; the central directory still says stored
  std::size_t cd = zip.find(std::string("PK\x01\x02", 4));
  deflated[cd + 10] = 8;
  const std::string msg2 = CHECK_THROWS(std::runtime_error, npz::unzip(deflated));
  CHECK_MSG(contains(msg2, "compressed"), msg2);
  CHECK_THROWS(std::runtime_error, npz::unzip("PK not really a zip file at all......"));
  CHECK_THROWS(std::runtime_error, npz::unzip(zip.substr(0, zip.size() / 2)));
}

PYOPT_TEST(npz_round_trips_arrays) {
  const std::vector<float> f = {1.5f, -2.0f, std::numeric_limits<float>::quiet_NaN(), 0.0f, 3.0f, 4.0f};
  const std::vector<double> d = {1e-300, -0.0, 2.0};
  const std::vector<int64_t> i = {-1, 0, 1LL << 40};
  npz::Archive a;
  a.emplace_back("state/0/exp_avg", npz::Array::from(f.data(), f.size(), {2, 3}));
  a.emplace_back("d", npz::Array::from(d));
  a.emplace_back("i", npz::Array::from(i));
  a.emplace_back("__pyopt_meta__", npz::Array::string("{\"k\": \"\xc3\xa9\"}"));
  const std::string path = temp_path("round_trip.npz");
  npz::save(path, a);
  const npz::Archive b = npz::load(path);
  CHECK(b.size() == a.size());
  for (std::size_t k = 0; k < a.size(); ++k) {
    CHECK(a[k].first == b[k].first);
    CHECK(a[k].second.descr == b[k].second.descr);
    CHECK(a[k].second.shape == b[k].second.shape);
    CHECK(a[k].second.data == b[k].second.data);
  }
  CHECK(npz::find(b, "__pyopt_meta__")->as_string() == "{\"k\": \"\xc3\xa9\"}");
  CHECK(npz::find(b, "__pyopt_meta__")->descr == "<U10" && npz::find(b, "__pyopt_meta__")->shape.empty());
  CHECK(npz::find(b, "i")->to_doubles()[2] == double(1LL << 40));
  CHECK(npz::find(b, "nope") == nullptr);
  // .npy headers as numpy writes them: 64-byte aligned, shape tuples in Python syntax.
  const std::string npy = npz::to_npy(a[0].second);
  CHECK(npy.size() == 128 + 24 && (npy.size() - 24) % 64 == 0);
  CHECK(contains(npy, "'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"));
  CHECK(contains(npz::to_npy(a[1].second), "'shape': (3,), }"));
  CHECK(contains(npz::to_npy(a[3].second), "'shape': (), }"));
  CHECK_THROWS(std::runtime_error, npz::from_npy(npy.substr(0, 100)));
  CHECK_THROWS(std::runtime_error, npz::from_npy("\x93NUMPZ" + npy.substr(6)));
  std::string big_endian = npy;
  big_endian.replace(big_endian.find("<f4"), 3, ">f4");
  CHECK_THROWS(std::runtime_error, npz::from_npy(big_endian));
  CHECK_THROWS(std::runtime_error, npz::load(temp_path("no_such_file.npz")));
  std::remove(path.c_str());
}

// ------------------------------------------------------------------------------------------ configs
PYOPT_TEST(config_maps_python_spelling) {
  using Map = std::map<std::string, double>;
  CHECK((pyopt::flat_hyperparameters("adam", json::parse("{\"lr\": 0.01, \"betas\": [0.8, 0.9], \"amsgrad\": true}")) ==
         Map{{"lr", 0.01}, {"beta1", 0.8}, {"beta2", 0.9}, {"amsgrad", 1.0}}));
  CHECK((pyopt::flat_hyperparameters("adan", json::parse("{\"betas\": [0.1, 0.2, 0.3]}")) ==
         Map{{"beta1", 0.1}, {"beta2", 0.2}, {"beta3", 0.3}}));
  CHECK((pyopt::flat_hyperparameters("rprop", json::parse("{\"etas\": [0.4, 1.3], \"step_sizes\": [1e-5, 10]}")) ==
         Map{{"etaminus", 0.4}, {"etaplus", 1.3}, {"step_size_min", 1e-5}, {"step_size_max", 10.0}}));
  CHECK((pyopt::flat_hyperparameters("qhadam", json::parse("{\"nus\": [0.7, 1.0]}")) == Map{{"nu1", 0.7}, {"nu2", 1.0}}));
  pyopt::Optimizer opt = pyopt::make_optimizer(json::parse(
      "{\"optimizer\": \"adamw\", \"hyperparameters\": {\"lr\": 0.003, \"betas\": [0.9, 0.99], \"amsgrad\": false},"
      " \"value\": 0.07, \"task\": \"softmax-digits\", \"study\": \"x\"}"));
  CHECK(opt.name() == "adamw" && opt.get("lr") == 0.003 && opt.get("beta2") == 0.99 && opt.get("amsgrad") == 0.0);
  CHECK(opt.get("decoupled_weight_decay") == 1.0 && opt.get("weight_decay") == 1e-2);  // name defaults kept
  CHECK(pyopt::make_optimizer_from_json("{\"optimizer\": \"sgd\"}").get("lr") == pyopt::Optimizer("sgd").get("lr"));
  // Every optimizer: its public hyperparameters (as Python spells them) map back to the flat ones.
  for (const pyopt::OptimizerSpec& spec : pyopt::optimizers()) {
    const pyopt::Optimizer o(spec.name);
    const json::Value pub = pyopt::public_hyperparameters(spec.name, o.hyperparameters());
    Map expected = o.hyperparameters();
    for (const std::string& f : spec.fixed) expected.erase(f);
    CHECK_MSG(same_hyper(pyopt::flat_hyperparameters(spec.name, pub), expected), spec.name << ": " << json::dump(pub));
    CHECK_MSG(!pub.find("beta1") && !pub.find("etaminus") && !pub.find("nu1"), json::dump(pub));
    pyopt::make_optimizer(json::parse("{\"optimizer\": \"" + spec.name + "\", \"hyperparameters\": " + json::dump(pub) + "}"));
  }
}

PYOPT_TEST(config_errors_are_clear) {
  auto error = [](const std::string& text) {
    try {
      pyopt::make_optimizer_from_json(text);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    throw pyopt_test::Failure("no error for " + text);
  };
  std::string m = error("{\"optimizer\": \"adamx\"}");
  CHECK_MSG(contains(m, "unknown optimizer 'adamx'") && contains(m, "adamw") && contains(m, "novograd"), m);
  m = error("{\"optimizer\": \"lbfgs\"}");
  CHECK_MSG(contains(m, "'lbfgs' is written in Python"), m);
  if (!pyopt::have_blas()) {
    m = error("{\"optimizer\": \"muon\"}");
    CHECK_MSG(contains(m, "'muon' is written in Python") && contains(m, "needs a BLAS"), m);
  }
  m = error("{\"optimizer\": \"adafactor\", \"hyperparameters\": {\"eps\": [0.001]}}");
  CHECK_MSG(contains(m, "eps must be a pair of numbers"), m);
  m = error("{\"optimizer\": \"adafactor\", \"hyperparameters\": {\"eps\": [null, null]}}");
  CHECK_MSG(contains(m, "eps[1] must be a real number"), m);
  m = error("{\"optimizer\": \"adafactor\", \"hyperparameters\": {\"d\": 0.5}}");
  CHECK_MSG(contains(m, "invalid d"), m);
  if (pyopt::have_blas()) {
    m = error("{\"optimizer\": \"muon\", \"hyperparameters\": {\"adjust_lr_fn\": \"sqrt\"}}");
    CHECK_MSG(contains(m, "adjust_lr_fn must be null, \"original\" or \"match_rms_adamw\""), m);
    m = error("{\"optimizer\": \"muon\", \"hyperparameters\": {\"ns_steps\": 2.5}}");
    CHECK_MSG(contains(m, "invalid ns_steps"), m);
    m = error("{\"optimizer\": \"muon\", \"hyperparameters\": {\"ns_coefficients\": [1, 2]}}");
    CHECK_MSG(contains(m, "ns_coefficients must be a list of 3"), m);
  }
  m = error("{\"optimizer\": \"sophia_hessian\"}");
  CHECK_MSG(contains(m, "unknown optimizer 'sophia_hessian'"), m);
  m = error("{\"optimizer\": \"adam\", \"hyperparameters\": {\"learning_rate\": 0.1}}");
  CHECK_MSG(contains(m, "unknown hyperparameter 'learning_rate'") && contains(m, "valid: lr, betas, eps"), m);
  m = error("{\"optimizer\": \"adam\", \"hyperparameters\": {\"beta1\": 0.5}}");  // Python spells it betas
  CHECK_MSG(contains(m, "unknown hyperparameter 'beta1'"), m);
  m = error("{\"optimizer\": \"adamw\", \"hyperparameters\": {\"decoupled_weight_decay\": false}}");
  CHECK_MSG(contains(m, "'decoupled_weight_decay' is fixed"), m);
  m = error("{\"optimizer\": \"adam\", \"hyperparameters\": {\"betas\": [0.9]}}");
  CHECK_MSG(contains(m, "betas must be a pair of numbers, got [0.9]"), m);
  m = error("{\"optimizer\": \"adan\", \"hyperparameters\": {\"betas\": [0.9, 0.9]}}");
  CHECK_MSG(contains(m, "betas must be a list of 3"), m);
  m = error("{\"optimizer\": \"adam\", \"hyperparameters\": {\"betas\": [0.9, \"x\"]}}");
  CHECK_MSG(contains(m, "betas[1] must be a real number"), m);
  m = error("{\"optimizer\": \"adam\", \"hyperparameters\": {\"amsgrad\": 1}}");
  CHECK_MSG(contains(m, "amsgrad must be a bool"), m);
  m = error("{\"optimizer\": \"adam\", \"hyperparameters\": {\"lr\": true}}");
  CHECK_MSG(contains(m, "lr must be a real number, got a bool"), m);
  m = error("{\"optimizer\": \"adam\", \"hyperparameters\": {\"lr\": null}}");
  CHECK_MSG(contains(m, "lr must be a real number"), m);
  m = error("{\"optimizer\": \"adam\", \"hyperparameters\": {\"lr\": -1}}");  // range check by the rule
  CHECK_MSG(contains(m, "lr"), m);
  m = error("{\"optimizer\": \"adam\", \"hyperparameters\": [1]}");
  CHECK_MSG(contains(m, "'hyperparameters' must be an object"), m);
  m = error("{\"hyperparameters\": {}}");
  CHECK_MSG(contains(m, "'optimizer' name"), m);
  m = error("[\"adam\"]");
  CHECK_MSG(contains(m, "'optimizer' name"), m);
  CHECK_THROWS(json::ParseError, pyopt::make_optimizer_from_json("{\"optimizer\": \"adam\""));

  const std::string path = temp_path("best.json");
  write_file(path, "{\"optimizer\": \"lion\", \"hyperparameters\": {\"lr\": 1e-4, \"betas\": [0.9, 0.99]}, \"value\": 0.5}");
  CHECK(pyopt::make_optimizer_from_file(path).get("beta2") == 0.99);
  write_file(path, "{\"optimizer\": \"lion\", \"hyperparameters\": {\"lr\": }");
  m = CHECK_THROWS(std::invalid_argument, pyopt::make_optimizer_from_file(path));
  CHECK_MSG(contains(m, path) && contains(m, "line 1"), m);
  write_file(path, "{\"optimizer\": \"lion\", \"hyperparameters\": {\"rho\": 1}}");
  m = CHECK_THROWS(std::invalid_argument, pyopt::make_optimizer_from_file(path));
  CHECK_MSG(contains(m, path) && contains(m, "unknown hyperparameter 'rho'"), m);
  std::remove(path.c_str());
  m = CHECK_THROWS(std::invalid_argument, pyopt::make_optimizer_from_file(path));
  CHECK_MSG(contains(m, "cannot read"), m);
}

// ------------------------------------------------------------------------------------------ optimizers
// Every optimizer's C++ entry point steps float and double params finitely and moves them.
PYOPT_TEST(every_optimizer_steps_float_and_double) {
  for (const pyopt::OptimizerSpec& spec : pyopt::optimizers()) {
    pyopt::Optimizer opt(spec.name);
    std::vector<float> wf = wave<float>(37, 0.0);
    std::vector<double> wd = wave<double>(19, 1.0);
    const std::vector<float> wf0 = wf;
    const std::vector<double> wd0 = wd;
    if (spec.name == "muon") {  // 2-D params only
      opt.add_param(wf.data(), std::vector<std::size_t>{1, wf.size()});
      opt.add_param(wd.data(), std::vector<std::size_t>{wd.size(), 1});
    } else {
      opt.add_param(wf.data(), wf.size());
      opt.add_param(wd.data(), wd.size());
    }
    for (int t = 0; t < 10; ++t) {
      const std::vector<float> gf = wave<float>(wf.size(), 0.3 * t);
      const std::vector<double> gd = wave<double>(wd.size(), 0.5 * t);
      opt.step({gf.data(), gd.data()});
    }
    CHECK(opt.step_count(0) == 10 && opt.step_count(1) == 10);
    for (float x : wf) CHECK_MSG(std::isfinite(x), spec.name);
    for (double x : wd) CHECK_MSG(std::isfinite(x), spec.name);
    CHECK_MSG(wf != wf0 && wd != wd0, spec.name << " did not move the params");
  }
}

// Save after 3 steps, load into a fresh optimizer (other hyperparameters, other state), continue:
// the same bits as never stopping. For every optimizer.
PYOPT_TEST(checkpoint_round_trip_every_optimizer) {
  const std::string path = temp_path("ckpt.npz");
  for (const pyopt::OptimizerSpec& spec : pyopt::optimizers()) {
    pyopt::Optimizer a(spec.name);
    std::vector<float> af = wave<float>(13, 0.0);
    std::vector<double> ad = wave<double>(6, 1.0);
    const std::vector<std::size_t> shape_f = spec.name == "muon" ? std::vector<std::size_t>{1, 13} : std::vector<std::size_t>{13};
    a.add_param(af.data(), shape_f);
    a.add_param(ad.data(), std::vector<std::size_t>{2, 3});
    auto grads = [](int t, std::vector<float>& gf, std::vector<double>& gd) {
      gf = wave<float>(13, 0.4 * t);
      gd = wave<double>(6, 0.2 * t);
    };
    std::vector<float> gf;
    std::vector<double> gd;
    for (int t = 0; t < 3; ++t) {
      grads(t, gf, gd);
      a.step({gf.data(), gd.data()});
    }
    a.save(path);
    CHECK(pyopt::checkpoint_optimizer(path) == spec.name);

    pyopt::Optimizer b(spec.name, {{"lr", a.get("lr") * 0.5}});
    std::vector<float> bf = af;
    std::vector<double> bd = ad;
    b.add_param(bf.data(), shape_f);
    b.add_param(bd.data(), std::vector<std::size_t>{2, 3});  // the saved shape: load checks it
    grads(7, gf, gd);
    b.step({gf.data(), gd.data()});  // state that load() must replace
    bf = af;
    bd = ad;
    b.load(path);
    CHECK(same_hyper(b.hyperparameters(), a.hyperparameters()) && b.step_count(0) == 3);
    for (int t = 3; t < 6; ++t) {
      grads(t, gf, gd);
      a.step({gf.data(), gd.data()});
      b.step({gf.data(), gd.data()});
    }
    CHECK_MSG(std::memcmp(af.data(), bf.data(), af.size() * sizeof(float)) == 0, spec.name);
    CHECK_MSG(std::memcmp(ad.data(), bd.data(), ad.size() * sizeof(double)) == 0, spec.name);
  }
  std::remove(path.c_str());
}

PYOPT_TEST(checkpoint_errors_change_nothing) {
  const std::string path = temp_path("ckpt_err.npz");
  std::vector<double> w = wave<double>(8, 0.0), g = wave<double>(8, 2.0);
  pyopt::Optimizer a("adam", {{"lr", 0.01}});
  a.add_param(w.data(), w.size());
  a.step({g.data()});
  a.save(path);
  const json::Value meta = pyopt::checkpoint_meta(path);
  CHECK(meta["format"].as_number() == 1 && meta["state"]["0"]["step"].as_number() == 1);
  CHECK(meta["param_groups"][0]["betas"].size() == 2 && meta["param_groups"][0]["amsgrad"].is_bool());

  std::vector<double> v(8), u(9);
  pyopt::Optimizer wrong_name("adamw");
  wrong_name.add_param(v.data(), v.size());
  std::string m = CHECK_THROWS(std::invalid_argument, wrong_name.load(path));
  CHECK_MSG(contains(m, "for optimizer 'adam', not 'adamw'"), m);
  pyopt::Optimizer two("adam", {{"lr", 0.5}});
  two.add_param(v.data(), v.size());
  two.add_param(u.data(), u.size());
  m = CHECK_THROWS(std::invalid_argument, two.load(path));
  CHECK_MSG(contains(m, "holds 1 params, this optimizer has 2"), m);
  const std::vector<double> g9 = wave<double>(9, 2.0);  // u's size: a grad per element
  pyopt::Optimizer size("adam", {{"lr", 0.5}});
  size.add_param(u.data(), u.size());
  size.step({g9.data()});
  m = CHECK_THROWS(std::invalid_argument, size.load(path));
  CHECK_MSG(contains(m, "has 8 elements, the param has 9"), m);
  CHECK(size.get("lr") == 0.5 && size.step_count(0) == 1);  // untouched
  write_file(path, "not a zip");
  CHECK_THROWS(std::runtime_error, size.load(path));
  npz::save(path, {{"x", npz::Array::from(std::vector<double>{1.0})}});
  m = CHECK_THROWS(std::invalid_argument, size.load(path));
  CHECK_MSG(contains(m, "not a pyopt checkpoint"), m);
  CHECK(size.get("lr") == 0.5 && size.step_count(0) == 1);
  std::remove(path.c_str());
}
