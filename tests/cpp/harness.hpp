#pragma once
// A minimal self-contained test harness: named cases, CHECK macros that throw on failure, and a
// main (harness.cpp) that runs one case by name, so ctest can register one test per case.
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace pyopt_test {

struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Case {
  std::string name;
  void (*fn)();
};

std::vector<Case>& registry();

struct Register {
  Register(const char* name, void (*fn)()) { registry().push_back({name, fn}); }
};

[[noreturn]] inline void fail(const char* file, int line, const std::string& what) {
  std::ostringstream os;
  os << file << ":" << line << ": " << what;
  throw Failure(os.str());
}

// Runs f, which must throw E; returns the exception's message. Any other outcome is a failure.
template <class E, class F>
std::string expect_throw(F&& f, const char* file, int line, const char* expr) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    fail(file, line, std::string("`") + expr + "` threw the wrong exception type: " + e.what());
  } catch (...) {
    fail(file, line, std::string("`") + expr + "` threw a non-std exception");
  }
  fail(file, line, std::string("`") + expr + "` did not throw");
}

}  // namespace pyopt_test

#define PYOPT_TEST(name)                                                       \
  static void pyopt_test_fn_##name();                                          \
  static const ::pyopt_test::Register pyopt_test_reg_##name(#name, &pyopt_test_fn_##name); \
  static void pyopt_test_fn_##name()

#define CHECK(cond)                                                             \
  do {                                                                          \
    if (!(cond)) ::pyopt_test::fail(__FILE__, __LINE__, "CHECK(" #cond ") failed"); \
  } while (0)

// CHECK_MSG(cond, a << b << c): the message is only built on failure.
#define CHECK_MSG(cond, msg)                                                    \
  do {                                                                          \
    if (!(cond)) {                                                              \
      std::ostringstream pyopt_test_os_;                                        \
      pyopt_test_os_ << "CHECK(" #cond ") failed: " << msg;                     \
      ::pyopt_test::fail(__FILE__, __LINE__, pyopt_test_os_.str());             \
    }                                                                           \
  } while (0)

#define CHECK_THROWS(E, expr) ::pyopt_test::expect_throw<E>([&] { (void)(expr); }, __FILE__, __LINE__, #expr)
