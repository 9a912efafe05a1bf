#pragma once
// Every rule pyopt compiles. To add an optimizer: write rules/<name>.hpp, list it here, give it a
// public name in src/registry.cpp, and add its reference test under tests/python/.
#include "pyopt/rules/adabelief.hpp"
#include "pyopt/rules/adadelta.hpp"
#include "pyopt/rules/adagrad.hpp"
#include "pyopt/rules/adam.hpp"
#include "pyopt/rules/adamax.hpp"
#include "pyopt/rules/adan.hpp"
#include "pyopt/rules/asgd.hpp"
#include "pyopt/rules/adopt.hpp"
#include "pyopt/rules/grams.hpp"
#include "pyopt/rules/lamb.hpp"
#include "pyopt/rules/laprop.hpp"
#include "pyopt/rules/lars.hpp"
#include "pyopt/rules/lion.hpp"
#include "pyopt/rules/nadam.hpp"
#include "pyopt/rules/radam.hpp"
#include "pyopt/rules/rmsprop.hpp"
#include "pyopt/rules/rprop.hpp"
#include "pyopt/rules/sgd.hpp"
#include "pyopt/rules/schedulefree.hpp"
#include "pyopt/rules/signsgd.hpp"
#include "pyopt/rules/sophia.hpp"
#include "pyopt/rules/yogi.hpp"
#include "pyopt/rules/qhadam.hpp"
#include "pyopt/rules/tiger.hpp"
#include "pyopt/rules/ademamix.hpp"
#include "pyopt/rules/stableadamw.hpp"
#include "pyopt/rules/madgrad.hpp"
#include "pyopt/rules/novograd.hpp"

// X(RuleType) for each rule, in a fixed order: the index is the rule's slot in every kernel table.
#define PYOPT_FOR_EACH_RULE(X) \
  X(Sgd)                       \
  X(Adagrad)                   \
  X(Rmsprop)                   \
  X(Adadelta)                  \
  X(Adamax)                    \
  X(Adam)                      \
  X(Nadam)                     \
  X(Radam)                     \
  X(Lion)                      \
  X(Grams)                     \
  X(Adan)                      \
  X(SignSgd)                   \
  X(Yogi)                      \
  X(Adopt)                     \
  X(Laprop)                    \
  X(Asgd)                      \
  X(Rprop)                     \
  X(AdaBelief)                 \
  X(Lamb)                      \
  X(Lars)                      \
  X(Sophia)                    \
  X(ScheduleFreeAdamW)          \
  X(ScheduleFreeSgd)            \
  X(QHAdam)                    \
  X(Tiger)                     \
  X(AdEMAMix)                  \
  X(StableAdamW)               \
  X(Madgrad)                   \
  X(NovoGrad)
