# Compiles csrc/src/kernels_isa.cpp once per instruction set, each copy with its own flags and its
# own namespace (PYOPT_ISA_TAG), so src/dispatch.cpp can pick the best one at run time.
# No -march=native: the package must run on any CPU of its architecture.
include(CheckCXXCompilerFlag)
# Only the baseline path (one copy of the kernels instead of three): a third of the build time,
# for quick test builds. Not for shipping: AVX2 / AVX-512 CPUs then run the SSE4.2 kernels.
option(PYOPT_BASELINE_ONLY "Compile only the baseline kernels (x86-64: no AVX2/AVX-512 paths)" OFF)

if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  set(PYOPT_WARNINGS -Wall -Wextra)
  # Kernel flags: no -ffast-math, so NaN and Inf propagate exactly as in the references; no FMA
  # contraction by the compiler, so an element's result never depends on whether it falls in the
  # vector body or the tail of a chunk (and so on the thread count). Rules fuse deliberately
  # (fmadd() in rules/common.hpp) where torch does: avx2 and avx512 give the same bits, the
  # baseline build (no FMA) differs from them by ulps, as torch itself does on such a CPU.
  set(PYOPT_KERNEL_FLAGS -O3 -fno-math-errno -ffp-contract=off)
else()
  set(PYOPT_WARNINGS /W3)
  set(PYOPT_KERNEL_FLAGS /O2 /fp:precise)
endif()

function(_pyopt_isa_object name flags)
  add_library(pyopt_kernels_${name} OBJECT csrc/src/kernels_isa.cpp)
  set_target_properties(pyopt_kernels_${name} PROPERTIES POSITION_INDEPENDENT_CODE ON)
  target_compile_definitions(pyopt_kernels_${name} PRIVATE PYOPT_ISA_TAG=${name})
  target_compile_options(pyopt_kernels_${name} PRIVATE ${PYOPT_KERNEL_FLAGS} ${flags} ${PYOPT_WARNINGS})
  target_link_libraries(pyopt_kernels_${name} PRIVATE pyopt_headers OpenMP::OpenMP_CXX)
  string(JOIN " " _shown ${PYOPT_KERNEL_FLAGS} ${flags})
  message(STATUS "pyopt: kernels for ${name}: ${_shown}")
endfunction()

function(pyopt_add_isa_kernels out_var)
  set(objects "")
  set(defines "")
  if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
    if(MSVC)
      _pyopt_isa_object(baseline "")
      _pyopt_isa_object(avx2 "/arch:AVX2")
      _pyopt_isa_object(avx512 "/arch:AVX512")
      list(APPEND defines PYOPT_HAVE_AVX2=1 PYOPT_HAVE_AVX512=1)
      list(APPEND objects $<TARGET_OBJECTS:pyopt_kernels_avx2> $<TARGET_OBJECTS:pyopt_kernels_avx512>)
    else()
      check_cxx_compiler_flag("-march=x86-64-v4" PYOPT_HAS_MARCH_V4)
      if(NOT PYOPT_HAS_MARCH_V4)
        message(FATAL_ERROR "pyopt needs a compiler that knows -march=x86-64-v2/v3/v4 (GCC >= 11, Clang >= 12)")
      endif()
      _pyopt_isa_object(baseline "-march=x86-64-v2;-mtune=generic")
      if(NOT PYOPT_BASELINE_ONLY)
        _pyopt_isa_object(avx2 "-march=x86-64-v3;-mtune=generic")
        _pyopt_isa_object(avx512 "-march=x86-64-v4;-mtune=generic;-mprefer-vector-width=512")
        list(APPEND defines PYOPT_HAVE_AVX2=1 PYOPT_HAVE_AVX512=1)
        list(APPEND objects $<TARGET_OBJECTS:pyopt_kernels_avx2> $<TARGET_OBJECTS:pyopt_kernels_avx512>)
      endif()
    endif()
  elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64|ARM64)$")
    _pyopt_isa_object(baseline "")   # NEON is part of the aarch64 baseline
  else()
    _pyopt_isa_object(baseline "")
  endif()
  list(PREPEND objects $<TARGET_OBJECTS:pyopt_kernels_baseline>)
  set(${out_var} "${objects}" PARENT_SCOPE)
  set(PYOPT_ISA_DEFINES "${defines}" PARENT_SCOPE)
endfunction()
