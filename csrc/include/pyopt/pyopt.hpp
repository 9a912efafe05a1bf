#pragma once
// The single include for C++ users of pyopt.
#include "pyopt/adafactor.hpp"
#include "pyopt/ema.hpp"
#include "pyopt/grad_norm.hpp"
#include "pyopt/optimizer.hpp"
#include "pyopt/registry.hpp"
#include "pyopt/types.hpp"
#include "pyopt/version.hpp"
