#include "pyopt/checkpoint.hpp"

#include <cmath>
#include <cstring>
#include <set>
#include <stdexcept>

#include "pyopt/engines.hpp"
#include "pyopt/factory.hpp"
#include "pyopt/npz.hpp"

namespace pyopt {
namespace {

const char* const kMeta = "__pyopt_meta__";
constexpr int kFormat = 1;

json::Value meta_of(const npz::Archive& archive, const std::string& path) {
  const npz::Array* meta = npz::find(archive, kMeta);
  if (!meta) throw std::invalid_argument(path + ": not a pyopt checkpoint (no " + kMeta + " entry)");
  json::Value v;
  try {
    v = json::parse(meta->as_string());
  } catch (const std::exception& e) {
    throw std::invalid_argument(path + ": bad " + kMeta + " entry: " + e.what());
  }
  if (!v.is_object() || !v.find("optimizer") || !v["optimizer"].is_string() || !v.find("param_groups") ||
      !v["param_groups"].is_array() || !v.find("state") || !v["state"].is_object())
    throw std::invalid_argument(path + ": not a pyopt checkpoint (the meta entry needs 'optimizer', 'state' and 'param_groups')");
  if (const json::Value* f = v.find("format"))
    if (!f->is_number() || f->as_number() != kFormat)
      throw std::invalid_argument(path + ": checkpoint format " + json::dump(*f) + " is not supported (this is format " +
                                  std::to_string(kFormat) + ")");
  return v;
}

// A param index as the checkpoint spells it ("0", "12"): digits only, below `count`.
std::size_t param_index(const std::string& text, std::size_t count, const std::string& what) {
  if (text.empty() || text.size() > 19 || text.find_first_not_of("0123456789") != std::string::npos)
    throw std::invalid_argument(what + ": '" + text + "' is not a param index");
  const std::size_t i = std::stoull(text);  // at most 19 digits: fits
  if (i >= count)
    throw std::invalid_argument(what + ": state for param " + text + ", this optimizer has " + std::to_string(count) + " params");
  return i;
}

// A saved step count: a whole number that an int64_t holds.
int64_t saved_step(const json::Value& value, const std::string& what) {
  const double x = value.is_number() ? value.as_number() : -1.0;
  if (!(x >= 0.0 && x < 9223372036854775808.0 && x == std::floor(x)))  // NaN fails too
    throw std::invalid_argument(what + ": bad step " + json::dump(value) + " (a whole number >= 0 and < 2^63)");
  return int64_t(x);
}

std::string shape_text(const std::vector<std::size_t>& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

const char* const kStorageKey = "storage";
const char* const kArrayDTypesKey = "array_dtypes";
const char* const kMasterEntry = "master";
const char* const kAbsmaxSuffix = "_absmax";

// The meta's "storage" (the defaults when absent: files from before the options existed).
StorageOptions storage_of(const json::Value& meta, const std::string& who) {
  const json::Value* v = meta.find(kStorageKey);
  if (!v) return StorageOptions{};
  try {
    return storage_options_from_json(*v);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(who + e.what());
  }
}

// The meta's "array_dtypes": entry name -> the dtype its stored bits stand for ("bfloat16", stored
// as <u2). Absent: none.
std::set<std::string> bfloat16_entries(const json::Value& meta, const npz::Archive& archive, const std::string& who) {
  std::set<std::string> out;
  const json::Value* v = meta.find(kArrayDTypesKey);
  if (!v) return out;
  if (!v->is_object()) throw std::invalid_argument(who + "'" + kArrayDTypesKey + "' must be an object");
  for (const auto& [name, dtype] : v->as_object()) {
    if (!dtype.is_string() || dtype.as_string() != "bfloat16")
      throw std::invalid_argument(who + "'" + kArrayDTypesKey + "': entry '" + name + "' has dtype " +
                                  json::dump(dtype).substr(0, 80) + " (only \"bfloat16\" is known)");
    const npz::Array* a = npz::find(archive, name);
    if (!a) throw std::invalid_argument(who + "'" + kArrayDTypesKey + "' names entry '" + name + "', which the file lacks");
    if (a->descr != "<u2")
      throw std::invalid_argument(who + "entry '" + name + "' is bfloat16 stored as " + a->descr +
                                  " (bfloat16 arrays are stored as their <u2 bits)");
    if (!out.insert(name).second) throw std::invalid_argument(who + "'" + kArrayDTypesKey + "' lists '" + name + "' twice");
  }
  return out;
}

std::string storage_text(const StorageOptions& o) { return json::dump(storage_options_json(o)); }

}  // namespace

json::Value checkpoint_meta(const std::string& path) { return meta_of(npz::load(path), path); }
std::string checkpoint_optimizer(const std::string& path) { return checkpoint_meta(path)["optimizer"].as_string(); }
StorageOptions checkpoint_storage(const std::string& path) { return storage_of(checkpoint_meta(path), path + ": "); }

void Optimizer::save(const std::string& path) const {
  const RuleInfo& rule = *spec_->rule;
  npz::Archive archive;
  json::Value state = json::Value::object();
  json::Value bfloat16 = json::Value::object();
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const Param& p = params_[i];
    const std::string prefix = "state/" + std::to_string(i) + "/";
    const std::vector<std::size_t> shape = p.shape.empty() ? std::vector<std::size_t>{p.size} : p.shape;
    bool any_slot = false;
    for (int j = 0; j < rule.num_slots; ++j) {
      if (p.slots[j].empty()) continue;
      any_slot = true;
      const Storage kind = p.slot_storage[j];
      npz::Array a;
      a.descr = kind == Storage::BFloat16 ? "<u2" : is_int8(kind) ? "|u1" : p.dtype == DType::Float32 ? "<f4" : "<f8";
      a.shape = rule.engine == Engine::Rule ? shape : engines::slot_shape(rule.engine, j, shape);
      a.data = p.slots[j];
      const std::string name = prefix + rule.slot_names[j];
      if (kind == Storage::BFloat16) bfloat16.set(name, json::Value("bfloat16"));
      archive.emplace_back(name, std::move(a));
      if (is_int8(kind))
        archive.emplace_back(name + kAbsmaxSuffix, npz::Array::from(p.absmax[j].data(), p.absmax[j].size()));
    }
    if (!p.master.empty()) {
      any_slot = true;
      archive.emplace_back(prefix + kMasterEntry, npz::Array::from(p.master.data(), p.master.size(), shape));
    }
    if (p.step == 0 && !any_slot) continue;  // as Python's Optimizer.state
    json::Value entry = json::Value::object();
    entry.set("step", json::Value(static_cast<long long>(p.step)));
    for (int j = 0; j < rule.num_scalars; ++j) entry.set(rule.scalar_names[j], json::Value(p.scalars[j]));
    state.set(std::to_string(i), std::move(entry));
  }
  json::Value group = public_hyperparameters(spec_->name, hyperparameters());
  json::Value::Array indices;
  for (std::size_t i = 0; i < params_.size(); ++i) indices.emplace_back(static_cast<long long>(i));
  group.set("params", json::Value(std::move(indices)));
  json::Value meta = json::Value::object();
  meta.set("format", json::Value(kFormat));
  meta.set("optimizer", json::Value(spec_->name));
  meta.set("state", std::move(state));
  meta.set("param_groups", json::Value(json::Value::Array{std::move(group)}));
  if (storage_text(storage_) != storage_text(StorageOptions{})) meta.set(kStorageKey, storage_options_json(storage_));
  if (bfloat16.size()) meta.set(kArrayDTypesKey, std::move(bfloat16));
  archive.emplace_back(kMeta, npz::Array::string(json::dump(meta)));
  npz::save(path, archive);
}

void Optimizer::load(const std::string& path) {
  const RuleInfo& rule = *spec_->rule;
  const npz::Archive archive = npz::load(path);
  const json::Value meta = meta_of(archive, path);
  const std::string who = path + ": ";
  const std::string saved_name = meta["optimizer"].as_string();
  if (saved_name != spec_->name)
    throw std::invalid_argument(who + "the checkpoint is for optimizer '" + saved_name + "', not '" + spec_->name + "'");
  if (meta.find("lookahead"))
    throw std::invalid_argument(who + "a Lookahead checkpoint; the C++ API has no Lookahead");
  if (const json::Value* mode = meta.find("train_mode"))  // schedule-free saved in eval mode: params hold x
    if (!mode->is_bool() || !mode->as_bool())
      throw std::invalid_argument(who + "saved in eval mode (train_mode false); call opt.train() before pyopt.save");
  // The saved storage options replace this optimizer's (as Python's load_state_dict does); each
  // array must be stored as they say.
  const StorageOptions saved_storage = storage_of(meta, who);
  check_storage(saved_storage, who + "saved with storage " + storage_text(saved_storage) + ": ");
  const std::set<std::string> bfloat16 = bfloat16_entries(meta, archive, who);

  // Hyperparameters: every group must agree (one set in C++).
  std::vector<double> hyper = hyper_;
  std::size_t total = 0;
  bool first = true;
  for (const json::Value& g : meta["param_groups"].as_array()) {
    if (!g.is_object() || !g.find("params") || !g["params"].is_array())
      throw std::invalid_argument(who + "a param group without a 'params' list");
    total += g["params"].size();
    json::Value public_hyper = json::Value::object();
    for (const auto& [key, value] : g.as_object())
      if (key != "params" && key != "param_names") public_hyper.set(key, value);
    std::vector<double> next = spec_->defaults;
    try {
      for (const auto& [key, value] : flat_hyperparameters(spec_->name, public_hyper)) {
        const int index = rule.hyper_index(key);
        if (index < 0 || std::size_t(index) >= next.size())
          throw std::invalid_argument("unknown hyperparameter '" + key + "' for " + spec_->name);
        next[std::size_t(index)] = value;
      }
      rule.validate(next.data());
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(who + e.what());
    }
    if (!first && std::memcmp(next.data(), hyper.data(), next.size() * sizeof(double)) != 0)
      throw std::invalid_argument(who + "param groups with different hyperparameters; a C++ Optimizer has one set");
    hyper = next;
    first = false;
  }
  if (total != params_.size())
    throw std::invalid_argument(who + "the checkpoint holds " + std::to_string(total) + " params, this optimizer has " +
                                std::to_string(params_.size()));

  // State, checked whole before anything changes.
  struct Loaded {
    int64_t step = 0;
    double scalars[kMaxScalars];
    std::vector<char> slots[kMaxSlots];
    std::vector<float> absmax[kMaxSlots];
    bool has_absmax[kMaxSlots] = {};
    std::vector<float> master;
    Storage slot_storage[kMaxSlots];
  };
  std::vector<Loaded> loaded(params_.size());
  for (std::size_t i = 0; i < params_.size(); ++i) {
    for (int j = 0; j < rule.num_scalars; ++j) loaded[i].scalars[j] = rule.initial_scalar(j);
    for (int j = 0; j < kMaxSlots; ++j)
      loaded[i].slot_storage[j] = slot_storage_for(saved_storage, params_[i].size, params_[i].dtype, j);
  }
  for (const auto& [key, entry] : meta["state"].as_object()) {
    const std::size_t i = param_index(key, params_.size(), who + "state key");
    if (!entry.is_object()) throw std::invalid_argument(who + "state of param " + key + " is not an object");
    for (const auto& [name, value] : entry.as_object()) {
      if (name == "step") {
        loaded[i].step = saved_step(value, who + "param " + key);
        continue;
      }
      int s = -1;
      for (int j = 0; j < rule.num_scalars; ++j)
        if (name == rule.scalar_names[j]) s = j;
      if (s < 0) throw std::invalid_argument(who + "param " + key + " has unknown state '" + name + "' for " + spec_->name);
      if (!value.is_number()) throw std::invalid_argument(who + "param " + key + ": state '" + name + "' is not a number");
      loaded[i].scalars[s] = value.as_number();
    }
  }
  std::set<std::string> seen;
  for (const auto& [name, array] : archive) {
    if (!seen.insert(name).second) throw std::invalid_argument(who + "entry '" + name + "' appears twice");
    if (name == kMeta) continue;
    const std::size_t a = name.find('/'), b = name.find('/', a == std::string::npos ? a : a + 1);
    if (name.compare(0, 6, "state/") != 0 || b == std::string::npos)
      throw std::invalid_argument(who + "unexpected entry '" + name + "'");
    const std::string index = name.substr(6, b - 6), slot = name.substr(b + 1);
    const std::size_t i = param_index(index, params_.size(), who + "entry '" + name + "'");
    const Param& p = params_[i];
    const std::string what = who + "param " + index + " state '" + slot + "'";
    const bool is_bfloat16 = bfloat16.count(name) != 0;
    const std::string dtype_text = is_bfloat16 ? std::string("bfloat16") : array.descr;
    const std::vector<std::size_t> param_shape = p.shape.empty() ? std::vector<std::size_t>{p.size} : p.shape;
    int s = -1;
    for (int j = 0; j < rule.num_slots; ++j)
      if (slot == rule.slot_names[j]) s = j;
    // "<slot>_absmax": the float32 scales of an 8-bit slot, one per kQuantBlock elements.
    int absmax_of = -1;
    const std::size_t suffix = std::strlen(kAbsmaxSuffix);
    if (s < 0 && slot.size() > suffix && slot.compare(slot.size() - suffix, suffix, kAbsmaxSuffix) == 0)
      for (int j = 0; j < rule.num_slots; ++j)
        if (slot.compare(0, slot.size() - suffix, rule.slot_names[j]) == 0 && is_int8(loaded[i].slot_storage[j]))
          absmax_of = j;
    if (absmax_of >= 0) {
      const std::vector<std::size_t> want_shape{(p.size + std::size_t(kQuantBlock) - 1) / std::size_t(kQuantBlock)};
      if (array.descr != "<f4" || is_bfloat16)
        throw std::invalid_argument(what + " has dtype " + dtype_text + ", 8-bit scales are float32 (<f4)");
      if (array.shape != want_shape)
        throw std::invalid_argument(what + " has shape " + shape_text(array.shape) + ", 8-bit scales of " +
                                    std::to_string(p.size) + " elements have shape " + shape_text(want_shape));
      std::vector<float>& out = loaded[i].absmax[absmax_of];
      out.resize(want_shape[0]);
      if (array.data.size() != out.size() * sizeof(float)) throw std::invalid_argument(what + ": truncated data");
      if (!out.empty()) std::memcpy(out.data(), array.data.data(), array.data.size());
      loaded[i].has_absmax[absmax_of] = true;
      continue;
    }
    if (s < 0 && slot == kMasterEntry) {
      if (!wants_master(saved_storage, p))
        throw std::invalid_argument(what + ": no master copy of param " + index + " is kept (" +
                                    (saved_storage.master_weights ? "not a 16-bit param" : "master_weights is off") + ")");
      if (array.descr != "<f4" || is_bfloat16)
        throw std::invalid_argument(what + " has dtype " + dtype_text + ", master weights are float32 (<f4)");
      if (array.shape != param_shape)
        throw std::invalid_argument(what + " has shape " + shape_text(array.shape) + ", the param has shape " +
                                    shape_text(param_shape));
      std::vector<float>& out = loaded[i].master;
      out.resize(p.size);
      if (array.data.size() != out.size() * sizeof(float)) throw std::invalid_argument(what + ": truncated data");
      if (!out.empty()) std::memcpy(out.data(), array.data.data(), array.data.size());
      continue;
    }
    if (s < 0 || (rule.engine != Engine::Rule && !engines::has_slot(rule.engine, s, param_shape)))
      throw std::invalid_argument(who + "param " + index + " has unknown state '" + slot + "' for " + spec_->name +
                                  (s < 0 ? "" : " (a param of shape " + shape_text(param_shape) + " has none)"));
    const std::vector<std::size_t> want_shape =
        rule.engine == Engine::Rule ? param_shape : engines::slot_shape(rule.engine, s, param_shape);
    const std::size_t want_size = slot_elements(p, s);
    if (array.size() != want_size)
      throw std::invalid_argument(what + " has " + std::to_string(array.size()) + " elements, " +
                                  (rule.engine == Engine::Rule ? "the param has " : "expected ") + std::to_string(want_size));
    if (array.shape != want_shape)
      throw std::invalid_argument(what + " has shape " + shape_text(array.shape) +
                                  (rule.engine == Engine::Rule ? ", the param has shape " : ", expected shape ") +
                                  shape_text(want_shape));
    const Storage kind = loaded[i].slot_storage[s];
    if (kind != Storage::Compute) {  // bfloat16 bits or 8-bit codes, taken as they are
      const bool ok = kind == Storage::BFloat16 ? is_bfloat16 : array.descr == "|u1" && !is_bfloat16;
      if (!ok)
        throw std::invalid_argument(what + " has dtype " + dtype_text + ", stored as " +
                                    (kind == Storage::BFloat16 ? "bfloat16 (<u2 bits)" : "8-bit codes (|u1)") +
                                    " with state_dtype " + state_dtype_name(saved_storage.state_dtype));
      if (array.data.size() != want_size * (kind == Storage::BFloat16 ? 2 : 1))
        throw std::invalid_argument(what + ": truncated data");
      loaded[i].slots[s] = array.data;
      continue;
    }
    if ((array.descr != "<f4" && array.descr != "<f8") || is_bfloat16)
      throw std::invalid_argument(what + " has dtype " + dtype_text + ", stored as " +
                                  (p.dtype == DType::Float32 ? "float32" : "float64") + " with state_dtype " +
                                  state_dtype_name(saved_storage.state_dtype));
    const std::string want = p.dtype == DType::Float32 ? "<f4" : "<f8";
    if (array.descr == want) {
      loaded[i].slots[s] = array.data;
    } else {  // converted to the param's dtype, as Python's load_state_dict does
      const std::vector<double> values = array.to_doubles();
      std::vector<char>& out = loaded[i].slots[s];
      if (p.dtype == DType::Float32) {
        out.resize(values.size() * sizeof(float));
        for (std::size_t k = 0; k < values.size(); ++k) {
          const float f = float(values[k]);
          std::memcpy(out.data() + k * sizeof(float), &f, sizeof(float));
        }
      } else {
        out.resize(values.size() * sizeof(double));
        std::memcpy(out.data(), values.data(), out.size());
      }
    }
  }

  // Codes and scales of an 8-bit state come together.
  for (std::size_t i = 0; i < params_.size(); ++i)
    for (int j = 0; j < rule.num_slots; ++j)
      if (is_int8(loaded[i].slot_storage[j]) && loaded[i].slots[j].empty() != !loaded[i].has_absmax[j])
        throw std::invalid_argument(who + "param " + std::to_string(i) + " state '" + rule.slot_names[j] + "': " +
                                    (loaded[i].has_absmax[j] ? "scales ('" + std::string(rule.slot_names[j]) +
                                                                   kAbsmaxSuffix + "') without codes"
                                                             : "8-bit codes without their scales ('" +
                                                                   std::string(rule.slot_names[j]) + kAbsmaxSuffix + "')"));

  // Commit.
  hyper_ = hyper;
  storage_ = saved_storage;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    Param& p = params_[i];
    p.step = loaded[i].step;
    for (int j = 0; j < kMaxScalars; ++j) p.scalars[j] = j < rule.num_scalars ? loaded[i].scalars[j] : 0.0;
    for (int j = 0; j < kMaxSlots; ++j) {
      p.slot_storage[j] = loaded[i].slot_storage[j];
      p.slots[j] = std::move(loaded[i].slots[j]);
      p.absmax[j] = std::move(loaded[i].absmax[j]);
    }
    p.master = std::move(loaded[i].master);  // none saved: taken from the param at its next step
    ensure_slots(p);  // slots the checkpoint lacks start from their initial values, as in Python
  }
}

}  // namespace pyopt
