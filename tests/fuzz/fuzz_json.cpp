// libFuzzer target: the JSON reader and the best.json config path (make_optimizer). Any input must
// give a value or a clear exception; a value must survive dump -> parse -> dump unchanged.
#include <pyopt/pyopt.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  namespace json = pyopt::json;
  using pyopt_fuzz::accepted;
  using pyopt_fuzz::require;
  const std::string text(reinterpret_cast<const char*>(data), size);
  json::Value value;
  if (!accepted([&] { value = json::parse(text); })) return 0;
  const std::string once = json::dump(value);
  json::Value back;
  require(accepted([&] { back = json::parse(once); }), "json::dump wrote text json::parse rejects");
  require(json::dump(back) == once, "dump(parse(dump(v))) != dump(v)");
  accepted([&] {
    pyopt::Optimizer opt = pyopt::make_optimizer(value);
    const json::Value pub = pyopt::public_hyperparameters(opt.name(), opt.hyperparameters());
    pyopt::flat_hyperparameters(opt.name(), pub);  // what make_optimizer accepted maps back
  });
  return 0;
}
