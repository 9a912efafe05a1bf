"""Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/, committed; rerun after a
checkpoint format change): small pyopt.save checkpoints of the layout fuzz_checkpoint.cpp loads
(params float32 (3,), float64 (2, 2) and bfloat16 (16, 256); some with storage options: 8-bit and
bfloat16 states, master weights), and best.json-style configs.

    python tests/fuzz/make_corpus.py        # with pyopt importable
"""
import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np

import pyopt

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def checkpoint(name, tag="", storage=None, **hyper):
    import ml_dtypes

    params = [np.array([0.5, -1.0, 2.0], np.float32), np.array([[1.0, -0.25], [0.125, 3.0]]),
              np.full((16, 256), 0.5, ml_dtypes.bfloat16)]
    opt = pyopt.create(name, params, **hyper, **(storage or {}))
    grads = [np.array([0.1, 0.2, -0.3], np.float32), np.array([[-0.5, 0.25], [1.0, -2.0]]),
             np.linspace(-1, 1, 4096, dtype=np.float32).reshape(16, 256)]
    for _ in range(2):
        opt.step(grads)
    path = HERE / "corpus" / "checkpoint" / f"{name}{tag}.npz"
    pyopt.save(opt, path)
    return path


def without_zip64(source, target):
    """The same entries in a plain (not zip64) stored zip, as the C++ writer lays them out."""
    with zipfile.ZipFile(source) as z:
        entries = [(n, z.read(n)) for n in z.namelist()]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as z:
        for n, data in entries:
            z.writestr(zipfile.ZipInfo(n, date_time=(1980, 1, 1, 0, 0, 0)), data)
    target.write_bytes(buffer.getvalue())


def main():
    (HERE / "corpus" / "checkpoint").mkdir(parents=True, exist_ok=True)
    (HERE / "corpus" / "json").mkdir(parents=True, exist_ok=True)
    checkpoint("adamw", lr=0.01, amsgrad=True)
    checkpoint("sgd", lr=0.1, momentum=0.9, nesterov=True)
    adan = checkpoint("adan")
    checkpoint("adamw", "_int8_master", {"state_dtype": "int8", "master_weights": True}, lr=0.01)
    checkpoint("adam", "_bf16_states", {"state_dtype": "bfloat16", "stochastic_rounding": True})
    checkpoint("lion", "_int8", {"state_dtype": "int8"})
    without_zip64(adan, HERE / "corpus" / "checkpoint" / "adan_plain_zip.npz")
    shutil.copy(ROOT / "examples" / "cpp" / "best.json", HERE / "corpus" / "json" / "best.json")
    configs = {
        "lion.json": {"optimizer": "lion", "hyperparameters": {"lr": 1e-4, "betas": [0.9, 0.99]}, "value": 0.5},
        "rprop.json": {"optimizer": "rprop", "hyperparameters": {"etas": [0.4, 1.3], "step_sizes": [1e-5, 10]}},
        "values.json": {"s": "a\"b\\\u00e9\U0001F600\n", "n": [0, -0.5e-3, 1e300, 5e-324], "t": True, "z": None,
                        "o": {"x": {}}, "e": [], "nan": float("nan"), "inf": float("-inf")},
    }
    for name, config in configs.items():
        (HERE / "corpus" / "json" / name).write_text(json.dumps(config, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
