#pragma once
// The single include for C++ users of pyopt.
#include "pyopt/adafactor.hpp"
#include "pyopt/ema.hpp"
#include "pyopt/grad_norm.hpp"
#include "pyopt/muon.hpp"
#include "pyopt/optimizer.hpp"
#include "pyopt/registry.hpp"
#include "pyopt/step_pipeline.hpp"
#include "pyopt/types.hpp"
#include "pyopt/version.hpp"
// Configs (best.json), checkpoints (.npz shared with Python) and their JSON / npz layers.
#include "pyopt/checkpoint.hpp"
#include "pyopt/factory.hpp"
#include "pyopt/json.hpp"
#include "pyopt/npz.hpp"
