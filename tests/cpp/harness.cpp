// The test driver.
//   pyopt_cpp_tests <case>            run one case (what ctest does)
//   pyopt_cpp_tests                   run every case
//   pyopt_cpp_tests --list            print the case names
//   pyopt_cpp_tests --expect a b ...  fail unless the registered cases are exactly a b ... (keeps
//                                     tests/cpp/CMakeLists.txt in sync with the code)
#include <pyopt/pyopt.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "harness.hpp"

namespace pyopt_test {
std::vector<Case>& registry() {
  static std::vector<Case> cases;
  return cases;
}
}  // namespace pyopt_test

namespace {

int run_case(const pyopt_test::Case& c) {
  std::printf("[ RUN  ] %s\n", c.name.c_str());
  std::fflush(stdout);
  try {
    c.fn();
  } catch (const pyopt_test::Failure& f) {
    std::printf("[ FAIL ] %s\n  %s\n", c.name.c_str(), f.what());
    return 1;
  } catch (const std::exception& e) {
    std::printf("[ FAIL ] %s\n  unexpected exception: %s\n", c.name.c_str(), e.what());
    return 1;
  } catch (...) {
    std::printf("[ FAIL ] %s\n  unexpected non-std exception\n", c.name.c_str());
    return 1;
  }
  std::printf("[  OK  ] %s\n", c.name.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  auto& cases = pyopt_test::registry();
  std::sort(cases.begin(), cases.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  std::printf("pyopt %s, %s, ISA %s, available:", pyopt::version(), pyopt::compiler().c_str(),
              pyopt::isa().c_str());
  for (const auto& s : pyopt::isa_available()) std::printf(" %s", s.c_str());
  std::printf(", threads %d\n", pyopt::num_threads());

  if (argc == 1) {
    int failed = 0;
    for (const auto& c : cases) failed += run_case(c);
    std::printf("%d of %zu cases failed\n", failed, cases.size());
    return failed ? 1 : 0;
  }
  if (std::strcmp(argv[1], "--list") == 0) {
    for (const auto& c : cases) std::printf("%s\n", c.name.c_str());
    return 0;
  }
  if (std::strcmp(argv[1], "--expect") == 0) {
    std::vector<std::string> expected(argv + 2, argv + argc), actual;
    for (const auto& c : cases) actual.push_back(c.name);
    std::sort(expected.begin(), expected.end());
    if (expected == actual) return 0;
    std::printf("registered cases and tests/cpp/CMakeLists.txt differ\n  registered:");
    for (const auto& s : actual) std::printf(" %s", s.c_str());
    std::printf("\n  in CMake:  ");
    for (const auto& s : expected) std::printf(" %s", s.c_str());
    std::printf("\n");
    return 1;
  }
  int failed = 0;
  for (int i = 1; i < argc; ++i) {
    auto it = std::find_if(cases.begin(), cases.end(), [&](const auto& c) { return c.name == argv[i]; });
    if (it == cases.end()) {
      std::printf("unknown case '%s' (see --list)\n", argv[i]);
      return 2;
    }
    failed += run_case(*it);
  }
  return failed ? 1 : 0;
}
