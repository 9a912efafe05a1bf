"""``pyopt bench``: pyopt's optimizer step against its peers and against the memory-bandwidth floor.

    pyopt bench                                  # a quick default set (see DEFAULTS below)
    pyopt bench --full --json out.json           # every optimizer, case and dtype
    pyopt bench --optimizers adamw,lion --cases 1x1M,1x16M --threads 2 --csv out.csv
    pyopt bench --optimizers adamw --dtypes bf16,bf16+bf16,bf16+master+int8,int8   # storage options
    python -m pyopt.bench ...                    # the same

For every case (optimizer x tensors x dtype) it builds, in this process, every implementation with
its own params and state (the gradients are shared, read-only):

``pyopt``          ``pyopt.create(name, params, **storage).step(grads)`` at the optimizer's default
                   hyperparameters, with the dtype spec's storage options
``pyopt-torch``    ``pyopt.torch.<Class>`` (the torch.optim twin of the same optimizer) stepping torch
                   tensors that view its own copies of the params, grads set on ``.grad``, with the
                   spec's storage options: pyopt's kernels plus the adapter, so its time over
                   pyopt's, minus 1, is the cost of ``pyopt.torch`` itself (``adapter_overhead``)
``numpy``          a straightforward numpy version of the same update (sgd, momentum, adam, adamw,
                   adagrad, rmsprop, lion; "n/a" for the rest), checked against pyopt in the tests
``torch-foreach``  ``torch.optim.<X>(..., foreach=True).step()``, grads preset on the params
``torch-fused``    ``fused=True``, only where torch has a CPU fused kernel (Adam, AdamW, SGD, Adagrad);
                   on the spec's param dtype (torch keeps states in the param dtype)
``torch-fused-f32`` the same on float32 params and grads, for 16-bit param specs: the reference of
                   the "vs torch-f32" ratio (for float32 params the torch-fused row is the reference)
``deepspeed``      ``deepspeed.ops.adam.DeepSpeedCPUAdam`` (adam / adamw, float32) when importable
``bnb-8bit``       bitsandbytes' Adam8bit / AdamW8bit / Lion8bit on CPU, for int8 state specs
``torchao-8bit``   torchao's Adam8bit / AdamW8bit (step compiled by torch.compile), int8 state specs,
                   tensors whose size is a multiple of 256 (else torchao silently keeps float32 states)
``probe``          ``pyopt._core.rmw_probe``: one pass reading and writing the arrays this optimizer
                   reads and writes (param and state slots read-write, grad read-only), no math; for
                   storage specs, float32 arrays holding exactly the bytes the configuration reads and
                   writes (see pyopt.bench_dtypes.step_bytes)

Dtype specs (``--dtypes``, see pyopt/bench_dtypes.py): ``float32``, ``float64`` or
``PARAM[+master][+STATE]``: PARAM f32|f16|bf16 (grads in the same dtype), ``+master`` float32
master weights, STATE bf16|int8 (default float32); ``int8`` alone is ``f32+int8``.

Timing: after a warm-up, each implementation's time per step is estimated and a block size N is
chosen so that one block lasts about ``--block-ms``. Then, ``--repeats`` times, every
implementation runs one block of N back-to-back steps, round-robin (the order rotates each
repeat), and the block's time / N is one sample; the result is the median of the samples.

OpenMP spin-waiting: torch (its bundled libgomp) and pyopt (the system's) each keep their worker
threads spinning for a while after a parallel region. On a machine with few cores the spinning
threads of the implementation that just ran steal the CPU from the next one. So implementations
never alternate step by step: each block runs one implementation only, and before every block the
runner sleeps ``--gap-ms`` (default 20 ms) so every other runtime's threads go to sleep. Setting
``OMP_WAIT_POLICY=passive`` in the environment (before Python starts) removes the spinning
altogether, at the cost of a slower wake-up for every implementation. On a machine other processes
keep busy it is essential: with spinning threads, every parallel region whose worker lost its core
to another process waited a whole scheduler slice (about 8 ms per region on a loaded 2-core VM, for
pyopt, the probe, torch and DeepSpeed alike), which swamps everything else; the runner warns when
the load average is high and OMP_WAIT_POLICY is unset. The policy is read when the OpenMP runtimes
load, so it must be set in the environment, not from Python.

Reported per implementation: median time per step, GB/s (the bytes the optimizer must move per
step / time), speedup of pyopt (peer time / pyopt time) and, for pyopt, the fraction of the probe
(probe time / pyopt time; 1.0 means pyopt runs at the bandwidth floor) and the speedup over torch's
fused optimizer on float32 params (``vs_torch_fused_f32``); for pyopt-torch, ``adapter_overhead`` =
pyopt-torch time / pyopt time - 1 (the table's ``adapter`` column, e.g. +3.0%).
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import importlib
import inspect
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

import pyopt
from . import _core
from ._spec import rule_optimizers, spec
from .bench_dtypes import (DtypeSpec, Unavailable, as_torch, bitsandbytes_8bit, int8_slots, make_probe,
                           parse_dtype_spec, step_bytes, torchao_8bit)

PEERS = ("pyopt-torch", "numpy", "torch-foreach", "torch-fused", "torch-fused-f32", "deepspeed", "bnb-8bit",
         "torchao-8bit", "probe")
IMPLS = ("pyopt",) + PEERS
DTYPES = {"float32": np.float32, "float64": np.float64}
# name -> (tensors, elements per tensor)
CASES: dict[str, tuple[int, int]] = {
    "10x1k": (10, 1_000),
    "1x1M": (1, 1_000_000),
    "100x33k": (100, 33_000),
    "1x16M": (1, 16_000_000),
    "1x64M": (1, 64_000_000),
}
DEFAULTS: dict[str, list[str]] = {
    "optimizers": ["adamw", "adam", "momentum", "adagrad"],
    "cases": ["10x1k", "1x1M", "100x33k", "1x16M"],
    "dtypes": ["float32"],
}
QUICK: dict[str, Any] = {"optimizers": ["adamw"], "cases": ["10x1k"], "dtypes": ["float32"], "repeats": 3, "warmup": 1,
         "block_ms": 1.0, "gap_ms": 0.0}

# pyopt name -> torch.optim class name and pyopt-hyperparameter -> torch keyword renames.
TORCH_CLASSES = {
    "sgd": "SGD", "momentum": "SGD", "nag": "SGD", "adagrad": "Adagrad", "rmsprop": "RMSprop",
    "adadelta": "Adadelta", "adamax": "Adamax", "adam": "Adam", "adamw": "AdamW", "amsgrad": "Adam",
    "nadam": "NAdam", "radam": "RAdam", "asgd": "ASGD", "rprop": "Rprop",
}
TORCH_FUSED = {"Adam", "AdamW", "SGD", "Adagrad"}  # torch 2.x CPU fused kernels
TORCH_EXTRA = {"amsgrad": {"amsgrad": True}}


def parse_case(text: str) -> tuple[int, int]:
    """'10x1k' -> (10, 1000); any 'TxN[k|M]' works (k = 1e3, M = 1e6)."""
    if text in CASES:
        return CASES[text]
    m = re.fullmatch(r"(\d+)x(\d+)([kM]?)", text)
    if not m:
        raise ValueError(f"bad case {text!r}: use TxN with an optional k/M suffix, e.g. 10x1k, 1x16M")
    scale = {"": 1, "k": 1_000, "M": 1_000_000}[m.group(3)]
    tensors, size = int(m.group(1)), int(m.group(2)) * scale
    if tensors < 1 or size < 1:
        raise ValueError(f"bad case {text!r}: tensors and size must be >= 1")
    return tensors, size


def traffic(name: str) -> tuple[list[str], int]:
    """The state slots an optimizer keeps at its defaults, and the arrays per tensor it reads-writes
    (param + slots) and reads only (grad)."""
    s = spec(name)
    slots = [n for n, _ in _core.slots_needed(name, s.flat(s.defaults, name))]
    return slots, 1 + len(slots)


def bytes_per_step(name: str, tensors: int, size: int, itemsize: int) -> int:
    _, rw = traffic(name)
    return itemsize * tensors * size * (2 * rw + 1)  # read+write param and slots, read grad


# ---------------------------------------------------------------------------------------------
# numpy peers: the torch.optim (single-tensor) formulas, in place, at pyopt's default hyperparameters.

class _NumpyPeer:
    def __init__(self, params: list[np.ndarray], grads: list[np.ndarray], hyper: dict[str, Any]) -> None:
        self.params, self.grads, self.h, self.t = params, grads, hyper, 0
        if hyper.get("maximize"):
            raise NotImplementedError("maximize")
        self.setup()

    def setup(self) -> None:
        pass

    def zeros(self) -> list[np.ndarray]:
        return [np.zeros_like(p) for p in self.params]

    def step(self) -> None:
        self.t += 1
        for i, (p, g) in enumerate(zip(self.params, self.grads)):
            self.one(i, p, g)

    def one(self, i: int, p: np.ndarray, g: np.ndarray) -> None:
        raise NotImplementedError


class _NpSGD(_NumpyPeer):
    def setup(self) -> None:
        h = self.h
        if h["nesterov"] or h["dampening"] != 0.0:
            raise NotImplementedError("nesterov / dampening")
        self.buf = self.zeros() if h["momentum"] != 0.0 else None

    def one(self, i: int, p: np.ndarray, g: np.ndarray) -> None:
        h = self.h
        d = g + h["weight_decay"] * p if h["weight_decay"] else g
        if self.buf is not None:
            b = self.buf[i]
            b *= h["momentum"]
            b += d
            d = b
        p -= h["lr"] * d


class _NpAdam(_NumpyPeer):
    decoupled = False

    def setup(self) -> None:
        if self.h.get("amsgrad"):
            raise NotImplementedError("amsgrad")
        self.decoupled = self.decoupled or bool(self.h.get("decoupled_weight_decay"))
        self.m, self.v = self.zeros(), self.zeros()

    def one(self, i: int, p: np.ndarray, g: np.ndarray) -> None:
        h, t = self.h, self.t
        lr, (b1, b2), eps, wd = h["lr"], h["betas"], h["eps"], h["weight_decay"]
        if wd:
            if self.decoupled:
                p *= 1 - lr * wd
            else:
                g = g + wd * p
        m, v = self.m[i], self.v[i]
        m += (g - m) * (1 - b1)  # torch: exp_avg.lerp_(grad, 1 - beta1)
        v *= b2
        v += (1 - b2) * g * g
        step_size = lr / (1 - b1**t)
        denom = np.sqrt(v)
        denom /= math.sqrt(1 - b2**t)
        denom += eps
        p -= step_size * (m / denom)


class _NpAdamW(_NpAdam):
    decoupled = True


class _NpAdagrad(_NumpyPeer):
    def setup(self) -> None:
        self.sum = [np.full_like(p, self.h["initial_accumulator_value"]) for p in self.params]

    def one(self, i: int, p: np.ndarray, g: np.ndarray) -> None:
        h = self.h
        if h["weight_decay"]:
            g = g + h["weight_decay"] * p
        clr = h["lr"] / (1 + (self.t - 1) * h["lr_decay"])
        s = self.sum[i]
        s += g * g
        std = np.sqrt(s)
        std += h["eps"]
        p -= clr * (g / std)


class _NpRMSprop(_NumpyPeer):
    def setup(self) -> None:
        if self.h["momentum"] != 0.0 or self.h["centered"]:
            raise NotImplementedError("momentum / centered")
        self.sq = self.zeros()

    def one(self, i: int, p: np.ndarray, g: np.ndarray) -> None:
        h = self.h
        if h["weight_decay"]:
            g = g + h["weight_decay"] * p
        v = self.sq[i]
        v *= h["alpha"]
        v += (1 - h["alpha"]) * g * g
        avg = np.sqrt(v)
        avg += h["eps"]
        p -= h["lr"] * (g / avg)


class _NpLion(_NumpyPeer):
    def setup(self) -> None:
        self.m = self.zeros()

    def one(self, i: int, p: np.ndarray, g: np.ndarray) -> None:
        h = self.h
        lr, (b1, b2), wd = h["lr"], h["betas"], h["weight_decay"]
        m = self.m[i]
        if wd:
            p *= 1 - lr * wd
        update = np.sign(m * b1 + g * (1 - b1))
        p -= lr * update
        m *= b2
        m += (1 - b2) * g


NUMPY_PEERS: dict[str, type[_NumpyPeer]] = {
    "sgd": _NpSGD, "momentum": _NpSGD, "adam": _NpAdam, "adamw": _NpAdamW, "adagrad": _NpAdagrad,
    "rmsprop": _NpRMSprop, "lion": _NpLion,
}


def numpy_peer(name: str, params: list[np.ndarray], grads: list[np.ndarray]) -> _NumpyPeer:
    """The numpy implementation of ``name`` at pyopt's defaults (NotImplementedError if none)."""
    if name not in NUMPY_PEERS:
        raise NotImplementedError(f"no numpy version of {name}")
    return NUMPY_PEERS[name](params, grads, dict(spec(name).defaults))


# ---------------------------------------------------------------------------------------------
# Implementations of one case: each a zero-argument callable running exactly one step.

def _torch():
    try:
        import torch
    except ImportError as exc:
        raise Unavailable(f"unavailable: torch not importable ({exc})") from None
    return torch


def _torch_optimizer(name: str, mode: str, params: list[np.ndarray], grads: list[np.ndarray]):
    torch = _torch()
    cls_name = TORCH_CLASSES.get(name)
    if cls_name is None:
        raise Unavailable("n/a")
    if mode == "fused" and cls_name not in TORCH_FUSED:
        raise Unavailable("n/a")
    cls = getattr(torch.optim, cls_name)
    accepted = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {}
    for key, value in spec(name).defaults.items():
        if key not in accepted:
            # A pyopt hyperparameter torch lacks is only harmless at torch's implicit value.
            if key in ("decoupled_weight_decay", "cautious") and not value:
                continue
            raise Unavailable(f"unavailable: torch.optim.{cls_name} has no {key}")
        kwargs[key] = value
    kwargs.update(TORCH_EXTRA.get(name, {}))
    kwargs[mode] = True
    tensors = [as_torch(torch, p) for p in params]
    for t, g in zip(tensors, grads):
        t.grad = as_torch(torch, g)
    try:
        opt = cls(tensors, **kwargs)
    except Exception as exc:  # e.g. a torch without this fused kernel
        raise Unavailable(f"unavailable: {type(exc).__name__}: {exc}") from None
    return opt.step


def pyopt_torch_class(name: str) -> type:
    """The ``pyopt.torch`` class of optimizer ``name`` (imports torch; Unavailable if it cannot)."""
    _torch()
    classes = importlib.import_module("pyopt.torch")
    for class_name in classes.__all__:
        cls = getattr(classes, class_name)
        if getattr(cls, "name", None) == name:
            return cls
    raise Unavailable(f"unavailable: pyopt.torch has no class for {name}")


def _pyopt_torch(name: str, params: list[np.ndarray], grads: list[np.ndarray], dspec: DtypeSpec):
    """pyopt.torch's ``name`` at its defaults with the spec's storage options, on torch tensors viewing
    ``params`` (updated in place), grads on ``.grad``: its ``step`` is what a torch training loop calls."""
    cls = pyopt_torch_class(name)
    torch = _torch()
    tensors = [as_torch(torch, p) for p in params]
    for t, g in zip(tensors, grads):
        t.grad = as_torch(torch, g)
    return cls(tensors, **dspec.storage_options()).step


def _deepspeed(name: str, params: list[np.ndarray], grads: list[np.ndarray]):
    if name not in ("adam", "adamw"):
        raise Unavailable("n/a")
    if params[0].dtype != np.float32:
        raise Unavailable("n/a")  # DeepSpeedCPUAdam keeps fp32 master params
    torch = _torch()
    try:
        import logging

        logging.getLogger("DeepSpeed").setLevel(logging.ERROR)
        from deepspeed.ops.adam import DeepSpeedCPUAdam  # type: ignore[import-not-found]
    except Exception as exc:
        raise Unavailable(f"unavailable: deepspeed not importable ({type(exc).__name__}: {exc})") from None
    h = spec(name).defaults
    tensors = [torch.nn.Parameter(torch.from_numpy(p)) for p in params]
    for t, g in zip(tensors, grads):
        t.grad = torch.from_numpy(g)
    try:
        opt = DeepSpeedCPUAdam(tensors, lr=h["lr"], betas=h["betas"], eps=h["eps"], weight_decay=h["weight_decay"],
                               bias_correction=True, amsgrad=False, adamw_mode=name == "adamw")
        opt.step()  # builds/loads the op now, not in the timed loop
    except Exception as exc:
        raise Unavailable(f"unavailable: DeepSpeedCPUAdam failed ({type(exc).__name__}: {exc})") from None
    return opt.step


def _probe(name: str, params: list[np.ndarray], grads: list[np.ndarray]):
    slots, _ = traffic(name)
    rw: list[np.ndarray] = []
    for p in params:
        rw.append(p)
        rw.extend(np.zeros_like(p) for _ in slots)
    ro = list(grads)
    tensors = len(params)
    probe = _core.rmw_probe
    return lambda: probe(rw, ro, tensors)


def make_impl(impl: str, name: str, params: list[np.ndarray], grads: list[np.ndarray],
              dtype: DtypeSpec | None = None) -> Callable[[], Any]:
    """One implementation of one step of ``name`` on (copies the caller gives of) ``params``, whose
    dtype is the spec's param dtype; ``dtype`` (default: the plain spec of the params' dtype) chooses
    the storage options of pyopt, the 8-bit peers and the probe's bytes. torch-fused-f32 is
    torch-fused on float32 params: run_case gives it float32 params and grads."""
    dspec = dtype or parse_dtype_spec(params[0].dtype.name)
    if impl == "pyopt":
        opt = pyopt.create(name, params, **dspec.storage_options())
        return lambda: opt.step(grads)
    if impl == "pyopt-torch":
        return _pyopt_torch(name, params, grads, dspec)
    if impl in ("numpy", "deepspeed") and not dspec.plain:
        raise Unavailable("n/a")
    if impl == "bnb-8bit":
        return bitsandbytes_8bit(name, dspec, params, grads)
    if impl == "torchao-8bit":
        return torchao_8bit(name, dspec, params, grads)
    if impl == "torch-fused-f32":
        if not dspec.low_precision_param:
            raise Unavailable("n/a")  # the torch-fused row is on the float32 (float64) params already
        return _torch_optimizer(name, "fused", params, grads)
    if impl == "numpy":
        try:
            return numpy_peer(name, params, grads).step
        except NotImplementedError:
            raise Unavailable("n/a") from None
    if impl == "torch-foreach":
        return _torch_optimizer(name, "foreach", params, grads)
    if impl == "torch-fused":
        return _torch_optimizer(name, "fused", params, grads)
    if impl == "deepspeed":
        return _deepspeed(name, params, grads)
    if impl == "probe":
        if dspec.plain:
            return _probe(name, params, grads)
        return make_probe(step_bytes(name, dspec, len(params), params[0].size))
    raise ValueError(f"unknown implementation {impl!r}; choose from {', '.join(IMPLS)}")


# ---------------------------------------------------------------------------------------------

@dataclass
class Row:
    optimizer: str
    case: str
    dtype: str
    tensors: int
    size: int
    impl: str
    status: str                       # "ok", "n/a" or "unavailable: <reason>"
    bytes_per_step: int
    steps_per_block: int = 0
    median_s: float | None = None     # per step
    min_s: float | None = None
    gbps: float | None = None         # bytes_per_step / median_s / 1e9
    pyopt_speedup: float | None = None  # this impl's median / pyopt's (how many times faster pyopt is)
    probe_fraction: float | None = None  # pyopt rows: probe median / pyopt median
    vs_torch_fused_f32: float | None = None  # pyopt rows: torch fused on float32 params median / pyopt median
    adapter_overhead: float | None = None  # pyopt-torch rows: its median / pyopt's - 1 (pyopt.torch's own cost)
    samples_s: list[float] = field(default_factory=list)


FIELDS = [f for f in Row.__dataclass_fields__ if f != "samples_s"]


def machine_info(threads: int | None = None) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = pyopt.info()
    out: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pyopt": info["version"],
        "isa": info["isa"],
        "compiler": info["compiler"],
        "pyopt_threads": _core.num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,  # other load on the machine
    }
    try:
        import torch

        out["torch"] = torch.__version__
        out["torch_threads"] = torch.get_num_threads()
    except ImportError:
        out["torch"] = None
    for module in ("deepspeed", "bitsandbytes", "torchao"):  # only those a run could use are imported
        out[module] = _version_of(module)
    return out


def _version_of(distribution: str) -> str | None:
    """The installed version, without importing the package (bitsandbytes and torchao print on import)."""
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _set_threads(threads: int) -> None:
    pyopt.set_num_threads(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass


def _time_block(fn: Callable[[], Any], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def _case_arrays(rng: np.random.Generator, tensors: int, size: int, dtype: np.dtype) -> list[np.ndarray]:
    return [rng.standard_normal(size).astype(np.float32 if dtype.itemsize < 4 else dtype).astype(dtype)
            for _ in range(tensors)]


def run_case(name: str, case: str, dtype: str, peers: Sequence[str] = PEERS, repeats: int = 11, warmup: int = 3,
             block_ms: float = 20.0, gap_ms: float = 20.0, seed: int = 0) -> list[Row]:
    """All implementations of one case, interleaved; one Row per implementation (pyopt first).
    ``dtype`` is a dtype spec (see pyopt.bench_dtypes): "float32", "bf16+master+int8", ..."""
    tensors, size = parse_case(case)
    dspec = parse_dtype_spec(dtype)
    rng = np.random.default_rng(seed)
    base = _case_arrays(rng, tensors, size, dspec.param_dtype)
    grads = _case_arrays(rng, tensors, size, dspec.param_dtype)
    nbytes = step_bytes(name, dspec, tensors, size).moved
    rows: dict[str, Row] = {}
    fns: dict[str, Callable[[], Any]] = {}
    for impl in ("pyopt",) + tuple(p for p in PEERS if p in peers):
        row = Row(name, case, dspec.name, tensors, size, impl, "ok", nbytes)
        try:
            if impl == "torch-fused-f32" and dspec.low_precision_param:  # the reference: float32 params and grads
                f32 = parse_dtype_spec("float32")
                row.bytes_per_step = step_bytes(name, f32, tensors, size).moved
                fns[impl] = make_impl(impl, name, [p.astype(np.float32) for p in base],
                                      [g.astype(np.float32) for g in grads], dspec)
            else:
                fns[impl] = make_impl(impl, name, [p.copy() for p in base], grads, dspec)
        except Unavailable as exc:
            row.status = str(exc)
        except (TypeError, ValueError) as exc:  # pyopt or a peer refusing this configuration
            row.status = f"unavailable: {type(exc).__name__}: {exc}"
        rows[impl] = row
    del base
    gap = gap_ms / 1e3
    # Warm-up, then a block size per implementation from its fastest warm-up step.
    blocks: dict[str, int] = {}
    for impl, fn in fns.items():
        time.sleep(gap)
        best = min(_time_block(fn, 1) for _ in range(max(1, warmup)))
        blocks[impl] = max(1, min(100_000, int(block_ms / 1e3 / max(best, 1e-9))))
        rows[impl].steps_per_block = blocks[impl]
    order = list(fns)
    for r in range(repeats if order else 0):  # (none when pyopt and every peer refuse the case)
        k = r % len(order)
        for impl in order[k:] + order[:k]:
            time.sleep(gap)  # let the previous runtime's OpenMP threads stop spinning
            rows[impl].samples_s.append(_time_block(fns[impl], blocks[impl]))
    fns.clear()
    for row in rows.values():
        if row.samples_s:
            row.median_s = statistics.median(row.samples_s)
            row.min_s = min(row.samples_s)
            row.gbps = row.bytes_per_step / row.median_s / 1e9
    ours = rows["pyopt"].median_s
    for row in rows.values():
        if row.median_s is not None and ours:
            row.pyopt_speedup = row.median_s / ours
    adapter = rows.get("pyopt-torch")
    if adapter is not None and adapter.median_s and ours:
        adapter.adapter_overhead = adapter.median_s / ours - 1
    if "probe" in rows and rows["probe"].median_s and ours:
        rows["pyopt"].probe_fraction = rows["probe"].median_s / ours
    reference = rows.get(reference_impl(dspec) or "")
    if reference is not None and reference.median_s and ours:
        rows["pyopt"].vs_torch_fused_f32 = reference.median_s / ours
    return list(rows.values())


def reference_impl(dspec: DtypeSpec) -> str | None:
    """The row holding torch's fused optimizer on float32 params (the issue's reference), if any."""
    if dspec.low_precision_param:
        return "torch-fused-f32"
    return "torch-fused" if dspec.param == "float32" else None


def run(optimizers: Sequence[str] | None = None, cases: Sequence[str] | None = None,
        dtypes: Sequence[str] | None = None, peers: Sequence[str] = PEERS, threads: int | None = None,
        repeats: int = 11, warmup: int = 3, block_ms: float = 20.0, gap_ms: float = 20.0,
        progress: Callable[[list[Row]], None] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns {"machine": {...}, "settings": {...}, "results": [row dicts]}."""
    optimizers = list(optimizers or DEFAULTS["optimizers"])
    cases = list(cases or DEFAULTS["cases"])
    dtypes = list(dtypes or DEFAULTS["dtypes"])
    known = set(rule_optimizers())
    for name in optimizers:
        if name not in known:
            raise ValueError(f"unknown optimizer {name!r}; pyopt bench times the optimizers with a C++ rule: {', '.join(sorted(known))}")
    for case in cases:
        parse_case(case)
    specs = [parse_dtype_spec(d) for d in dtypes]
    for name in optimizers:
        for d in specs:
            if d.state == "int8" and not int8_slots(name):
                raise ValueError(f"dtype spec {d.name!r}: {name} has no 8-bit states (optimizers with them: "
                                 f"{', '.join(n for n in sorted(known) if int8_slots(n))})")
    dtypes = [d.name for d in specs]
    for p in peers:
        if p not in PEERS:
            raise ValueError(f"unknown peer {p!r}; choose from {', '.join(PEERS)}")
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    if threads is not None:
        if threads < 1:
            raise ValueError("threads must be >= 1")
        _set_threads(threads)
    machine = machine_info()  # at the start: date and load average of the run
    results: list[dict[str, Any]] = []
    for name in optimizers:
        for case in cases:
            for dtype in dtypes:
                rows = run_case(name, case, dtype, peers, repeats, warmup, block_ms, gap_ms)
                if progress:
                    progress(rows)
                results.extend(asdict(r) for r in rows)
    settings = {"optimizers": optimizers, "cases": cases, "dtypes": dtypes, "peers": list(peers),
                "threads": threads, "repeats": repeats, "warmup": warmup, "block_ms": block_ms, "gap_ms": gap_ms,
                "case_sizes": {c: list(parse_case(c)) for c in cases}}
    return {"machine": machine, "settings": settings, "results": results}


# ---------------------------------------------------------------------------------------------
# Output

def _fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.1f}us"
    if s < 1:
        return f"{s * 1e3:.2f}ms"
    return f"{s:.2f}s"


def header_lines(machine: dict[str, Any]) -> list[str]:
    return [
        f"pyopt bench  {machine['date']}",
        f"cpu: {machine['cpu']} ({machine['cores']} cores)  isa: {machine['isa']}  "
        f"pyopt {machine['pyopt']} threads={machine['pyopt_threads']}  "
        f"torch {machine.get('torch')} threads={machine.get('torch_threads')}  deepspeed {machine.get('deepspeed')}  "
        f"bitsandbytes {machine.get('bitsandbytes')}  torchao {machine.get('torchao')}  "
        f"numpy {machine['numpy']}  OMP_WAIT_POLICY={machine.get('omp_wait_policy')}  "
        f"loadavg {' '.join(f'{x:.2f}' for x in machine.get('loadavg') or [])}",
    ]


def _status_cell(row: dict[str, Any], markdown: bool) -> str:
    return row["status"] if markdown or row["status"] == "n/a" else row["status"][:11]


def table_lines(results: list[dict[str, Any]], peers: Sequence[str], markdown: bool = False) -> list[str]:
    """One line per (optimizer, case, dtype): pyopt's time and GB/s, its fraction of the probe, with
    dtype specs its speedup over torch's fused optimizer on float32 params, pyopt-torch's time and the
    adapter's overhead (pyopt-torch time / pyopt time - 1), and each other peer's time with pyopt's
    speedup against it (peer time / pyopt time). Peers that are n/a in every row are left out."""
    shown = [p for p in PEERS if p in peers and p not in ("probe", "pyopt-torch")
             and any(r["impl"] == p and r["status"] != "n/a" for r in results)]
    with_specs = any(not parse_dtype_spec(r["dtype"]).plain for r in results)
    cols = ["optimizer", "case", "dtype", "pyopt", "GB/s"]
    if "probe" in peers:
        cols += ["probe", "probe/pyopt"]
    if with_specs:
        cols.append("vs torch-f32")
    if "pyopt-torch" in peers:
        cols += ["pyopt-torch", "adapter"]
    cols += shown
    groups: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["optimizer"], r["case"], r["dtype"]), {})[r["impl"]] = r
    body = []
    for (name, case, dtype), by_impl in groups.items():
        ours = by_impl["pyopt"]
        line = [name, case, dtype, _fmt_time(ours["median_s"]), f"{ours['gbps']:.1f}" if ours["gbps"] else "-"]
        if "probe" in peers:
            probe = by_impl.get("probe")
            line.append(_fmt_time(probe["median_s"]) if probe else "-")
            line.append(f"{ours['probe_fraction']:.2f}" if ours["probe_fraction"] else "-")
        if with_specs:
            line.append(f"{ours['vs_torch_fused_f32']:.2f}x" if ours.get("vs_torch_fused_f32") else "-")
        if "pyopt-torch" in peers:
            adapter = by_impl.get("pyopt-torch")
            if adapter is None:
                line += ["-", "-"]
            elif adapter["status"] != "ok":
                line += [_status_cell(adapter, markdown), "-"]
            else:
                overhead = adapter.get("adapter_overhead")
                line += [_fmt_time(adapter["median_s"]), f"{overhead:+.1%}" if overhead is not None else "-"]
        for p in shown:
            peer = by_impl.get(p)
            if peer is None:
                line.append("-")
            elif peer["status"] != "ok":
                line.append(_status_cell(peer, markdown))
            else:
                ratio = f" {peer['pyopt_speedup']:.2f}x" if peer["pyopt_speedup"] else ""
                line.append(_fmt_time(peer["median_s"]) + ratio)
        body.append(line)
    if markdown:
        out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        out += ["| " + " | ".join(line) + " |" for line in body]
        return out
    widths = [max(len(c), *(len(l[i]) for l in body)) if body else len(c) for i, c in enumerate(cols)]
    fmt = lambda row: "  ".join(v.rjust(w) if i > 2 else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths)))
    return [fmt(cols)] + [fmt(l) for l in body]


def unavailable_notes(results: list[dict[str, Any]]) -> list[str]:
    seen = []
    for r in results:
        if r["status"].startswith("unavailable") and (r["impl"], r["status"]) not in seen:
            seen.append((r["impl"], r["status"]))
    return [f"{impl}: {status}" for impl, status in seen]


def _parent(path: str) -> None:
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)


def write_json(path: str, report: dict[str, Any]) -> None:
    _parent(path)
    with open(path, "w") as fh:
        json.dump(report, fh, indent=2)
        fh.write("\n")


def write_csv(path: str, report: dict[str, Any]) -> None:
    _parent(path)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["date", "cpu", "isa"] + FIELDS, extrasaction="ignore")
        w.writeheader()
        m = report["machine"]
        for r in report["results"]:
            w.writerow({"date": m["date"], "cpu": m["cpu"], "isa": m["isa"], **r})


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _dtype_list(text: str) -> list[str]:
    """--dtypes: the canonical names of the specs; argparse turns the error into 'error: argument --dtypes'."""
    try:
        return [parse_dtype_spec(t).name for t in _csv_list(text)]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="pyopt bench", description=__doc__.splitlines()[0])
    parser.add_argument("--optimizers", type=_csv_list, help="comma-separated, or 'all' "
                        f"(default: {','.join(DEFAULTS['optimizers'])})")
    parser.add_argument("--cases", type=_csv_list, help=f"comma-separated TxN cases; known: {', '.join(CASES)} "
                        f"(default: {','.join(DEFAULTS['cases'])})")
    parser.add_argument("--dtypes", type=_dtype_list, help="comma-separated dtype specs PARAM[+master][+STATE]: "
                        "float32, float64, f32|f16|bf16 params, +master (float32 master weights), +bf16|+int8 states; "
                        "e.g. bf16,bf16+bf16,bf16+master+int8,int8 (= f32+int8). Default: float32")
    parser.add_argument("--threads", type=int, help="threads for pyopt and torch (default: theirs)")
    parser.add_argument("--peers", type=_csv_list, default=list(PEERS), help=f"subset of {','.join(PEERS)} "
                        "(default: all; missing packages are reported as unavailable)")
    parser.add_argument("--repeats", type=int, default=None, help="timed blocks per implementation (default 11)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per implementation (default 3)")
    parser.add_argument("--block-ms", type=float, default=None, help="target length of one timed block (20)")
    parser.add_argument("--gap-ms", type=float, default=None, help="sleep before each block (20; see the docs)")
    parser.add_argument("--json", metavar="PATH", help="write machine, settings and every row as JSON")
    parser.add_argument("--csv", metavar="PATH", help="write every row as CSV")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true", help="every optimizer, every case, float32 and float64")
    mode.add_argument("--quick", action="store_true", help="a tiny run (adamw, 10x1k, 3 repeats), for tests")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_from_args(args)


def run_from_args(args: argparse.Namespace) -> int:
    settings: dict[str, Any] = {"repeats": 11, "warmup": 3, "block_ms": 20.0, "gap_ms": 20.0}
    optimizers, cases, dtypes = DEFAULTS["optimizers"], DEFAULTS["cases"], DEFAULTS["dtypes"]
    if args.full:
        optimizers, cases, dtypes = rule_optimizers(), list(CASES), list(DTYPES)
    if args.quick:
        optimizers, cases, dtypes = QUICK["optimizers"], QUICK["cases"], QUICK["dtypes"]
        settings.update({k: QUICK[k] for k in settings})
    if args.optimizers:
        optimizers = rule_optimizers() if args.optimizers == ["all"] else args.optimizers
    cases = args.cases or cases
    dtypes = args.dtypes or dtypes
    for key in settings:
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    peers = args.peers
    if args.threads is not None and args.threads >= 1:  # before the header reports them
        _set_threads(args.threads)
    machine = machine_info()
    print("\n".join(header_lines(machine)), flush=True)
    load = (machine.get("loadavg") or [0.0])[0]
    if load > 0.5 * (machine["cores"] or 1) and not machine.get("omp_wait_policy"):
        print(f"warning: the machine is busy (load {load:.1f} on {machine['cores']} cores). With OpenMP threads "
              "spinning (the default), a parallel region whose thread lost its core waits a whole scheduler slice "
              "(~8 ms seen on a 2-core VM); OMP_WAIT_POLICY=passive avoids it.", file=sys.stderr)

    def progress(rows: list[Row]) -> None:
        r = rows[0]
        print(f"  done {r.optimizer} {r.case} {r.dtype}", file=sys.stderr, flush=True)

    try:
        report = run(optimizers, cases, dtypes, peers, args.threads, progress=progress, **settings)
    except ValueError as exc:
        print(f"pyopt bench: error: {exc}", file=sys.stderr)
        return 2
    print(f"median of {settings['repeats']} interleaved blocks per implementation; 'N.NNx' = pyopt's speedup "
          "(peer time / pyopt time); probe/pyopt = fraction of the bandwidth floor"
          + ("; vs torch-f32 = speedup over torch's fused optimizer on float32 params"
             if any(not parse_dtype_spec(d).plain for d in report["settings"]["dtypes"]) else "")
          + ("; adapter = pyopt-torch time / pyopt time - 1 (the cost of pyopt.torch itself)"
             if "pyopt-torch" in peers else ""))
    print("\n".join(table_lines(report["results"], peers, markdown=args.markdown)))
    for note in unavailable_notes(report["results"]):
        print("note: " + note)
    if args.json:
        write_json(args.json, report)
    if args.csv:
        write_csv(args.csv, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
