#pragma once
// Kernel code (rules and driver) is compiled once per ISA. Every entity those headers define
// lives in an inline namespace named after the ISA, so the copies compiled with different
// -m flags never share a symbol (and the linker can never hand an AVX-512 body to a CPU
// without AVX-512). Code that is not a kernel sees the `generic` copy.
#ifndef PYOPT_ISA_TAG
#define PYOPT_ISA_TAG generic
#endif

#define PYOPT_KERNEL_NAMESPACE_BEGIN \
  namespace pyopt {                  \
  inline namespace PYOPT_ISA_TAG {
#define PYOPT_KERNEL_NAMESPACE_END \
  }                                \
  }
// The update rules (csrc/include/pyopt/rules/) live in pyopt::<isa>::rules.
#define PYOPT_RULES_BEGIN PYOPT_KERNEL_NAMESPACE_BEGIN namespace rules {
#define PYOPT_RULES_END \
  }                     \
  PYOPT_KERNEL_NAMESPACE_END

#if defined(__GNUC__) || defined(__clang__)
#define PYOPT_INLINE inline __attribute__((always_inline))
#define PYOPT_LAMBDA_INLINE __attribute__((always_inline))
#else
#define PYOPT_INLINE inline
#define PYOPT_LAMBDA_INLINE
#endif

// The element loop has no loop-carried dependences (params, grads and state never alias: the
// bindings check it), so let the vectorizer assume so. (`#pragma omp simd` would privatize the
// rule's small state array per lane and defeat vectorization in GCC 12.)
#if defined(__clang__)
#define PYOPT_VECTORIZE_LOOP _Pragma("clang loop vectorize(enable) interleave(enable)")
#elif defined(__GNUC__)
#define PYOPT_VECTORIZE_LOOP _Pragma("GCC ivdep")
#elif defined(_MSC_VER)
#define PYOPT_VECTORIZE_LOOP __pragma(loop(ivdep))
#else
#define PYOPT_VECTORIZE_LOOP
#endif
