// libFuzzer target: the JSON reader and the best.json config path (make_optimizer). Any input must
// give a value or a clear exception; a value must survive dump -> parse -> dump unchanged (up to
// text that is not UTF-8, which dumps as U+FFFD).
#include <pyopt/pyopt.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_util.hpp"

namespace json = pyopt::json;

namespace {

// Same types and element counts throughout. Text that is not UTF-8 dumps as U+FFFD, so two keys
// of one object may dump the same, and reading the dump back keeps only the last of them.
bool same_layout(const json::Value& a, const json::Value& b) {
  if (a.type() != b.type() || a.size() != b.size()) return false;
  if (a.is_array())
    for (std::size_t i = 0; i < a.size(); ++i)
      if (!same_layout(a[i], b[i])) return false;
  if (a.is_object())
    for (std::size_t i = 0; i < a.size(); ++i)
      if (!same_layout(a.as_object()[i].second, b.as_object()[i].second)) return false;
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  using pyopt_fuzz::accepted;
  using pyopt_fuzz::require;
  const std::string text(reinterpret_cast<const char*>(data), size);
  json::Value value;
  if (!accepted([&] { value = json::parse(text); })) return 0;
  const std::string once = json::dump(value);
  json::Value back;
  require(accepted([&] { back = json::parse(once); }), "json::dump wrote text json::parse rejects");
  const std::string twice = json::dump(back);
  if (same_layout(value, back)) require(twice == once, "dump(parse(dump(v))) != dump(v)");
  require(json::dump(json::parse(twice)) == twice, "a dump of a dump does not read back to itself");
  accepted([&] {
    pyopt::Optimizer opt = pyopt::make_optimizer(value);
    const json::Value pub = pyopt::public_hyperparameters(opt.name(), opt.hyperparameters());
    pyopt::flat_hyperparameters(opt.name(), pub);  // what make_optimizer accepted maps back
  });
  return 0;
}
