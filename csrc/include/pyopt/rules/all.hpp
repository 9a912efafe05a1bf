#pragma once
// Every rule header, as the records file lists them (pyopt/records.def).
#define PYOPT_RECORD_HEADERS
#include "pyopt/records.def"
#undef PYOPT_RECORD_HEADERS
