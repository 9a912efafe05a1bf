"""The storage options of every element-wise optimizer (issue 12): ``state_dtype`` = "bfloat16" /
"int8", ``master_weights``, ``stochastic_rounding``.

The models everything is compared with, bit for bit on every ISA path, use pyopt's own float32
step (``pyopt.functional``) and numpy / ml_dtypes / the bitsandbytes-exact quantizer
(``pyopt.storage.quantize_blockwise``, itself checked against bitsandbytes in test_quant8.py):
- bfloat16 states: upcast the states, float32 step, round them back to nearest even;
- 8-bit states: dequantize, float32 step, requantize (new absmax per block of 256);
- master weights: the float32 optimizer's trajectory on the master, the param = master rounded.
"""
from __future__ import annotations

import numpy as np
import pytest

import pyopt
import pyopt.functional as F
from pyopt import _core
from pyopt.storage import dequantize_blockwise, quantize_blockwise
from refcheck import ISAS, isa_path, num_threads

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
STEPS = 4
INT8_HYPER = {  # the list, flags on so that every slot is in use
    "adam": {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True},
    "adamw": {"lr": 0.01, "weight_decay": 0.1},
    "lion": {"lr": 0.003, "weight_decay": 0.5},
    "momentum": {"lr": 0.05, "weight_decay": 0.01},
    "nag": {"lr": 0.05},
    "adan": {"lr": 0.01, "weight_decay": 0.02},
    "ademamix": {"lr": 0.01, "weight_decay": 0.1},
    "rmsprop": {"lr": 0.01, "momentum": 0.9, "centered": True},
    "adagrad": {"lr": 0.05, "initial_accumulator_value": 0.1},
    # added since: the element-wise Adam-like rules of optax and pytorch-optimizer
    "adamaxw": {"lr": 0.01, "weight_decay": 0.1},
    "optax_nadamw": {"lr": 0.01, "weight_decay": 0.1},
    "spam": {"lr": 0.01, "weight_decay": 0.1, "update_proj_gap": 7, "warmup_epoch": 3},
    "simplified_ademamix": {"lr": 0.01, "weight_decay": 0.1, "beta1_warmup": 3},
}
SIZES_8BIT = (4096, 5000, 100003)  # >= min_8bit_size: a whole number of blocks, a partial last block, large


def records(name: str) -> dict:
    return _core.optimizers()[name]


def draws(size: int, seed: int, steps: int = STEPS) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    param = (rng.standard_normal(size) * 2).astype(np.float32)
    grads = [(rng.standard_normal(size) * 10.0 ** rng.uniform(-3, 1)).astype(np.float32) for _ in range(steps)]
    return param, grads


class StateModel:
    """One param's states stored as the options say, stepped by dequantize / float32 step / store."""

    def __init__(self, name: str, hyper: dict, size: int, state_dtype: str):
        self.name, self.hyper, self.state_dtype = name, hyper, state_dtype
        self.int8 = set(records(name)["int8_slots"]) if state_dtype == "int8" and size >= 4096 else set()
        self.unsigned = set(records(name)["nonnegative_slots"])
        self.slots = []
        self.scalars = {}  # NAdam's mu_product ...: the functional API returns it updated
        for slot, initial in F.state_slots(name, **hyper):
            values = np.full(size, initial, np.float32)
            self.slots.append((slot, self._store(slot, values, fresh=initial == 0.0)))

    def _store(self, slot, values, fresh=False):
        if slot in self.int8:
            if fresh:
                return np.zeros(values.size, np.uint8), np.zeros(-(-values.size // 256), np.float32)
            return quantize_blockwise(values, slot not in self.unsigned)
        return values.astype(BF16) if self.state_dtype == "bfloat16" else values

    def _load(self, slot, stored):
        if slot in self.int8:
            return dequantize_blockwise(*stored, slot not in self.unsigned)
        return stored.astype(np.float32)

    def step(self, param32: np.ndarray, grad: np.ndarray, t: int) -> None:
        values = [self._load(slot, stored) for slot, stored in self.slots]
        self.scalars = getattr(F, f"{self.name}_")(param32, grad, *values, step=t, **self.hyper,
                                                   **self.scalars) or {}
        self.slots = [(slot, self._store(slot, v)) for (slot, _), v in zip(self.slots, values)]


def bits(a: np.ndarray) -> np.ndarray:
    return a.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def assert_states_equal(opt_state: dict, model: StateModel, where: str) -> None:
    for slot, stored in model.slots:
        if isinstance(stored, tuple):
            np.testing.assert_array_equal(opt_state[slot], stored[0], err_msg=f"{where}: {slot} codes")
            np.testing.assert_array_equal(bits(opt_state[slot + "_absmax"]), bits(stored[1]),
                                          err_msg=f"{where}: {slot} absmax")
        else:
            assert opt_state[slot].dtype == stored.dtype, (where, slot)
            np.testing.assert_array_equal(bits(opt_state[slot]), bits(stored), err_msg=f"{where}: {slot}")


def run_against_model(name: str, hyper: dict, size: int, state_dtype: str, isa: str):
    """Steps a float32 param with the optimizer and with StateModel; asserts the same param and state
    bits; returns the optimizer and a description of the case."""
    param, grads = draws(size, seed=size)
    model_param, model = param.copy(), StateModel(name, hyper, size, state_dtype)
    opt = pyopt.create(name, [param], state_dtype=state_dtype, **hyper)
    for t, g in enumerate(grads, start=1):
        opt.step([g])
        model.step(model_param, g, t)
    where = f"{name} size {size} on {isa}"
    np.testing.assert_array_equal(param.view(np.uint32), model_param.view(np.uint32), err_msg=where)
    assert_states_equal(opt.state[0], model, where)
    return opt, where


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", INT8_HYPER)
def test_8bit_states_equal_dequantize_step_requantize(isa, name):
    with isa_path(isa):
        for size in SIZES_8BIT + (4095, 7):
            opt, where = run_against_model(name, INT8_HYPER[name], size, "int8", isa)
            if size < 4096:  # bitsandbytes' min_8bit_size: float32 states, the float32 optimizer exactly
                slots = [v for v in opt.state[0].values() if isinstance(v, np.ndarray)]  # not step, den_sum ...
                assert slots and all(v.dtype == np.float32 for v in slots), where


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", ["adamw", "lion", "momentum", "nadam", "adabelief", "rprop"])
def test_bfloat16_states_equal_upcast_step_round(isa, name):
    with isa_path(isa):
        for size in (1, 7, 17, 1023, 100003):
            run_against_model(name, INT8_HYPER.get(name, {"lr": 0.01}), size, "bfloat16", isa)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("state_dtype", ["float32", "bfloat16", "int8"])
@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bf16", "f16"])
def test_master_weights_follow_the_float32_trajectory_and_the_param_is_it_rounded(isa, dtype, state_dtype):
    name, hyper = "adamw", INT8_HYPER["adamw"]
    with isa_path(isa):
        for size in (7, 1023, 5000, 100003):
            start, grads = draws(size, seed=size)
            param = start.astype(dtype)
            master_model = param.astype(np.float32)  # the master starts as the param
            model = StateModel(name, hyper, size, state_dtype)
            grads16 = [g.astype(dtype) for g in grads]
            opt = pyopt.AdamW([param], master_weights=True, state_dtype=state_dtype, **hyper)
            for t, g in enumerate(grads16, start=1):
                opt.step([g])
                model.step(master_model, g.astype(np.float32), t)
            where = f"{dtype} {state_dtype} size {size} on {isa}"
            master = opt.state[0]["master"]
            np.testing.assert_array_equal(master.view(np.uint32), master_model.view(np.uint32), err_msg=where)
            with np.errstate(over="ignore"):
                np.testing.assert_array_equal(param.view(np.uint16), master.astype(dtype).view(np.uint16), err_msg=where)
            assert_states_equal(opt.state[0], model, where)


def test_float32_master_trajectory_equals_the_float32_optimizer_on_the_same_grads():
    start, grads = draws(100003, seed=3, steps=10)
    param16 = start.astype(BF16)
    param32 = param16.astype(np.float32)
    opt16 = pyopt.Lion([param16], lr=1e-3, weight_decay=0.1, master_weights=True)
    opt32 = pyopt.Lion([param32], lr=1e-3, weight_decay=0.1)
    for g in grads:
        opt16.step([g])
        opt32.step([g])
    np.testing.assert_array_equal(opt16.state[0]["master"].view(np.uint32), param32.view(np.uint32))
    np.testing.assert_array_equal(opt16.state[0]["exp_avg"], opt32.state[0]["exp_avg"])


def test_thread_count_and_chunking_do_not_change_8bit_results():
    """Chunk boundaries of tensors with 8-bit states fall on block boundaries: a block is never split."""
    sizes = (5000, 4097, 100003, 300, 70001)
    results = []
    for threads in (1, 2, 3):
        rng = np.random.default_rng(0)
        params = [rng.standard_normal(n).astype(np.float32).astype(BF16) for n in sizes]
        opt = pyopt.AdamW(params, lr=1e-2, state_dtype="int8", master_weights=True, stochastic_rounding=True)
        with num_threads(threads):
            for _ in range(3):
                opt.step([rng.standard_normal(n).astype(np.float32) for n in sizes])
        results.append([p.view(np.uint16).copy() for p in params] +
                       [v for e in opt.state.values() for k, v in e.items() if k != "step"])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


# ----- stochastic rounding -------------------------------------------------------------------
@pytest.mark.parametrize("dtype, start, spacing", [(BF16, 1.0, 2.0**-7), (BF16, -3.0, 2.0**-6), (F16, 1.0, 2.0**-10),
                                                   (F16, 2.0**-20, 2.0**-24)], ids=["bf16", "bf16-neg", "f16",
                                                                                     "f16-subnormal"])
@pytest.mark.parametrize("fraction", [0.3, 0.875])
def test_stochastic_rounding_is_unbiased(dtype, start, spacing, fraction):
    """p = start + fraction·spacing (exact in float32) lies between two 16-bit neighbours; over N
    elements the share rounded up must be `fraction` within 5 standard errors."""
    n = 400_000
    param = np.full(n, start, np.float32).astype(dtype)
    grad = np.full(n, -1.0, np.float32)
    F.sgd_(param, grad, step=1, lr=fraction * spacing, rounding_seed=12345)
    values = param.astype(np.float64)
    lower, upper = np.float64(start), np.float64(start) + spacing
    assert set(np.unique(values)) <= {lower, upper}
    share_up = np.mean(values == upper)
    assert abs(share_up - fraction) < 5 * np.sqrt(fraction * (1 - fraction) / n), share_up
    # The mean equals the float32 value within the same statistical error.
    assert abs(values.mean() - (start + fraction * spacing)) < 5 * spacing * np.sqrt(0.25 / n)


def test_stochastic_rounding_is_deterministic_per_seed_and_thread_independent():
    n = 200_003
    rng = np.random.default_rng(1)
    start = rng.standard_normal(n).astype(np.float32)
    grads = [rng.standard_normal(n).astype(np.float32) for _ in range(3)]

    def run(seed, threads, stochastic=True):
        param = start.astype(BF16)
        m, v = np.zeros(n, BF16), np.zeros(n, BF16)
        with num_threads(threads):
            for t, g in enumerate(grads, start=1):
                F.adamw_(param, g, m, v, step=t, lr=1e-3, rounding_seed=seed if stochastic else None)
        return [param.view(np.uint16).copy(), m.view(np.uint16).copy(), v.view(np.uint16).copy()]

    first = run(7, 1)
    for a, b in zip(first, run(7, 2)):
        np.testing.assert_array_equal(a, b)
    other_seed, nearest = run(8, 1), run(0, 1, stochastic=False)
    for a, b, c in zip(first, other_seed, nearest):
        assert np.mean(a != b) > 0.1 and np.mean(a != c) > 0.1
    # The optimizer class seeds each param by its index: reproducible from run to run.
    def opt_run():
        params = [start.astype(BF16), start[:1000].astype(BF16)]
        opt = pyopt.AdamW(params, lr=1e-3, stochastic_rounding=True, state_dtype="bfloat16")
        for g in grads:
            opt.step([g, g[:1000]])
        return [p.view(np.uint16) for p in params]
    for a, b in zip(opt_run(), opt_run()):
        np.testing.assert_array_equal(a, b)


def test_stochastic_rounding_keeps_exact_values_nan_and_overflow():
    values = np.array([1.0, -2.5, 0.0, np.nan, np.inf, -np.inf, 3e38, 65519.0, 70000.0], np.float32)
    for dtype in (BF16, F16):
        with np.errstate(over="ignore", invalid="ignore"):
            param = values.astype(dtype)
            nearest = param.copy()
        F.sgd_(param, np.zeros_like(values), step=1, lr=0.1, rounding_seed=3)
        np.testing.assert_array_equal(param.view(np.uint16), nearest.view(np.uint16))


# ----- options, errors, checkpoints, memory ------------------------------------------------------
def test_storage_options_are_checked_before_anything():
    w = np.zeros(5000, np.float32)
    with pytest.raises(ValueError, match=r"Adadelta: adadelta has no 8-bit states.*optimizers that do: .*adamw"):
        pyopt.Adadelta([w], state_dtype="int8")
    with pytest.raises(ValueError, match=r"state_dtype must be one of 'float32', 'bfloat16', 'int8', got 'fp8'"):
        pyopt.AdamW([w], state_dtype="fp8")
    with pytest.raises(TypeError, match="state_dtype must be one of"):
        pyopt.AdamW([w], state_dtype=8)
    with pytest.raises(TypeError, match="master_weights must be True or False"):
        pyopt.AdamW([w], master_weights="yes")
    with pytest.raises(ValueError, match="SophiaG: sophia keeps its states as 'float32' only"):
        pyopt.SophiaG([w], state_dtype="bfloat16")
    with pytest.raises(ValueError, match="LAMB: lamb keeps its states as 'float32' only"):
        pyopt.LAMB([w], state_dtype="bfloat16")
    with pytest.raises(TypeError, match="unknown hyperparameter 'state_dtypes'"):
        pyopt.create("adamw", [w], state_dtypes="int8")
    assert pyopt.create("adamw", [w], state_dtype="int8").storage == {
        "master_weights": False, "state_dtype": "int8", "stochastic_rounding": False}


def test_bad_8bit_states_in_the_functional_api_change_nothing():
    p = np.ones(5000, np.float32)
    g = np.ones(5000, np.float32)
    codes, absmax = np.zeros(5000, np.uint8), np.zeros(20, np.float32)
    v = np.zeros(5000, np.float32)
    with pytest.raises(ValueError, match=r"state 'exp_avg': absmax shape \(19,\) is not \(20,\)"):
        F.adamw_(p, g, (codes, absmax[:19]), v, step=1)
    with pytest.raises(TypeError, match="state 'exp_avg': codes dtype int8 is not uint8"):
        F.adamw_(p, g, (codes.view(np.int8), absmax), v, step=1)
    with pytest.raises(TypeError, match="state 'acc_delta'.*cannot keep this state in 8 bits"):
        F.adadelta_(p, g, np.zeros(5000, np.float32), (codes, absmax), step=1)
    with pytest.raises(TypeError, match="master: only float16 and bfloat16 params"):
        F.adamw_(p, g, np.zeros(5000, np.float32), v, step=1, master=np.zeros(5000, np.float32))
    assert (p == 1).all() and not v.any() and not codes.any() and not absmax.any()


def test_float64_params_keep_float64_states():
    w = np.ones(5000)
    opt = pyopt.AdamW([w], state_dtype="bfloat16", master_weights=True)
    opt.step([np.ones(5000)])
    assert {k: v.dtype for k, v in opt.state[0].items() if k != "step"} == {"exp_avg": np.float64,
                                                                           "exp_avg_sq": np.float64}


@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
def test_state_dict_round_trip_continues_bit_identically_and_carries_the_options(state_dtype, tmp_path):
    start, grads = draws(10000, seed=5, steps=6)
    a = start.astype(BF16)
    opt = pyopt.AdamW([a], lr=1e-2, master_weights=True, state_dtype=state_dtype, stochastic_rounding=True)
    for g in grads[:3]:
        opt.step([g])
    b = a.copy()
    restored = pyopt.AdamW([b], lr=1e-2)  # float32 options: the checkpoint's replace them
    restored.load_state_dict(opt.state_dict())
    assert restored.storage == opt.storage
    path = tmp_path / "ckpt.npz"
    pyopt.save(opt, path)
    c = a.copy()
    from_file = pyopt.load(path, [c])
    for g in grads[3:]:
        for o in (opt, restored, from_file):
            o.step([g])
    for p in (b, c):
        np.testing.assert_array_equal(p.view(np.uint16), a.view(np.uint16))
    for o in (restored, from_file):
        for k, v in opt.state[0].items():
            if k != "step":
                assert o.state[0][k].dtype == v.dtype
                np.testing.assert_array_equal(np.asarray(o.state[0][k]).view(np.uint8), v.view(np.uint8))


def test_load_state_dict_checks_8bit_entries_before_anything():
    w = np.ones(5000, np.float32)
    opt = pyopt.AdamW([w], state_dtype="int8")
    opt.step([np.ones(5000, np.float32)])
    good = opt.state_dict()
    target = pyopt.AdamW([w.copy()])
    before = target.state_dict()

    def broken(**change):
        sd = opt.state_dict()
        sd["state"][0].update(change)
        for k, v in list(change.items()):
            if v is None:
                del sd["state"][0][k]
        return sd

    with pytest.raises(TypeError, match=r"state 'exp_avg' has dtype float32, expected uint8 codes"):
        target.load_state_dict(broken(exp_avg=good["state"][0]["exp_avg"].astype(np.float32)))
    with pytest.raises(ValueError, match=r"state 'exp_avg_absmax' has shape \(19,\), expected \(20,\)"):
        target.load_state_dict(broken(exp_avg_absmax=np.zeros(19, np.float32)))
    with pytest.raises(ValueError, match=r"8-bit state 'exp_avg' comes without its 'exp_avg_absmax'"):
        target.load_state_dict(broken(exp_avg_absmax=None))
    with pytest.raises(TypeError, match=r"state 'exp_avg' has dtype uint8, expected a float dtype"):
        sd = opt.state_dict()
        sd["storage"] = {"state_dtype": "float32"}
        target.load_state_dict(sd)
    with pytest.raises(ValueError, match=r"state_dict 'storage'.*adadelta has no 8-bit states"):
        pyopt.Adadelta([w.copy()]).load_state_dict({**pyopt.Adadelta([w.copy()]).state_dict(),
                                                     "storage": {"state_dtype": "int8"}})
    assert target.state_dict()["storage"] == before["storage"] and target.state == {}


def test_memory_reports_the_bytes_held():
    params = [np.zeros(10000, BF16), np.zeros(100, BF16)]
    opt = pyopt.AdamW(params, master_weights=True, state_dtype="int8")
    assert opt.memory() == {"params": 20200, "master": 0, "total": 20200}
    opt.step([np.ones(10000, BF16), np.ones(100, BF16)])
    # 8-bit: 10000 codes + 40 absmax; the small param keeps float32 states (400 bytes each).
    assert opt.memory() == {"params": 20200, "master": 40400, "exp_avg": 10160 + 400, "exp_avg_sq": 10160 + 400,
                            "total": 20200 + 40400 + 2 * 10560}
