# Installs the C++ package: headers, the static kernel library (built with -fPIC) and a CMake
# config, so outside projects can
#   find_package(pyopt CONFIG REQUIRED)
#   target_link_libraries(app PRIVATE pyopt::pyopt)
# Inside a Python wheel (scikit-build-core sets SKBUILD) everything goes under the package
# folder pyopt/, and `python -m pyopt --cmakedir` prints pyopt/share/cmake/pyopt.
include(CMakePackageConfigHelpers)
include(GNUInstallDirs)

if(DEFINED SKBUILD)
  set(PYOPT_INSTALL_INCLUDEDIR pyopt/include)
  set(PYOPT_INSTALL_LIBDIR pyopt/lib)
  set(PYOPT_INSTALL_CMAKEDIR pyopt/share/cmake/pyopt)
else()
  set(PYOPT_INSTALL_INCLUDEDIR ${CMAKE_INSTALL_INCLUDEDIR})
  set(PYOPT_INSTALL_LIBDIR ${CMAKE_INSTALL_LIBDIR})
  set(PYOPT_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/pyopt)
endif()

target_include_directories(pyopt_headers INTERFACE $<INSTALL_INTERFACE:${PYOPT_INSTALL_INCLUDEDIR}>)

install(DIRECTORY ${PROJECT_SOURCE_DIR}/csrc/include/pyopt
  DESTINATION ${PYOPT_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.hpp" PATTERN "*.h" PATTERN "*.def")
if(DEFINED SKBUILD)
  # The Cython declarations of pyopt/capi.h next to it, so the one folder pyopt.get_include() serves
  # both `#include "pyopt/capi.h"` and `cimport pyopt` (an editable install keeps the package's own
  # copies in the source tree, where Cython does not look).
  install(FILES ${PROJECT_SOURCE_DIR}/pyopt/__init__.pxd ${PROJECT_SOURCE_DIR}/pyopt/capi.pxd
    DESTINATION ${PYOPT_INSTALL_INCLUDEDIR}/pyopt)
endif()
install(TARGETS pyopt_headers pyopt_kernels pyopt_pyopt
  EXPORT pyoptTargets
  ARCHIVE DESTINATION ${PYOPT_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${PYOPT_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${PYOPT_INSTALL_INCLUDEDIR})
install(EXPORT pyoptTargets
  NAMESPACE pyopt::
  DESTINATION ${PYOPT_INSTALL_CMAKEDIR})

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/pyoptConfig.cmake.in
  ${PROJECT_BINARY_DIR}/pyoptConfig.cmake
  INSTALL_DESTINATION ${PYOPT_INSTALL_CMAKEDIR})
# 0.x: minor versions may break the API.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/pyoptConfigVersion.cmake
  VERSION ${PROJECT_VERSION}
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/pyoptConfig.cmake ${PROJECT_BINARY_DIR}/pyoptConfigVersion.cmake
  DESTINATION ${PYOPT_INSTALL_CMAKEDIR})
