"""pyopt.memory_estimate: the bytes of params, grads, master weights and each state slot (issue 12)."""
from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

import pyopt
import pyopt.memory
from pyopt import _core, memory_estimate

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = ml_dtypes.bfloat16
PARTS = ("params", "grads", "master", "total")
SIZES = (0, 1, 255, 256, 257, 4095, 4096, 4097, 65536, 100003)


def slots(est: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in est.items() if k not in PARTS}


def int8_bytes(n: int) -> int:
    """bitsandbytes' layout: one uint8 code per element, one float32 absmax per block of 256."""
    return n + 4 * math.ceil(n / 256) if n >= 4096 else 4 * n


def test_docstring_examples():
    assert doctest.testmod(pyopt.memory, raise_on_error=True).attempted >= 3


def test_seed_float16_adam_is_16_bytes_per_param():
    """The seed's accounting: float16 params (2P) and grads (2P), float32 master (4P), two float32
    moments (8P)."""
    P = 10**9
    est = memory_estimate("adam", P, param_dtype="float16", master_weights=True)
    assert est == {"params": 2 * P, "grads": 2 * P, "master": 4 * P, "exp_avg": 4 * P, "exp_avg_sq": 4 * P,
                   "total": 16 * P}


@pytest.mark.parametrize("param_dtype, master, state_dtype, per_param", [
    ("bfloat16", True, "bfloat16", 2 + 2 + 4 + 2 + 2),
    ("bfloat16", False, "bfloat16", 2 + 2 + 2 + 2),
    ("bfloat16", False, "float32", 2 + 2 + 4 + 4),
    ("float32", False, "bfloat16", 4 + 4 + 2 + 2),
    ("float32", True, "float32", 4 + 4 + 4 + 4),  # master weights: a no-op for float32 params
    ("float64", True, "bfloat16", 8 + 8 + 8 + 8),  # float64 params keep float64 states
    ("float64", False, "int8", 8 + 8 + 8 + 8),
])
def test_bytes_per_param(param_dtype, master, state_dtype, per_param):
    P = 3 * 256 * 1000
    est = memory_estimate("adamw", P, param_dtype=param_dtype, state_dtype=state_dtype, master_weights=master)
    assert est["total"] == per_param * P
    assert est["total"] == sum(v for k, v in est.items() if k != "total")


@pytest.mark.parametrize("n", SIZES)
def test_int8_slots_are_codes_plus_block_absmax(n):
    est = memory_estimate("adam", n, param_dtype="bfloat16", state_dtype="int8", master_weights=True)
    assert est["exp_avg"] == est["exp_avg_sq"] == int8_bytes(n)
    assert (est["params"], est["grads"], est["master"]) == (2 * n, 2 * n, 4 * n)


def test_int8_worked_sizes():
    """Hand-computed: 4096 = 16 blocks -> 4096 + 64; 100003 = 390 full blocks + 163 -> 391 absmax."""
    est = memory_estimate("lion", [4095, 4096, 100003], state_dtype="int8")
    assert est["exp_avg"] == 4095 * 4 + (4096 + 16 * 4) + (100003 + 391 * 4)


def test_int8_threshold_is_per_tensor():
    """Many small tensors stay float32 even when their sum passes 4096 (bnb's min_8bit_size)."""
    sizes = [4095] * 3 + [1] * 10
    est = memory_estimate("adam", sizes, state_dtype="int8")
    assert est["exp_avg"] == est["exp_avg_sq"] == 4 * sum(sizes)
    big = [4096, 300000, 255]
    est = memory_estimate("adam", big, state_dtype="int8")
    assert est["exp_avg"] == sum(int8_bytes(n) for n in big)
    assert est["params"] == est["grads"] == 4 * sum(big)


def test_int8_only_for_the_records_int8_slots():
    """Adan's pre_grad stays float32 (its record's int8_slots leave it out)."""
    n = 10000
    int8_slots = set(_core.optimizers()["adan"]["int8_slots"])
    est = slots(memory_estimate("adan", n, state_dtype="int8"))
    assert set(est) - int8_slots == {"pre_grad"}
    for slot, b in est.items():
        assert b == (int8_bytes(n) if slot in int8_slots else 4 * n), slot


def test_amsgrad_adds_a_slot():
    n = 5000
    plain = memory_estimate("adam", n, state_dtype="int8")
    ams = memory_estimate("adam", n, state_dtype="int8", amsgrad=True)
    assert list(slots(ams)) == ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]
    assert ams["total"] - plain["total"] == ams["max_exp_avg_sq"] == int8_bytes(n)
    assert memory_estimate("amsgrad", n) == memory_estimate("adam", n, amsgrad=True)


def test_hyperparameters_choose_the_slots():
    assert slots(memory_estimate("sgd", 10)) == {}
    assert list(slots(memory_estimate("sgd", 10, momentum=0.9))) == ["momentum_buffer"]
    assert list(slots(memory_estimate("rmsprop", 10, momentum=0.9, centered=True))) == [
        "square_avg", "momentum_buffer", "grad_avg"]


@pytest.mark.parametrize("name", pyopt._spec.rule_optimizers())
def test_keys_and_bytes_match_a_live_optimizer(name):
    """The slots the estimate names are the arrays the optimizer allocates, byte for byte."""
    cls = getattr(pyopt, pyopt._spec.spec(name).class_name)
    hyper = {"momentum": 0.9} if name == "sgd" else {}
    sizes = (7, 300)
    params = [np.ones(n, np.float32) for n in sizes]
    opt = cls(params, **hyper)
    opt.step([np.full(n, 0.1, np.float32) for n in sizes])
    held: dict[str, int] = {}
    for i in range(len(sizes)):
        for key, value in opt.state[i].items():
            if isinstance(value, np.ndarray):
                held[key] = held.get(key, 0) + value.nbytes
    est = memory_estimate(name, list(sizes), **hyper)
    assert slots(est) == held
    assert list(slots(est)) == [s for s in _core.optimizers()[name]["slots"] if s in held]  # record order


def test_muon_momentum_buffer_in_the_param_dtype():
    n = 64 * 32
    for dtype, size in ((np.float32, 4), (np.float64, 8)):
        est = memory_estimate("muon", [n, 10], param_dtype=dtype, nesterov=False)
        assert slots(est) == {"momentum_buffer": size * (n + 10)}
    p = np.ones((64, 32), np.float32)
    opt = pyopt.Muon([p])
    opt.step([np.ones_like(p)])
    assert memory_estimate("muon", p.size)["momentum_buffer"] == opt.state[0]["momentum_buffer"].nbytes


@pytest.mark.parametrize("spelling", ["bfloat16", "bf16", "BF16", BF16, np.dtype(BF16)])
def test_bfloat16_spellings(spelling):
    ref = memory_estimate("adam", 100, param_dtype="bfloat16", state_dtype="bfloat16")
    assert memory_estimate("adam", 100, param_dtype=spelling, state_dtype=spelling) == ref


@pytest.mark.parametrize("spelling, size", [("float16", 2), (np.float16, 2), ("fp16", 2), (np.dtype("f2"), 2),
                                            ("float32", 4), (np.float32, 4), (float, 8), ("float64", 8)])
def test_param_dtype_spellings(spelling, size):
    assert memory_estimate("lion", 10, param_dtype=spelling)["params"] == 10 * size


def test_float32_grads_for_16bit_params():
    est = memory_estimate("adamw", 1000, param_dtype="bfloat16", grad_dtype=np.float32)
    assert (est["params"], est["grads"]) == (2000, 4000)


def test_sequence_forms():
    one = memory_estimate("adam", 4096 + 100, state_dtype="int8")
    assert memory_estimate("adam", [4096 + 100], state_dtype="int8") == one
    assert memory_estimate("adam", (np.int64(4096 + 100),), state_dtype="int8") == one
    assert memory_estimate("adam", np.array([4096 + 100]), state_dtype="int8") == one
    assert memory_estimate("adam", [])["total"] == 0


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(name="adamm"), ValueError, ["name", "'adamm'", "adamw", "lion"]),
    (dict(name=3), TypeError, ["name"]),
    (dict(n_params=-1), ValueError, ["n_params", ">= 0"]),
    (dict(n_params=[10, -2]), ValueError, ["n_params", "-2"]),
    (dict(n_params=1e9), TypeError, ["n_params", "write 1000000000"]),
    (dict(n_params=[4096.0]), TypeError, ["n_params", "write 4096"]),
    (dict(n_params=[10, 2.5]), TypeError, ["n_params", "2.5"]),
    (dict(n_params=True), TypeError, ["n_params"]),
    (dict(n_params="10"), TypeError, ["n_params"]),
    (dict(n_params=None), TypeError, ["n_params"]),
    (dict(param_dtype="float8"), ValueError, ["param_dtype", "float8", "bfloat16"]),
    (dict(param_dtype="int32"), ValueError, ["param_dtype", "int32", "float16"]),
    (dict(param_dtype=4), TypeError, ["param_dtype"]),
    (dict(state_dtype="float16"), ValueError, ["state_dtype", "float16", "'int8'"]),
    (dict(state_dtype="int4"), ValueError, ["state_dtype", "int4"]),
    (dict(state_dtype=None), TypeError, ["state_dtype"]),
    (dict(param_dtype="float16", grad_dtype="bfloat16"), ValueError, ["grad_dtype", "float16", "float32"]),
    (dict(param_dtype="float32", grad_dtype="float64"), ValueError, ["grad_dtype", "float32"]),
    (dict(name="adamax", state_dtype="int8"), ValueError, ["state_dtype='int8'", "adamax", "adam", "lion", "adan"]),
    (dict(name="novograd", state_dtype="int8"), ValueError, ["novograd", "ademamix", "rmsprop", "adagrad"]),
    (dict(name="muon", state_dtype="bfloat16"), ValueError, ["muon", "'float32' only", "'bfloat16'"]),
    (dict(name="muon", state_dtype="int8"), ValueError, ["muon has no 8-bit states", "adamw"]),
    (dict(name="lamb", state_dtype="bfloat16"), ValueError, ["lamb", "'float32' only"]),
    (dict(name="sophia", state_dtype="bfloat16"), ValueError, ["sophia", "'float32' only"]),
    (dict(name="sophia", param_dtype="bfloat16"), ValueError, ["param_dtype", "sophia", "float32 or float64"]),
    (dict(name="schedulefree_adamw", param_dtype="float16"), ValueError, ["schedulefree_adamw", "float32 or float64"]),
    (dict(name="muon", param_dtype="bfloat16"), ValueError, ["param_dtype", "muon", "float32 or float64"]),
    (dict(name="muon", param_dtype="float64", grad_dtype="float32"), ValueError, ["muon", "grads of the param dtype"]),
    (dict(name="muon", master_weights=True), ValueError, ["muon", "master_weights"]),
    (dict(name="muon", momentum=1.5), ValueError, ["momentum"]),
    (dict(name="muon", betas=(0.9, 0.99)), TypeError, ["'betas'", "momentum"]),
    (dict(name="adafactor"), ValueError, ["adafactor", "shape"]),
    (dict(name="adafactor", state_dtype="int8"), ValueError, ["adafactor has no 8-bit states"]),
    (dict(master_weights=1), TypeError, ["master_weights"]),
    (dict(stochastic_rounding="yes"), TypeError, ["stochastic_rounding"]),
    (dict(lr=-1.0), ValueError, ["lr"]),
    (dict(betas=0.9), TypeError, ["betas"]),
    (dict(momentum=0.9), TypeError, ["'momentum'", "betas"]),
])
def test_errors_name_the_parameter(kwargs, error, words):
    args = {"name": "adam", "n_params": 10, **kwargs}
    with pytest.raises(error) as info:
        memory_estimate(args.pop("name"), args.pop("n_params"), **args)
    message = str(info.value)
    assert message.startswith("memory_estimate:")
    for word in words:
        assert word in message, (word, message)


def live_memory(name: str, sizes: list[int], param_dtype, grad_dtype, storage: dict, hyper: dict) -> dict[str, int]:
    cls = getattr(pyopt, pyopt._spec.spec(name).class_name)
    params = [np.ones(n, param_dtype) for n in sizes]
    opt = cls(params, **storage, **hyper)
    opt.step([np.full(n, 0.1, np.float32).astype(grad_dtype) for n in sizes])
    return opt.memory()


@pytest.mark.parametrize("name", pyopt._spec.rule_optimizers())
def test_estimate_equals_opt_memory(name):
    """memory_estimate, less the grads, is what opt.memory() counts after a step: every param
    dtype, state_dtype and master_weights the optimizer takes, small and 8-bit-sized tensors."""
    cls = getattr(pyopt, pyopt._spec.spec(name).class_name)
    sizes = [4096, 100, 3 * 256 + 5000]
    hyper = {"momentum": 0.9} if name in ("sgd", "rmsprop") else {"amsgrad": True} if name == "adam" else {}
    param_dtypes = [np.float32, np.float64] + ([np.float16, BF16] if cls.accepts_16bit_params else [])
    checked = 0
    for state_dtype in [d for d in _core.optimizers()[name]["state_dtypes"] if d in cls.state_dtypes]:
        for param_dtype in param_dtypes:
            for grad_dtype in {np.dtype(param_dtype), np.dtype(np.float32)}:
                for master in (False, True):
                    storage = dict(state_dtype=state_dtype, master_weights=master)
                    est = memory_estimate(name, sizes, param_dtype=param_dtype, grad_dtype=grad_dtype,
                                          **storage, **hyper)
                    expected = {k: v for k, v in est.items() if k != "grads"}
                    expected["total"] -= est["grads"]
                    assert live_memory(name, sizes, param_dtype, grad_dtype, storage, hyper) == expected, (
                        state_dtype, np.dtype(param_dtype).name, grad_dtype, master)
                    checked += 1
    assert checked >= 6


def test_modes_that_change_the_optimizer_or_its_layout():
    """MARS's mars_type is routed as create routes it (lion: Lion's slots; shampoo: MARSShampoo,
    whose estimate is refused: its slots depend on the params' dimensions); SPAM with density < 1
    keeps moments for its masked entries only, which sizes do not tell."""
    sizes = [10000, 100]
    lion = memory_estimate("mars", sizes, mars_type="lion")
    assert lion == memory_estimate("mars", sizes, lion=True) != memory_estimate("mars", sizes)
    with pytest.raises(ValueError, match="mars_shampoo"):
        memory_estimate("mars", sizes, mars_type="shampoo")
    with pytest.raises(ValueError, match="density < 1"):
        memory_estimate("spam", sizes, density=0.1)
    assert memory_estimate("spam", sizes, density=1.0) == memory_estimate("spam", sizes)
