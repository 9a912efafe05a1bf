// Checkpoints of the storage options (checkpoint.hpp): bfloat16 states as <u2 bits named in
// "array_dtypes", 8-bit codes (|u1) with their float32 scales, float32 master copies, the
// "storage" meta; save -> load -> save keeps every array bit for bit, and malformed files are
// clear errors that change nothing.
#include <pyopt/pyopt.hpp>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "harness.hpp"

namespace {

namespace json = pyopt::json;
namespace npz = pyopt::npz;
using pyopt::Storage;

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::string temp_path(const std::string& name) {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/pyopt_cpp_test_" + name;
}

pyopt::StorageOptions options(pyopt::StateDType d, bool master) {
  pyopt::StorageOptions o;
  o.state_dtype = d;
  o.master_weights = master;
  return o;
}

// The params of one test optimizer: a bfloat16 one large enough for 8-bit states, a small float16
// one, a float32 one of 5000 (partial last block), a float64 one.
struct Params {
  std::vector<uint16_t> bf16 = std::vector<uint16_t>(4608, 0x3f80);  // bfloat16 1.0
  std::vector<uint16_t> f16 = std::vector<uint16_t>(100, 0x3c00);    // float16 1.0
  std::vector<float> f32 = std::vector<float>(5000, 1.0f);
  std::vector<double> f64 = std::vector<double>(10, 1.0);
  void add_to(pyopt::Optimizer& opt) {
    opt.add_param(bf16.data(), {18, 256}, Storage::BFloat16);
    opt.add_param(f16.data(), f16.size(), Storage::Float16);
    opt.add_param(f32.data(), f32.size());
    opt.add_param(f64.data(), f64.size());
  }
};

// Pseudo-random bytes (a fixed LCG), so the saved states are not all zero.
void scramble(npz::Array& a, uint64_t seed) {
  uint64_t x = seed * 6364136223846793005ull + 1442695040888963407ull;
  auto next = [&] {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    return uint32_t(x >> 33);
  };
  if (a.descr == "|u1") {
    for (char& c : a.data) c = char(next() & 0xff);
  } else if (a.descr == "<u2") {  // bfloat16 bits of finite values
    for (std::size_t i = 0; i + 1 < a.data.size(); i += 2) {
      const uint16_t h = uint16_t(0x3000 + next() % 0x1000) | uint16_t(next() & 1 ? 0x8000 : 0);
      std::memcpy(&a.data[i], &h, 2);
    }
  } else if (a.descr == "<f4") {
    for (std::size_t i = 0; i + 3 < a.data.size(); i += 4) {
      const float f = float(next()) / 4294967296.0f + 0.01f;
      std::memcpy(&a.data[i], &f, 4);
    }
  } else if (a.descr == "<f8") {
    for (std::size_t i = 0; i + 7 < a.data.size(); i += 8) {
      const double d = double(next()) / 4294967296.0;
      std::memcpy(&a.data[i], &d, 8);
    }
  }
}

npz::Array& entry(npz::Archive& archive, const std::string& name) {
  for (auto& e : archive)
    if (e.first == name) return e.second;
  throw std::runtime_error("no entry " + name);
}

// The meta with key `key` replaced (or removed when value is null).
void set_meta(npz::Archive& archive, const std::string& key, const json::Value& value) {
  npz::Array& m = entry(archive, "__pyopt_meta__");
  json::Value meta = json::parse(m.as_string());
  json::Value::Object kept;
  for (auto& kv : meta.as_object())
    if (kv.first != key) kept.push_back(kv);
  if (!value.is_null()) kept.emplace_back(key, value);
  m = npz::Array::string(json::dump(json::Value(kept)));
}

// Everything load() may change, as bytes.
std::string snapshot(const pyopt::Optimizer& opt) {
  std::string out;
  const pyopt::RuleInfo& rule = *pyopt::find_optimizer(opt.name()).rule;
  for (std::size_t i = 0; i < opt.num_params(); ++i) {
    out += std::to_string(opt.step_count(i)) + ";";
    for (int j = 0; j < rule.num_slots; ++j) {
      const pyopt::RawState r = opt.raw_state(i, rule.slot_names[j]);
      if (!r.data) continue;
      const std::size_t bytes = r.storage == Storage::BFloat16 ? 2 : pyopt::is_int8(r.storage) ? 1 : i == 3 ? 8 : 4;
      out.append(static_cast<const char*>(r.data), r.size * bytes);
      if (r.absmax) out.append(reinterpret_cast<const char*>(r.absmax), r.absmax_size * 4);
    }
    out.append(reinterpret_cast<const char*>(opt.master(i).data()), opt.master(i).size() * 4);
  }
  for (const auto& [k, v] : opt.hyperparameters()) out += k + std::to_string(v);
  return out;
}

// A checkpoint of adam (amsgrad: three slots) with these options, every array filled with
// pseudo-random bytes and master copies added (as after some steps).
npz::Archive crafted(const pyopt::StorageOptions& o, const std::string& path) {
  Params params;
  pyopt::Optimizer opt("adam", {{"amsgrad", 1}}, o);
  params.add_to(opt);
  opt.save(path);
  npz::Archive archive = npz::load(path);
  uint64_t seed = 1;
  for (auto& [name, array] : archive)
    if (name != "__pyopt_meta__") scramble(array, seed++);
  if (o.master_weights) {
    npz::Array m = npz::Array::from(std::vector<float>(4608, 0.0f));
    m.shape = {18, 256};
    scramble(m, 99);
    archive.emplace_back("state/0/master", m);
    npz::Array m1 = npz::Array::from(std::vector<float>(100, 0.0f));
    scramble(m1, 98);
    archive.emplace_back("state/1/master", m1);
  }
  return archive;
}

}  // namespace

// Each state_dtype (with and without master weights): what save() writes, and load -> save giving
// back every array bit for bit (8-bit codes and scales, bfloat16 bits, masters, float states).
PYOPT_TEST(storage_checkpoint_round_trip) {
  const std::string path = temp_path("storage_rt.npz"), again = temp_path("storage_rt2.npz");
  for (pyopt::StateDType d : {pyopt::StateDType::Float32, pyopt::StateDType::BFloat16, pyopt::StateDType::Int8})
    for (bool master : {false, true}) {
      const pyopt::StorageOptions o = options(d, master);
      const npz::Archive written = crafted(o, path);
      npz::save(path, written);
      CHECK(pyopt::checkpoint_storage(path).state_dtype == d && pyopt::checkpoint_storage(path).master_weights == master);
      const json::Value meta = pyopt::checkpoint_meta(path);
      if (d == pyopt::StateDType::Float32 && !master) {
        CHECK(meta.find("storage") == nullptr);  // the defaults: as files from before the options
      } else {
        CHECK(meta["storage"]["state_dtype"].as_string() == pyopt::state_dtype_name(d));
        CHECK(meta["storage"]["master_weights"].as_bool() == master && !meta["storage"]["stochastic_rounding"].as_bool());
      }
      if (d == pyopt::StateDType::Int8) {
        CHECK(entry(const_cast<npz::Archive&>(written), "state/0/exp_avg").descr == "|u1");
        CHECK(npz::find(written, "state/0/exp_avg_sq_absmax")->shape == std::vector<std::size_t>{18});
        CHECK(npz::find(written, "state/2/max_exp_avg_sq_absmax")->shape == std::vector<std::size_t>{20});
        CHECK(npz::find(written, "state/1/exp_avg")->descr == "<f4");  // under kMin8bitSize: float32
        CHECK(npz::find(written, "state/1/exp_avg_absmax") == nullptr);
      }
      if (d == pyopt::StateDType::BFloat16) {
        CHECK(npz::find(written, "state/2/exp_avg")->descr == "<u2");
        CHECK(meta["array_dtypes"]["state/2/exp_avg"].as_string() == "bfloat16");
        CHECK(meta["array_dtypes"].size() == 9);  // 3 slots of the 3 non-float64 params
      } else {
        CHECK(meta.find("array_dtypes") == nullptr);
      }
      CHECK(npz::find(written, "state/3/exp_avg")->descr == "<f8");

      Params params;
      pyopt::Optimizer opt("adam", {{"amsgrad", 1}}, o);
      params.add_to(opt);
      opt.load(path);
      CHECK(opt.master(0).size() == (master ? 4608u : 0u) && opt.master(2).empty());
      opt.save(again);
      const npz::Archive back = npz::load(again);
      std::size_t arrays = 0;
      for (const auto& [name, array] : written) {
        if (name == "__pyopt_meta__") continue;
        const npz::Array* b = npz::find(back, name);
        CHECK_MSG(b && b->descr == array.descr && b->shape == array.shape && b->data == array.data, name);
        ++arrays;
      }
      CHECK(back.size() == arrays + 1);
      if (d == pyopt::StateDType::BFloat16) CHECK(pyopt::checkpoint_meta(again)["array_dtypes"] == meta["array_dtypes"]);
    }
  std::remove(path.c_str());
  std::remove(again.c_str());
}

// load() gives the optimizer the checkpoint's storage options, as Python's load_state_dict: an
// int8 + master checkpoint into a default optimizer, and a default one back.
PYOPT_TEST(storage_checkpoint_load_adopts_the_saved_options) {
  const std::string path = temp_path("storage_adopt.npz"), plain = temp_path("storage_plain.npz");
  const pyopt::StorageOptions int8 = options(pyopt::StateDType::Int8, true);
  npz::save(path, crafted(int8, path));
  CHECK(pyopt::checkpoint_storage(path).state_dtype == pyopt::StateDType::Int8);
  Params params;
  pyopt::Optimizer opt("adam", {{"amsgrad", 1}});
  params.add_to(opt);
  opt.save(plain);
  opt.load(path);
  CHECK(opt.storage().state_dtype == pyopt::StateDType::Int8 && opt.storage().master_weights);
  CHECK(opt.raw_state(0, "exp_avg_sq").storage == Storage::Int8Unsigned && opt.raw_state(0, "exp_avg").absmax_size == 18);
  CHECK(opt.raw_state(1, "exp_avg").storage == Storage::Compute && opt.master(0).size() == 4608);
  opt.load(plain);  // no "storage": the defaults
  CHECK(opt.storage().state_dtype == pyopt::StateDType::Float32 && !opt.storage().master_weights);
  CHECK(opt.raw_state(0, "exp_avg").storage == Storage::Compute && opt.master(0).empty());
  CHECK(opt.state(0, "exp_avg") == std::vector<double>(4608, 0.0));
  std::remove(path.c_str());
  std::remove(plain.c_str());
}

// Malformed storage in a checkpoint: a clear std::invalid_argument, and the optimizer as it was.
PYOPT_TEST(storage_checkpoint_malformed_changes_nothing) {
  const std::string path = temp_path("storage_bad.npz");
  struct Case {
    pyopt::StateDType dtype;
    bool master;
    void (*mutate)(npz::Archive&);
    const char* message;
  };
  const Case cases[] = {
      {pyopt::StateDType::Int8, false, [](npz::Archive& a) { entry(a, "state/0/exp_avg").descr = "|b1"; },
       "state 'exp_avg' has dtype |b1, stored as 8-bit codes (|u1) with state_dtype int8"},
      {pyopt::StateDType::Int8, false,
       [](npz::Archive& a) { entry(a, "state/0/exp_avg") = npz::Array::from(std::vector<float>(4608, 0.0f)); },
       "has shape (4608,), the param has shape (18, 256)"},
      {pyopt::StateDType::Int8, false,
       [](npz::Archive& a) {
         npz::Array& c = entry(a, "state/0/exp_avg");
         c.shape = {18, 256};
         c.descr = "<f4";
         c.data.resize(4608 * 4);
       },
       "state 'exp_avg' has dtype <f4, stored as 8-bit codes (|u1) with state_dtype int8"},
      {pyopt::StateDType::Int8, false,
       [](npz::Archive& a) { entry(a, "state/0/exp_avg").shape = {256, 18}; },
       "state 'exp_avg' has shape (256, 18), the param has shape (18, 256)"},
      {pyopt::StateDType::Int8, false,
       [](npz::Archive& a) { entry(a, "state/2/exp_avg_absmax") = npz::Array::from(std::vector<float>(19, 1.0f)); },
       "8-bit scales of 5000 elements have shape (20,)"},
      {pyopt::StateDType::Int8, false,
       [](npz::Archive& a) { entry(a, "state/2/exp_avg_absmax") = npz::Array::from(std::vector<double>(20, 1.0)); },
       "state 'exp_avg_absmax' has dtype <f8, 8-bit scales are float32 (<f4)"},
      {pyopt::StateDType::Int8, false,
       [](npz::Archive& a) {
         for (auto it = a.begin(); it != a.end(); ++it)
           if (it->first == "state/2/exp_avg_sq_absmax") {
             a.erase(it);
             break;
           }
       },
       "state 'exp_avg_sq': 8-bit codes without their scales ('exp_avg_sq_absmax')"},
      {pyopt::StateDType::Int8, false,
       [](npz::Archive& a) { a.emplace_back("state/1/exp_avg_absmax", npz::Array::from(std::vector<float>(1, 1.0f))); },
       "param 1 has unknown state 'exp_avg_absmax'"},
      {pyopt::StateDType::BFloat16, false, [](npz::Archive& a) { set_meta(a, "array_dtypes", json::Value()); },
       "state 'exp_avg' has dtype <u2, stored as bfloat16 (<u2 bits) with state_dtype bfloat16"},
      {pyopt::StateDType::BFloat16, false,
       [](npz::Archive& a) {
         json::Value d = json::Value::object();
         d.set("state/0/nothing", json::Value("bfloat16"));
         set_meta(a, "array_dtypes", d);
       },
       "names entry 'state/0/nothing', which the file lacks"},
      {pyopt::StateDType::BFloat16, false,
       [](npz::Archive& a) {
         json::Value d = json::Value::object();
         d.set("state/3/exp_avg", json::Value("bfloat16"));
         set_meta(a, "array_dtypes", d);
       },
       "entry 'state/3/exp_avg' is bfloat16 stored as <f8"},
      {pyopt::StateDType::BFloat16, false,
       [](npz::Archive& a) {
         json::Value d = json::Value::object();
         d.set("state/0/exp_avg", json::Value("float8"));
         set_meta(a, "array_dtypes", d);
       },
       "only \"bfloat16\" is known"},
      {pyopt::StateDType::Float32, false,
       [](npz::Archive& a) {
         npz::Array& s = entry(a, "state/2/exp_avg");
         s.descr = "<u2";
         s.data.resize(s.data.size() / 2);
         json::Value d = json::Value::object();
         d.set("state/2/exp_avg", json::Value("bfloat16"));
         set_meta(a, "array_dtypes", d);
       },
       "state 'exp_avg' has dtype bfloat16, stored as float32 with state_dtype float32"},
      {pyopt::StateDType::Float32, true,
       [](npz::Archive& a) {
         npz::Array& m = entry(a, "state/0/master");
         m.descr = "<u2";
         m.data.resize(m.data.size() / 2);
       },
       "has dtype <u2, master weights are float32"},
      {pyopt::StateDType::Float32, true,
       [](npz::Archive& a) { a.emplace_back("state/2/master", npz::Array::from(std::vector<float>(5000, 0.0f))); },
       "no master copy of param 2 is kept (not a 16-bit param)"},
      {pyopt::StateDType::Float32, true,
       [](npz::Archive& a) {
         json::Value s = json::parse(R"({"master_weights": false, "state_dtype": "float32", "stochastic_rounding": false})");
         set_meta(a, "storage", s);
       },
       "state 'master': no master copy of param 0 is kept (master_weights is off)"},
      {pyopt::StateDType::Float32, false,
       [](npz::Archive& a) {
         set_meta(a, "storage", json::parse(R"({"master_weights": false, "state_dtype": "int8", "stochastic_rounding": false})"));
       },
       "state 'exp_avg' has dtype <f4, stored as 8-bit codes (|u1) with state_dtype int8"},
      {pyopt::StateDType::Float32, false,
       [](npz::Archive& a) {
         set_meta(a, "storage", json::parse(R"({"master_weights": false, "state_dtype": "fp8", "stochastic_rounding": false})"));
       },
       "bad 'storage'"},
      {pyopt::StateDType::Float32, false,
       [](npz::Archive& a) { set_meta(a, "storage", json::parse(R"({"master_weights": 0})")); }, "bad 'storage'"},
      {pyopt::StateDType::Float32, false, [](npz::Archive& a) { set_meta(a, "storage", json::Value("int8")); },
       "bad 'storage'"},
  };
  int k = 0;
  for (const Case& c : cases) {
    const pyopt::StorageOptions o = options(c.dtype, c.master);
    npz::Archive archive = crafted(o, path);
    c.mutate(archive);
    // from_npy normalizes some spellings: write and read the file as any reader would.
    npz::save(path, archive);
    Params params;
    pyopt::Optimizer opt("adam", {{"amsgrad", 1}, {"lr", 0.5}}, o);
    params.add_to(opt);
    const std::string before = snapshot(opt);
    const std::string msg = CHECK_THROWS(std::invalid_argument, opt.load(path));
    CHECK_MSG(contains(msg, c.message), "case " << k << ": " << msg);
    CHECK_MSG(contains(msg, path), msg);
    CHECK_MSG(snapshot(opt) == before, "case " << k);
    ++k;
  }
  // Storage options a rule cannot have: 8-bit states of adadelta, bfloat16 states of LAMB.
  for (const char* name : {"adadelta", "lamb"}) {
    Params params;
    pyopt::Optimizer opt(name);
    params.add_to(opt);
    opt.save(path);
    npz::Archive archive = npz::load(path);
    set_meta(archive, "storage", json::parse(std::string(R"({"master_weights": false, "state_dtype": ")") +
                                             (name[0] == 'l' ? "bfloat16" : "int8") + R"(", "stochastic_rounding": false})"));
    npz::save(path, archive);
    const std::string before = snapshot(opt);
    const std::string msg = CHECK_THROWS(std::invalid_argument, opt.load(path));
    CHECK_MSG(contains(msg, "saved with storage") && contains(msg, name), msg);
    CHECK(snapshot(opt) == before && !opt.storage().master_weights);
  }
  std::remove(path.c_str());
}
