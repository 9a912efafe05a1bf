#pragma once
// The single source of the package version: pyproject.toml reads it from here.
#define PYOPT_VERSION_MAJOR 0
#define PYOPT_VERSION_MINOR 1
#define PYOPT_VERSION_PATCH 0
#define PYOPT_VERSION "0.1.0"
