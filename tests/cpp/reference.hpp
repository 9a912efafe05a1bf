#pragma once
// Independent scalar double-precision references, written from /work/shared/RULES.md (not from
// the rule headers). Each step works on one tensor; state arrays are named as pyopt names its slots
// so they can be compared with Optimizer::state().
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace pyopt_test {

using Hyper = std::map<std::string, double>;

// Every hyperparameter of a public name, with the defaults RULES.md gives.
inline Hyper rules_md_defaults(const std::string& name) {
  const Hyper adam = {{"lr", 1e-3},          {"beta1", 0.9},   {"beta2", 0.999},
                      {"eps", 1e-8},         {"weight_decay", 0.0}, {"amsgrad", 0.0},
                      {"decoupled_weight_decay", 0.0}};
  const Hyper sgd = {{"lr", 1e-3}, {"momentum", 0.0}, {"dampening", 0.0}, {"weight_decay", 0.0}, {"nesterov", 0.0}};
  Hyper h;
  if (name == "adam") {
    h = adam;
  } else if (name == "adamw") {
    h = adam;
    h["weight_decay"] = 1e-2;
    h["decoupled_weight_decay"] = 1.0;
  } else if (name == "amsgrad") {
    h = adam;
    h["amsgrad"] = 1.0;
  } else if (name == "sgd") {
    h = sgd;
  } else if (name == "momentum") {
    h = sgd;
    h["momentum"] = 0.9;
  } else if (name == "nag") {
    h = sgd;
    h["momentum"] = 0.9;
    h["nesterov"] = 1.0;
  } else {
    throw std::logic_error("no reference for " + name);
  }
  return h;
}

// The rule family a public name runs.
inline std::string reference_rule(const std::string& name) {
  if (name == "adam" || name == "adamw" || name == "amsgrad") return "adam";
  if (name == "sgd" || name == "momentum" || name == "nag") return "sgd";
  throw std::logic_error("no reference for " + name);
}

struct RefTensor {
  std::vector<double> p;
  std::map<std::string, std::vector<double>> state;
  int64_t t = 0;

  std::vector<double>& slot(const std::string& name) {
    auto& s = state[name];
    if (s.empty()) s.assign(p.size(), 0.0);
    return s;
  }
};

// adam / adamw / amsgrad:
//   adamw: p *= 1 − lr·wd first (decoupled); adam: g += wd·p (coupled)
//   m = lerp(m, g, 1−β1); v = β2·v + (1−β2)·g²; bc1 = 1−β1^t, bc2 = 1−β2^t
//   denom = √v/√bc2 + eps (amsgrad: vmax = max(vmax, v), denom = √vmax/√bc2 + eps)
//   p −= (lr/bc1)·m/denom
inline void ref_adam_step(RefTensor& x, const std::vector<double>& grad, const Hyper& h) {
  const double lr = h.at("lr"), b1 = h.at("beta1"), b2 = h.at("beta2"), eps = h.at("eps");
  const double wd = h.at("weight_decay");
  const bool amsgrad = h.at("amsgrad") != 0.0, decoupled = h.at("decoupled_weight_decay") != 0.0;
  const int64_t t = ++x.t;
  const double bc1 = 1.0 - std::pow(b1, double(t));
  const double bc2 = 1.0 - std::pow(b2, double(t));
  std::vector<double>& m = x.slot("exp_avg");
  std::vector<double>& v = x.slot("exp_avg_sq");
  std::vector<double>* vmax = amsgrad ? &x.slot("max_exp_avg_sq") : nullptr;
  for (std::size_t i = 0; i < x.p.size(); ++i) {
    double p = x.p[i], g = grad[i];
    if (wd != 0.0) {
      if (decoupled)
        p *= 1.0 - lr * wd;
      else
        g += wd * p;
    }
    m[i] = m[i] + (1.0 - b1) * (g - m[i]);
    v[i] = b2 * v[i] + (1.0 - b2) * g * g;
    double second = v[i];
    if (vmax) {
      (*vmax)[i] = std::max((*vmax)[i], v[i]);
      second = (*vmax)[i];
    }
    const double denom = std::sqrt(second) / std::sqrt(bc2) + eps;
    p -= (lr / bc1) * m[i] / denom;
    x.p[i] = p;
  }
}

// sgd / momentum / nag:
//   g += wd·p; if μ≠0: b = g at the first step, later b = μ·b + (1−τ)·g; g = nesterov ? g + μ·b : b
//   p −= lr·g
inline void ref_sgd_step(RefTensor& x, const std::vector<double>& grad, const Hyper& h) {
  const double lr = h.at("lr"), mu = h.at("momentum"), tau = h.at("dampening"), wd = h.at("weight_decay");
  const bool nesterov = h.at("nesterov") != 0.0;
  const int64_t t = ++x.t;
  std::vector<double>* b = mu != 0.0 ? &x.slot("momentum_buffer") : nullptr;
  for (std::size_t i = 0; i < x.p.size(); ++i) {
    double p = x.p[i], g = grad[i];
    if (wd != 0.0) g += wd * p;
    if (b) {
      double& buf = (*b)[i];
      buf = t == 1 ? g : mu * buf + (1.0 - tau) * g;
      g = nesterov ? g + mu * buf : buf;
    }
    p -= lr * g;
    x.p[i] = p;
  }
}

inline void ref_step(const std::string& optimizer, RefTensor& x, const std::vector<double>& grad, const Hyper& h) {
  const std::string rule = reference_rule(optimizer);
  if (rule == "adam")
    ref_adam_step(x, grad, h);
  else
    ref_sgd_step(x, grad, h);
}

}  // namespace pyopt_test
