# `cimport pyopt`: the C API of pyopt/capi.pxd (pyopt.import_capi(), pyopt.create(), pyopt.step(), ...).
from pyopt.capi cimport *
