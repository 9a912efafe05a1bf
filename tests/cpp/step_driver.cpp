// pyopt_step_driver IN.npz OUT.npz — steps an optimizer over arrays written by Python, so the
// Python tests can compare C++ and Python steps bit for bit (tests/python/test_cmake_package.py).
//
// IN.npz holds param/<i> (float32/float64, float16 as <f2, bfloat16 as its <u2 bits; any shape),
// grad/<t>/<i> for t < steps (the param's dtype, or float32 for 16-bit params), and
// __driver__: a 0-d string with a JSON object
//   {"optimizer": name, "hyperparameters": {...as in best.json...}, "steps": N,
//    "storage": {"master_weights": bool, "state_dtype": "float32"|"bfloat16"|"int8",
//                "stochastic_rounding": bool} (optional, each key too, as in best.json),
//    "load": "ckpt.npz" (optional, Optimizer::load before stepping),
//    "save": "ckpt.npz" (optional, Optimizer::save after stepping),
//    "step_options": {"clip_norm": x, "clip_value": x, "skip_nonfinite": bool} (optional, each key too)}
// and, for SophiaG, hessian/<t>/<i> (optional, the param's dtype): when step t has any, they go to
// Optimizer::update_hessian (a missing i skips that param) before step t.
// The optimizer is built with pyopt::make_optimizer (the best.json path, storage options included). OUT.npz gets the
// params after the steps, as param/<i>, and per step whether it was applied and last_grad_norm()
// (float64 arrays "applied" and "grad_norm"). Errors: message on stderr, exit code 1.
#include <pyopt/pyopt.hpp>

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

namespace {

struct Param {
  pyopt::npz::Array array;
  std::vector<float> f;
  std::vector<double> d;
  std::vector<uint16_t> h;  // float16 (<f2) or bfloat16 bits (<u2)
};

int run(const std::string& in_path, const std::string& out_path) {
  const pyopt::npz::Archive in = pyopt::npz::load(in_path);
  const pyopt::npz::Array* spec = pyopt::npz::find(in, "__driver__");
  if (!spec) throw std::runtime_error(in_path + ": no __driver__ entry");
  const pyopt::json::Value cfg = pyopt::json::parse(spec->as_string());
  pyopt::Optimizer opt = pyopt::make_optimizer(cfg);

  std::vector<Param> params;
  for (std::size_t i = 0;; ++i) {
    const pyopt::npz::Array* a = pyopt::npz::find(in, "param/" + std::to_string(i));
    if (!a) break;
    params.push_back({*a, {}, {}});
  }
  for (Param& p : params) {  // after the vector stops growing: buffers must not move
    const std::size_t n = p.array.size();
    if (p.array.descr == "<f4") {
      p.f.resize(n);
      if (n) std::memcpy(p.f.data(), p.array.data.data(), n * sizeof(float));
      opt.add_param(p.f.data(), p.array.shape);
    } else if (p.array.descr == "<f8") {
      p.d.resize(n);
      if (n) std::memcpy(p.d.data(), p.array.data.data(), n * sizeof(double));
      opt.add_param(p.d.data(), p.array.shape);
    } else if (p.array.descr == "<f2" || p.array.descr == "<u2") {
      p.h.resize(n);
      if (n) std::memcpy(p.h.data(), p.array.data.data(), n * sizeof(uint16_t));
      opt.add_param(p.h.data(), p.array.shape,
                    p.array.descr == "<f2" ? pyopt::Storage::Float16 : pyopt::Storage::BFloat16);
    } else {
      throw std::runtime_error("param dtype " + p.array.descr);
    }
  }
  if (const pyopt::json::Value* load = cfg.find("load")) opt.load(load->as_string());

  pyopt::StepOptions options;
  if (const pyopt::json::Value* o = cfg.find("step_options")) {
    if (const pyopt::json::Value* v = o->find("clip_norm")) options.clip_norm = v->as_number();
    if (const pyopt::json::Value* v = o->find("clip_value")) options.clip_value = v->as_number();
    if (const pyopt::json::Value* v = o->find("skip_nonfinite")) options.skip_nonfinite = v->as_bool();
  }
  const int steps = int(cfg["steps"].as_number());
  std::vector<double> applied, grad_norms;
  static const double empty_grad = 0.0;  // an empty gradient still needs a non-null pointer (null skips the param)
  for (int t = 0; t < steps; ++t) {
    std::vector<pyopt::npz::Array> grads;
    std::vector<pyopt::GradRef> refs;
    grads.reserve(params.size());
    for (std::size_t i = 0; i < params.size(); ++i) {
      const std::string key = "grad/" + std::to_string(t) + "/" + std::to_string(i);
      const pyopt::npz::Array* g = pyopt::npz::find(in, key);
      if (!g) throw std::runtime_error(in_path + ": no " + key);
      const bool sixteen = !params[i].h.empty() || params[i].array.descr == "<f2" || params[i].array.descr == "<u2";
      if (g->descr != params[i].array.descr && !(sixteen && g->descr == "<f4"))
        throw std::runtime_error(key + ": dtype differs from the param's");
      grads.push_back(*g);
    }
    for (std::size_t i = 0; i < params.size(); ++i) {
      const void* data = grads[i].data.empty() ? static_cast<const void*>(&empty_grad) : grads[i].data.data();
      const std::string& descr = params[i].array.descr;
      if (grads[i].descr == "<f2" || grads[i].descr == "<u2")
        refs.emplace_back(static_cast<const uint16_t*>(data),
                          descr == "<f2" ? pyopt::Storage::Float16 : pyopt::Storage::BFloat16);
      else if (grads[i].descr == "<f4")
        refs.emplace_back(static_cast<const float*>(data));
      else
        refs.emplace_back(static_cast<const double*>(data));
    }
    std::vector<pyopt::GradRef> estimates;
    bool any_estimate = false;
    for (std::size_t i = 0; i < params.size(); ++i) {
      const pyopt::npz::Array* h = pyopt::npz::find(in, "hessian/" + std::to_string(t) + "/" + std::to_string(i));
      any_estimate |= h != nullptr;
      if (!h) estimates.emplace_back(nullptr);
      else if (h->descr == "<f4") estimates.emplace_back(reinterpret_cast<const float*>(h->data.data()));
      else estimates.emplace_back(reinterpret_cast<const double*>(h->data.data()));
    }
    if (any_estimate) opt.update_hessian(estimates);
    applied.push_back(opt.step(refs, options) ? 1.0 : 0.0);
    grad_norms.push_back(opt.last_grad_norm());
  }
  if (const pyopt::json::Value* save = cfg.find("save")) opt.save(save->as_string());

  pyopt::npz::Archive out;
  for (std::size_t i = 0; i < params.size(); ++i) {
    const Param& p = params[i];
    pyopt::npz::Array a = p.array.descr == "<f4"   ? pyopt::npz::Array::from(p.f.data(), p.f.size(), p.array.shape)
                          : p.array.descr == "<f8" ? pyopt::npz::Array::from(p.d.data(), p.d.size(), p.array.shape)
                                                   : pyopt::npz::Array::from(p.h.data(), p.h.size(), p.array.shape);
    a.descr = p.array.descr;
    if (p.array.shape.empty()) a.shape.clear();
    out.emplace_back("param/" + std::to_string(i), std::move(a));
  }
  out.emplace_back("applied", pyopt::npz::Array::from(applied.data(), applied.size(), {applied.size()}));
  out.emplace_back("grad_norm", pyopt::npz::Array::from(grad_norms.data(), grad_norms.size(), {grad_norms.size()}));
  pyopt::npz::save(out_path, out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s IN.npz OUT.npz\n", argv[0]);
    return 2;
  }
  try {
    return run(argv[1], argv[2]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pyopt_step_driver: %s\n", e.what());
    return 1;
  }
}
