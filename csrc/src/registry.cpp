// The public optimizer names and the rules they run. Hyperparameter names, defaults and kinds
// come from the rule headers; a public name only overrides defaults or pins flags.
#include "pyopt/registry.hpp"

#include <stdexcept>

#include "pyopt/rules/all.hpp"

namespace pyopt {
namespace {

template <class Rule>
RuleInfo make_rule_info(int index) {
  return RuleInfo{Rule::name,
                  index,
                  Rule::hyper,
                  int(Rule::kNumHyper),
                  Rule::slot_names,
                  int(sizeof(Rule::slot_names) / sizeof(Rule::slot_names[0])),
                  Rule::scalar_names,
                  Rule::num_scalars,
                  &Rule::variant,
                  +[](int v) { return Rule::slot_mask(v); },
                  &Rule::validate,
                  &Rule::initial_state,
                  &Rule::initial_scalar};
}

std::vector<RuleInfo> build_rules() {
  std::vector<RuleInfo> out;
#define PYOPT_RULE_INFO(Rule) out.push_back(make_rule_info<rules::Rule>(int(out.size())));
  PYOPT_FOR_EACH_RULE(PYOPT_RULE_INFO)
#undef PYOPT_RULE_INFO
  return out;
}

const RuleInfo& rule_named(const char* name) {
  for (const RuleInfo& r : all_rules())
    if (std::string(r.name) == name) return r;
  throw std::logic_error(std::string("pyopt: no rule named ") + name);
}

struct Entry {
  const char* name;
  const char* rule;
  std::vector<std::pair<const char*, double>> defaults;
  std::vector<const char*> fixed;
  const char* summary;
  const char* reference;
};

OptimizerSpec make_spec(const Entry& e) {
  const RuleInfo& rule = rule_named(e.rule);
  OptimizerSpec spec{e.name, &rule, {}, {}, e.summary, e.reference};
  for (int i = 0; i < rule.num_hyper; ++i) spec.defaults.push_back(rule.hyper[i].default_value);
  for (auto& [key, value] : e.defaults) {
    const int i = rule.hyper_index(key);
    if (i < 0) throw std::logic_error(std::string("pyopt: rule ") + e.rule + " has no " + key);
    spec.defaults[i] = value;
  }
  for (const char* key : e.fixed) spec.fixed.emplace_back(key);
  return spec;
}

std::vector<OptimizerSpec> build_optimizers() {
  const std::vector<Entry> entries = {
      {"sgd", "sgd", {}, {}, "Stochastic gradient descent, optional momentum / Nesterov", "torch.optim.SGD"},
      {"momentum", "sgd", {{"momentum", 0.9}}, {}, "SGD with heavy-ball momentum (momentum=0.9)",
       "torch.optim.SGD(momentum=0.9)"},
      {"nag", "sgd", {{"momentum", 0.9}, {"nesterov", 1.0}}, {}, "SGD with Nesterov momentum",
       "torch.optim.SGD(momentum=0.9, nesterov=True)"},
      {"adagrad", "adagrad", {}, {}, "Adagrad (Duchi et al., 2011)", "torch.optim.Adagrad"},
      {"rmsprop", "rmsprop", {}, {}, "RMSprop, optional centering and momentum", "torch.optim.RMSprop"},
      {"adadelta", "adadelta", {}, {}, "Adadelta (Zeiler, 2012)", "torch.optim.Adadelta"},
      {"adamax", "adamax", {}, {}, "Adamax, Adam with the infinity norm", "torch.optim.Adamax"},
      {"adam", "adam", {}, {}, "Adam (Kingma & Ba, 2015), coupled L2 weight decay", "torch.optim.Adam"},
      {"adamw", "adam", {{"weight_decay", 1e-2}, {"decoupled_weight_decay", 1.0}}, {"decoupled_weight_decay"},
       "AdamW, Adam with decoupled weight decay (Loshchilov & Hutter, 2019)", "torch.optim.AdamW"},
      {"amsgrad", "adam", {{"amsgrad", 1.0}}, {"amsgrad"}, "AMSGrad (Reddi et al., 2018)",
       "torch.optim.Adam(amsgrad=True)"},
      {"nadam", "nadam", {}, {}, "NAdam, Adam with Nesterov momentum (Dozat, 2016)", "torch.optim.NAdam"},
      {"radam", "radam", {}, {}, "RAdam, rectified Adam (Liu et al., 2020)", "torch.optim.RAdam"},
      {"lion", "lion", {}, {}, "Lion, sign of interpolated momentum (Chen et al., 2023)", "lion-pytorch 0.2.5 Lion"},
      {"grams", "grams", {}, {}, "Grams, sign of the gradient with Adam's magnitude (Cao et al., 2024)",
       "Gunale0926/Grams grams.py (grams-pytorch 0.0.2)"},
      {"adan", "adan", {}, {}, "Adan, adaptive Nesterov momentum (Xie et al., 2022)", "sail-sg/Adan adan.py"},
      {"signsgd", "signsgd", {}, {}, "signSGD, the sign of the gradient (Bernstein et al., 2018)",
       "pytorch-optimizer 4.1.0 SignSGD(momentum=0)"},
      {"signum", "signsgd", {{"momentum", 0.9}}, {}, "Signum, the sign of the gradient's momentum (momentum=0.9)",
       "pytorch-optimizer 4.1.0 SignSGD"},
      {"yogi", "yogi", {}, {}, "Yogi, additive second-moment updates (Zaheer et al., 2018)",
       "pytorch-optimizer 4.1.0 Yogi"},
      {"adopt", "adopt", {}, {}, "ADOPT, momentum of the gradient normalised by past moments (Taniguchi et al., 2024)",
       "pytorch-optimizer 4.1.0 ADOPT"},
      {"laprop", "laprop", {}, {}, "LaProp, momentum of the RMS-normalised gradient (Ziyin et al., 2020)",
       "pytorch-optimizer 4.1.0 LaProp"},
      {"asgd", "asgd", {}, {}, "ASGD, averaged stochastic gradient descent (Polyak & Juditsky, 1992)",
       "torch.optim.ASGD"},
      {"rprop", "rprop", {}, {}, "Rprop, resilient backpropagation (Riedmiller & Braun, 1993)", "torch.optim.Rprop"},
      {"adabelief", "adabelief", {}, {}, "AdaBelief, Adam with the belief in observed gradients (Zhuang et al., 2020)",
       "adabelief-pytorch 0.2.0 AdaBelief"},
      {"lamb", "lamb", {}, {}, "LAMB, Adam with a per-tensor trust ratio (You et al., 2020)", "optax.lamb (paper, Alg. 2)"},
      {"lars", "lars", {}, {}, "LARS, momentum SGD with a per-tensor trust ratio (You et al., 2017)", "optax.lars"},
      {"sophia", "sophia", {}, {}, "SophiaG, clipped steps preconditioned by a diagonal Hessian EMA (Liu et al., 2023)",
       "Liuhong99/Sophia sophia.py SophiaG"},
      {"schedulefree_adamw", "schedulefree_adamw", {}, {},
       "Schedule-free AdamW: no lr schedule needed, eval() swaps in the average (Defazio et al., 2024)",
       "facebookresearch schedulefree 1.4.1 AdamWScheduleFree"},
      {"schedulefree_sgd", "schedulefree_sgd", {}, {}, "Schedule-free SGD with momentum (Defazio et al., 2024)",
       "facebookresearch schedulefree 1.4.1 SGDScheduleFree"},
      {"qhadam", "qhadam", {}, {}, "QHAdam, Adam with quasi-hyperbolic momentum (Ma & Yarats, 2019)",
       "pytorch-optimizer 4.1.0 QHAdam"},
      {"tiger", "tiger", {}, {}, "Tiger, the sign of the gradient's EMA (Su, 2023)", "pytorch-optimizer 4.1.0 Tiger"},
      {"ademamix", "ademamix", {}, {}, "AdEMAMix, Adam with a mix of fast and slow EMAs (Pagliardini et al., 2024)",
       "pytorch-optimizer 4.1.0 AdEMAMix"},
      {"stableadamw", "stableadamw", {}, {},
       "StableAdamW, AdamW with debiased betas and per-tensor RMS update clipping (Wortsman et al., 2023)",
       "pytorch-optimizer 4.1.0 StableAdamW"},
      {"madgrad", "madgrad", {}, {}, "MADGRAD, momentumized dual-averaged adaptive gradient (Defazio & Jelassi, 2021)",
       "pytorch-optimizer 4.1.0 MADGRAD"},
      {"novograd", "novograd", {}, {}, "NovoGrad, layer-wise normalised gradient momentum (Ginsburg et al., 2019)",
       "pytorch-optimizer 4.1.0 NovoGrad"},
  };
  std::vector<OptimizerSpec> out;
  for (const Entry& e : entries) out.push_back(make_spec(e));
  return out;
}

}  // namespace

int RuleInfo::hyper_index(const std::string& key) const {
  for (int i = 0; i < num_hyper; ++i)
    if (key == hyper[i].name) return i;
  return -1;
}

bool OptimizerSpec::is_fixed(const std::string& key) const {
  for (const std::string& f : fixed)
    if (f == key) return true;
  return false;
}

const std::vector<RuleInfo>& all_rules() {
  static const std::vector<RuleInfo> all = build_rules();
  return all;
}

const std::vector<OptimizerSpec>& optimizers() {
  static const std::vector<OptimizerSpec> all = build_optimizers();
  return all;
}

const OptimizerSpec& find_optimizer(const std::string& name) {
  for (const OptimizerSpec& s : optimizers())
    if (s.name == name) return s;
  std::string valid;
  for (const OptimizerSpec& s : optimizers()) valid += (valid.empty() ? "" : ", ") + s.name;
  throw std::invalid_argument("unknown optimizer '" + name + "'; available: " + valid);
}

}  // namespace pyopt
