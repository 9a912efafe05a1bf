"""pyopt: deep-learning optimizers for CPU arrays, in SIMD C++ with runtime ISA dispatch.

    import numpy as np, pyopt
    W = np.random.randn(64, 10).astype(np.float32)
    opt = pyopt.AdamW([W], lr=1e-3)
    opt.step([grad_W])          # W changes in place
"""
from __future__ import annotations

from typing import Any

try:
    from . import _core
except ImportError as exc:  # pragma: no cover - only in an unbuilt source tree
    raise ImportError(
        f"pyopt's compiled core (pyopt._core) is missing from {__path__[0]}: this is the source folder, "
        "not an installed pyopt. Install it (pip install .) and run from another directory, or use the "
        "`pyopt` command; for development: pip install --no-build-isolation -e . "
        "-Ceditable.rebuild=true -Cbuild-dir=build/editable"
    ) from exc
from . import functional
from ._spec import available
from .config import from_config
from .io import load, load_state_dict, save
from .muon import Muon
from .adafactor import Adafactor
from .noisy_sgd import NoisySGD
from .lbfgs import LBFGS
from .lr_free import DAdaptAdam, DAdaptSGD, Prodigy
from .sm3 import SM3
from .fromage import Fromage
from .polyak_sgd import PolyakSGD
from .dog import DoG
from .momo import Momo
from .adamp import AdamP
from .came import CAME
from .adam_mini import AdamMini
from .normuon import NorMuon
from .adamuon import AdaMuon
from .soap import SOAP
from .shampoo import Shampoo
from .kron import Kron
from .mars_shampoo import MARSShampoo
from .rowwise_adagrad import RowwiseAdagrad
from .sparse import RowSparse
from .ema import EMA
from .memory import memory_estimate
from .lookahead import Lookahead
from . import hessian
from .optimizer import Optimizer, ParamGroup
from . import optimizers
from .optimizers import *  # noqa: F403 - one class per optimizer record (optimizers.__all__)

# Training utilities (schedules, param groups, clipping).
from . import schedules
from .clip import clip_grad_norm_, clip_grad_value_
from .groups import param_groups

__version__: str = _core.__version__

# Pick the kernels' instruction set now, so a bad PYOPT_ISA fails loudly at import.
_core.isa()

__all__ = [
    "clip_grad_norm_", "clip_grad_value_", "param_groups", "schedules",
]
__all__ += optimizers.__all__
__all__ += [
    "from_config", "Muon", "Adafactor", "LBFGS", "EMA", "Lookahead", "hessian", "Optimizer", "ParamGroup", "available",
    "Prodigy", "DAdaptAdam", "DAdaptSGD",
    "SM3", "Fromage", "PolyakSGD", "DoG", "Momo",
    "AdamP", "CAME", "AdamMini", "NorMuon", "AdaMuon",
    "SOAP", "Shampoo", "Kron",
    "RowwiseAdagrad", "RowSparse",
    "NoisySGD", "MARSShampoo",
    "functional", "get_include", "info", "load", "load_state_dict", "memory_estimate", "save", "set_isa",
    "set_num_threads",
]


def info() -> dict[str, Any]:
    """Build and runtime facts: version, compiler, the ISA in use and those available, threads."""
    return {
        "version": __version__,
        "isa": _core.isa(),
        "isa_available": _core.isa_available(),
        "isa_compiled": _core.isa_compiled(),
        "num_threads": _core.num_threads(),
        "compiler": _core.compiler(),
        "openmp": True,
    }


def get_include() -> str:
    """The folder holding pyopt's C API header ``pyopt/capi.h`` and its Cython declarations
    (``cimport pyopt``): the ``include_dirs`` (and Cython ``include_path``) of an extension that
    steps pyopt optimizers from C or nogil Cython. Nothing to link: see ``pyopt/capi.h``."""
    from ._cmake import get_include as include_folder

    return include_folder()


def set_num_threads(n: int) -> None:
    """Threads the kernels may use (default: OMP_NUM_THREADS, else every core)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"set_num_threads: n must be an int, got {n!r}")
    _core.set_num_threads(n)


def set_isa(name: str) -> None:
    """Cap the instruction set the kernels use (like the PYOPT_ISA environment variable):
    the best path up to ``name`` that this CPU supports. Names: ``info()["isa_compiled"]``."""
    _core.set_isa(name)
