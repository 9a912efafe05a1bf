"""Optimizers from a config: the ``best.json`` that ``pyopt tune`` writes (a flat JSON object:
``{"optimizer": name, "hyperparameters": {...}, ...}``); the C++ API reads the same file."""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

from .optimizer import ParamsLike
from .storage import StorageOptions


def from_config(config: Mapping[str, Any] | str | os.PathLike[str], params: ParamsLike) -> Any:
    """Build the optimizer a config describes over ``params``:
    ``pyopt.from_config("runs/best.json", params)`` or ``pyopt.from_config({"optimizer": "adamw",
    "hyperparameters": {"lr": 3e-4}}, params)``. Unknown names or hyperparameters raise."""
    from .optimizers import create

    if isinstance(config, (str, os.PathLike)):
        path = os.fspath(config)
        try:
            with open(path) as f:
                config = json.load(f)
        except OSError as exc:
            raise ValueError(f"from_config: cannot read {path}: {exc}") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"from_config: {path} is not valid JSON: {exc}") from None
    if not isinstance(config, Mapping) or not isinstance(config.get("optimizer"), str):
        raise ValueError("from_config: the config must be an object with an 'optimizer' name "
                         "(and 'hyperparameters'), as pyopt tune's best.json")
    hyper = config.get("hyperparameters", {})
    if not isinstance(hyper, Mapping):
        raise ValueError("from_config: 'hyperparameters' must be an object")
    hyper = {k: tuple(v) if isinstance(v, list) else v for k, v in hyper.items()}
    storage = config.get("storage", {})  # best.json of a run with --precision: the optimizer's storage options
    if not isinstance(storage, Mapping) or not set(storage) <= set(StorageOptions().as_dict()):
        raise ValueError(f"from_config: 'storage' must be an object of {', '.join(StorageOptions().as_dict())}")
    return create(config["optimizer"], params, **hyper, **storage)
