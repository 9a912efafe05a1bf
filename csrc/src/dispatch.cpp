// Runtime ISA dispatch (CPUID + XGETBV on x86-64), the thread count, and build information.
#include <omp.h>

#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "pyopt/kernels.hpp"
#include "pyopt/registry.hpp"
#include "pyopt/version.hpp"
#include "pyopt_isa_list.hpp"  // PYOPT_FOR_EACH_ISA(X): the compiled paths, worst first (cmake/pyopt_isa.cmake)

#if defined(__x86_64__) || defined(_M_X64)
#define PYOPT_X86_64 1
#include <cpuid.h>
#endif

namespace pyopt {

// The kernels of each compiled ISA path (src/kernels_isa.cpp compiled with that ISA's flags).
#define PYOPT_DECLARE_ISA(Isa) \
  inline namespace Isa {       \
  extern const IsaKernels isa_kernels; \
  }
PYOPT_FOR_EACH_ISA(PYOPT_DECLARE_ISA)
#undef PYOPT_DECLARE_ISA

namespace {

struct IsaPath {
  const char* name;
  const IsaKernels* kernels;
  bool supported;
};

// Which ISA paths this CPU runs: one field per name that cmake/pyopt_isa.cmake may compile.
struct CpuFeatures {
  bool baseline = false, avx2 = false, avx512 = false;
};

#if PYOPT_X86_64
CpuFeatures detect_cpu() {
  CpuFeatures f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool sse42 = c & bit_SSE4_2, popcnt = c & bit_POPCNT, ssse3 = c & bit_SSSE3, sse41 = c & bit_SSE4_1;
  const bool cx16 = c & bit_CMPXCHG16B;
  const bool fma = c & bit_FMA, osxsave = c & bit_OSXSAVE, avx = c & bit_AVX, f16c = c & bit_F16C;
  f.baseline = sse42 && popcnt && ssse3 && sse41 && cx16;  // x86-64-v2
  unsigned long long xcr0 = 0;
  if (osxsave) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    xcr0 = (static_cast<unsigned long long>(hi) << 32) | lo;
  }
  const bool os_ymm = (xcr0 & 0x6) == 0x6;      // SSE + AVX state saved by the OS
  const bool os_zmm = (xcr0 & 0xe6) == 0xe6;    // + opmask, ZMM_Hi256, Hi16_ZMM
  unsigned a7 = 0, b7 = 0, c7 = 0, d7 = 0;
  if (__get_cpuid_max(0, nullptr) >= 7) __cpuid_count(7, 0, a7, b7, c7, d7);
  const bool avx2 = b7 & bit_AVX2, bmi1 = b7 & bit_BMI, bmi2 = b7 & bit_BMI2;
  f.avx2 = f.baseline && os_ymm && avx && avx2 && fma && f16c && bmi1 && bmi2;  // x86-64-v3
  const bool avx512f = b7 & bit_AVX512F, avx512bw = b7 & bit_AVX512BW, avx512vl = b7 & bit_AVX512VL,
             avx512dq = b7 & bit_AVX512DQ, avx512cd = b7 & bit_AVX512CD;
  f.avx512 = f.avx2 && os_zmm && avx512f && avx512bw && avx512vl && avx512dq && avx512cd;
  return f;
}
#else
CpuFeatures detect_cpu() {
  CpuFeatures f;
  f.baseline = true;
  return f;
}
#endif

const std::vector<IsaPath>& paths() {  // best last
  static const std::vector<IsaPath> all = [] {
    std::vector<IsaPath> v;
    const CpuFeatures cpu = detect_cpu();
#define PYOPT_ISA_PATH(Isa) v.push_back({#Isa, &Isa::isa_kernels, cpu.Isa});
    PYOPT_FOR_EACH_ISA(PYOPT_ISA_PATH)
#undef PYOPT_ISA_PATH
    return v;
  }();
  return all;
}

const IsaPath* best_path_up_to(const std::string& cap) {
  std::string wanted = cap == "scalar" ? "baseline" : cap;  // "scalar" is accepted as the old name
  bool known = wanted.empty();
  for (const IsaPath& p : paths()) known = known || wanted == p.name;
  if (!known) {
    std::string valid;
    for (const IsaPath& p : paths()) valid += (valid.empty() ? "" : ", ") + std::string(p.name);
    throw std::invalid_argument("unknown ISA '" + cap + "'; compiled ISAs: " + valid);
  }
  const IsaPath* best = nullptr;
  for (const IsaPath& p : paths()) {
    if (p.supported) best = &p;
    if (!wanted.empty() && wanted == p.name) break;
  }
  if (!best) throw std::runtime_error("pyopt: this CPU lacks the baseline ISA (x86-64-v2: SSE4.2, POPCNT)");
  return best;
}

std::atomic<const IsaPath*>& selected() {
  static std::atomic<const IsaPath*> path{[] {
    const char* env = std::getenv("PYOPT_ISA");
    return best_path_up_to(env ? env : "");
  }()};
  return path;
}

std::atomic<int>& thread_setting() {
  static std::atomic<int> n{0};  // 0: follow OpenMP (OMP_NUM_THREADS or the core count)
  return n;
}

thread_local int calling_thread_count = 0;  // ThreadCountScope's; 0: none

}  // namespace

void run_kernel(const RuleInfo& rule, DType dtype, const TensorArgs* tensors, int64_t count) {
  const KernelFn fn = selected().load()->kernels->rules[rule.index].by_dtype[static_cast<int>(dtype)];
  fn(tensors, count, num_threads());
}

void run_rows_kernel(const RuleInfo& rule, DType dtype, const TensorArgs& table, const int64_t* rows, int64_t count,
                     int64_t cols) {
  const RowsKernelFn fn = selected().load()->kernels->rules[rule.index].rows_by_dtype[static_cast<int>(dtype)];
  fn(table, rows, count, cols, num_threads());
}

void run_map(ElementMap map, DType dtype, const MapArgs* tensors, int64_t count) {
  selected().load()->kernels->maps[static_cast<int>(map)][static_cast<int>(dtype)](tensors, count, num_threads());
}

void run_adafactor(DType dtype, const AdafactorArgs& args) {
  selected().load()->kernels->adafactor[static_cast<int>(dtype)](args, num_threads());
}

void run_quantize8(const float* x, int64_t n, bool is_signed, unsigned char* codes, float* absmax) {
  selected().load()->kernels->quantize8(x, n, is_signed, codes, absmax, num_threads());
}

void run_dequantize8(const unsigned char* codes, const float* absmax, int64_t n, bool is_signed, float* x) {
  selected().load()->kernels->dequantize8(codes, absmax, n, is_signed, x, num_threads());
}

std::string isa() { return selected().load()->name; }

std::vector<std::string> isa_available() {
  std::vector<std::string> out;
  for (const IsaPath& p : paths())
    if (p.supported) out.emplace_back(p.name);
  return out;
}

std::vector<std::string> isa_compiled() {
  std::vector<std::string> out;
  for (const IsaPath& p : paths()) out.emplace_back(p.name);
  return out;
}

void set_isa(const std::string& name) { selected().store(best_path_up_to(name)); }

int num_threads() {
  if (calling_thread_count > 0) return calling_thread_count;
  const int n = thread_setting().load();
  return n > 0 ? n : omp_get_max_threads();
}

void set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("num_threads must be >= 1, got " + std::to_string(n));
  thread_setting().store(n);
}

ThreadCountScope::ThreadCountScope(int n) : previous_(calling_thread_count) {
  if (n < 0) throw std::invalid_argument("num_threads must be >= 1 (or 0: the global setting), got " + std::to_string(n));
  if (n > 0) calling_thread_count = n;
}

ThreadCountScope::~ThreadCountScope() { calling_thread_count = previous_; }

std::string compiler() {
#if defined(__clang__)
  return "clang " __clang_version__;
#elif defined(__GNUC__)
  return "gcc " __VERSION__;
#else
  return "unknown";
#endif
}

const char* version() { return PYOPT_VERSION; }

}  // namespace pyopt
