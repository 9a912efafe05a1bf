#pragma once
// Checkpoints shared with Python: Optimizer::save / Optimizer::load (declared in optimizer.hpp)
// read and write exactly what pyopt.save / pyopt.load do, so a file written by either language
// restores in the other.
//
// Format (format 1): an uncompressed .npz (a zip of .npy files, as np.savez writes) holding
//   state/<i>/<slot>   one array per allocated state slot of param i (e.g. state/0/exp_avg), in
//                      the param's dtype and shape (Adafactor's factors in pyopt.Adafactor's:
//                      row_var (..., rows, 1), col_var (..., 1, cols))
//   __pyopt_meta__     a 0-d numpy string (dtype <U) with a JSON object:
//     {"format": 1, "optimizer": "adamw",
//      "state": {"0": {"step": 10, <scalar state, e.g. "mu_product": 0.9>}, ...},
//      "param_groups": [{"lr": 0.001, "betas": [0.9, 0.999], "amsgrad": false, ..., "params": [0, 1]}]}
//   Hyperparameters are spelled as in Python (tuples as lists, flags as true/false; see
//   factory.hpp). Params with no step and no state have no "state" entry.
//
// Storage options (StorageOptions in optimizer.hpp; the Python optimizers' keyword options):
//   "storage": {"master_weights": false, "state_dtype": "float32", "stochastic_rounding": false}
//                      in the meta; absent means these defaults (C++ writes it only when an
//                      option differs from them, so such files stay readable by older versions).
//                      load() gives the optimizer the saved options, as Python's load_state_dict
//                      (checkpoint_storage() reads them without loading).
//   state/<i>/<slot>   a float32/float64 state as above; a bfloat16 state as its raw 16-bit
//                      words, dtype <u2 (numpy has no bfloat16; np.load gives uint16, whose
//                      .view(ml_dtypes.bfloat16) is the state), its entry name listed in the meta's
//                      "array_dtypes": {"state/0/exp_avg": "bfloat16", ...} (present only when
//                      non-empty); an 8-bit state as its codes, dtype |u1, the param's shape,
//   state/<i>/<slot>_absmax  with its float32 (<f4) scales, shape (ceil(size / 256),);
//   state/<i>/master   the float32 (<f4) master copy of a 16-bit param (master_weights), the
//                      param's shape.
// Everything is stored bit for bit as the optimizer holds it (8-bit states are never
// dequantized), so save -> load -> save gives the same arrays, in either language. load() checks
// each array's dtype and shape against what the saved options store for that slot (and that codes
// and scales come in pairs) before changing anything.
//
// A C++ Optimizer has one hyperparameter set: it writes one param group, and loads a file with
// several groups only when they all hold the same hyperparameters. Python-only parts of a file
// (attached lr schedules) are ignored; a Lookahead checkpoint is refused.
//
//   pyopt::Optimizer opt(pyopt::checkpoint_optimizer("ckpt.npz"));  // the name it was saved with
//   opt.add_param(w.data(), w.size());
//   opt.load("ckpt.npz");
#include <string>

#include "pyopt/json.hpp"
#include "pyopt/optimizer.hpp"

namespace pyopt {

// The optimizer name a checkpoint was written for.
std::string checkpoint_optimizer(const std::string& path);
// The checkpoint's JSON meta entry (as above).
json::Value checkpoint_meta(const std::string& path);
// The storage options a checkpoint was written with (the defaults when it does not say).
StorageOptions checkpoint_storage(const std::string& path);

}  // namespace pyopt
