"""The data sets bundled with pyopt (``pyopt/data/``, described in ``data/README.md``), read by
``pyopt demo`` and by the tuner's digits tasks."""
from __future__ import annotations

import io
from importlib import resources

import numpy as np


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The bundled UCI digits: uint8 ``images`` (1797, 64) in 0..16 and uint8 ``labels`` (1797,)."""
    data = resources.files(__package__).joinpath("data/digits.npz").read_bytes()
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return npz["images"], npz["labels"]
