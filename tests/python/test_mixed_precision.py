"""float16 / bfloat16 params (issue 12, storage types): the driver loads each element into float32,
runs the float32 rule and stores the param back rounded to nearest even, with float32 states.

The model everything is compared with, bit for bit on every ISA path: upcast the 16-bit param to
float32, run pyopt's float32 step on that copy (float32 states, the grad upcast), round the result
to the 16-bit dtype with numpy / ml_dtypes (both round to nearest even)."""
from __future__ import annotations

import numpy as np
import pytest

import pyopt
import pyopt.functional as F
from refcheck import ISAS, isa_path

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
DTYPES = {"float16": F16, "bfloat16": BF16}
SIZES = (0, 1, 7, 17, 1023, 100003)
HYPER = {  # a few flags on, so decay steps and variants other than the default run too
    "sgd": {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
    "adam": {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True},
    "adamw": {"lr": 0.01, "weight_decay": 0.1},
    "lion": {"lr": 0.003, "weight_decay": 0.5},
    "lamb": {"lr": 0.01, "weight_decay": 0.01},  # per-tensor norms: the driver's reduction pass
}
STEPS = 3


def bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint16) if a.dtype.itemsize == 2 else a.view(np.uint32)


def draws(size: int, dtype: np.dtype, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    param = (rng.standard_normal(size) * 2).astype(np.float32).astype(dtype)
    grads = [(rng.standard_normal(size) * 0.1).astype(np.float32) for _ in range(STEPS)]
    return param, grads


def model_steps(name: str, param: np.ndarray, grads: list[np.ndarray], hyper: dict) -> np.ndarray:
    """The upcast / float32 step / round model, with float32 states kept across steps."""
    dtype = param.dtype
    state = [np.full(param.shape, initial, np.float32) for _, initial in F.state_slots(name, **hyper)]
    for t, grad in enumerate(grads, start=1):
        upcast = param.astype(np.float32)
        getattr(F, f"{name}_")(upcast, grad.astype(np.float32), *state, step=t, **hyper)
        with np.errstate(over="ignore"):  # float16 overflow to inf is part of the model
            param = upcast.astype(dtype)
    return param


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("grad_in_param_dtype", [True, False], ids=["grad16", "grad32"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", HYPER)
def test_optimizer_equals_upcast_step_round_model(isa, name, dtype, grad_in_param_dtype):
    for size in SIZES:
        param, grads = draws(size, DTYPES[dtype], seed=size)
        if grad_in_param_dtype:
            grads = [g.astype(DTYPES[dtype]) for g in grads]
        with isa_path(isa):
            expected = model_steps(name, param.copy(), grads, HYPER[name])
            opt = pyopt.create(name, [param], **HYPER[name])
            for grad in grads:
                opt.step([grad])
        assert param.dtype == DTYPES[dtype]
        for slot in opt.state[0].values():
            if isinstance(slot, np.ndarray):
                assert slot.dtype == np.float32
        assert np.array_equal(bits(param), bits(expected)), f"size {size}: {name} {dtype} differs from the model"


@pytest.mark.parametrize("dtype", DTYPES)
def test_functional_and_thread_count_give_the_model(dtype):
    param, grads = draws(100003, DTYPES[dtype], seed=5)
    expected = model_steps("adamw", param.copy(), grads, HYPER["adamw"])
    saved = pyopt.info()["num_threads"]
    try:
        for threads in (1, 2, 3):
            pyopt.set_num_threads(threads)
            p = param.copy()
            m, v = np.zeros(p.shape, np.float32), np.zeros(p.shape, np.float32)
            for t, grad in enumerate(grads, start=1):
                F.adamw_(p, grad, m, v, step=t, **HYPER["adamw"])
            assert np.array_equal(bits(p), bits(expected)), f"{threads} threads"
    finally:
        pyopt.set_num_threads(saved)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_rounding_of_every_value_class_matches_numpy(isa, dtype):
    """sgd with lr=1 from zero params stores round(-g): random float32 bit patterns cover ties,
    subnormals, overflow to inf, inf and NaN (quiet NaNs: signalling ones are quieted by the step)."""
    rng = np.random.default_rng(1)
    grad = rng.integers(0, 2**32, 200003, dtype=np.uint64).astype(np.uint32).view(np.float32).copy()
    halfway = rng.integers(0, 2**16, 4096, dtype=np.uint32)  # exact ties for bfloat16 and float16 mantissas
    grad[:4096] = ((halfway << 16) | 0x8000).view(np.float32)
    grad[4096:8192] = ((rng.integers(0x33000000, 0x47800000, 4096, dtype=np.uint32) & ~np.uint32(0xFFF))
                       | 0x1000).view(np.float32)
    grad[8192:8200] = [np.inf, -np.inf, np.nan, -np.nan, 65519.996, 65520.0, 6.0e-8, 2.9e-8]
    param = np.zeros(grad.shape, DTYPES[dtype])
    with isa_path(isa):
        expected = model_steps("sgd", param.copy(), [grad], {"lr": 1.0})
        F.sgd_(param, grad, step=1, lr=1.0)
    nan = np.isnan(expected.astype(np.float32))
    assert np.array_equal(np.isnan(param.astype(np.float32)), nan)
    assert np.array_equal(bits(param)[~nan], bits(expected)[~nan])
    quiet = (grad.view(np.uint32) & 0x00400000) != 0
    assert np.array_equal(bits(param)[nan & quiet], bits(expected)[nan & quiet])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_16bit_param_loads_and_stores_back_unchanged(isa, dtype):
    """lr=0: each non-NaN 16-bit pattern goes to float32 and back to itself (subnormals, ±0, ±inf)."""
    words = np.arange(2**16, dtype=np.uint32).astype(np.uint16)
    param = words.view(DTYPES[dtype]).copy()
    finite_or_inf = ~np.isnan(param.astype(np.float32))
    with isa_path(isa):
        F.sgd_(param, np.zeros(param.shape, np.float32), step=1, lr=0.0)
    assert np.array_equal(bits(param)[finite_or_inf], words[finite_or_inf])
    assert np.isnan(param.astype(np.float32)[~finite_or_inf]).all()


def test_mixed_dtypes_in_one_optimizer_with_clip_norm():
    """float32, float16 and bfloat16 params in one step: the global norm is over the grads' float32
    values, and each param equals its model with the same clipping."""
    params = [draws(1023, dt, seed=k)[0] for k, dt in enumerate((np.dtype(np.float32), F16, BF16))]
    grads = [draws(1023, np.dtype(np.float32), seed=10 + k)[1][0] * 50 for k in range(3)]
    grads[1] = grads[1].astype(F16)
    grads[2] = grads[2].astype(BF16)
    upcast = [p.astype(np.float32) for p in params]
    reference = pyopt.AdamW(upcast, lr=0.01)
    reference.step([g.astype(np.float32) for g in grads], clip_norm=1.0)
    opt = pyopt.AdamW(params, lr=0.01)
    opt.step(grads, clip_norm=1.0)
    for p, u in zip(params, upcast):
        assert np.array_equal(bits(p), bits(u.astype(p.dtype)))


def test_state_dict_round_trip_keeps_float32_states():
    param, grads = draws(17, BF16, seed=3)
    opt = pyopt.Adam([param], lr=0.01)
    opt.step([grads[0]])
    saved = opt.state_dict()
    after_one = param.copy()
    opt.step([grads[1]])
    expected = param.copy()
    param[...] = after_one
    opt.load_state_dict(saved)
    assert all(s.dtype == np.float32 for s in opt.state[0].values() if isinstance(s, np.ndarray))
    opt.step([grads[1]])
    assert np.array_equal(bits(param), bits(expected))


# ---- unsupported combinations: TypeError before anything is modified ----

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("grad_dtype", [np.float64, np.int32, "other16"])
def test_wrong_grad_dtype_is_a_type_error_and_nothing_changes(dtype, grad_dtype):
    other = BF16 if DTYPES[dtype] == F16 else F16
    grad_dtype = other if grad_dtype == "other16" else np.dtype(grad_dtype)
    first, _ = draws(7, DTYPES[dtype], seed=0)
    second, _ = draws(7, DTYPES[dtype], seed=1)
    opt = pyopt.Adam([first, second], lr=0.1)
    before = [first.copy(), second.copy()]
    with pytest.raises(TypeError, match=rf"params\[1\].*gradient dtype.*pass {dtype} or float32"):
        opt.step([np.ones(7, np.float32), np.ones(7, grad_dtype)])
    assert np.array_equal(bits(first), bits(before[0])) and np.array_equal(bits(second), bits(before[1]))
    assert not opt.state[0] or int(opt.state[0].get("step", 0)) == 0
    opt.step([np.ones(7, np.float32), np.ones(7, np.float32)])  # and the optimizer still works
    assert not np.array_equal(bits(first), bits(before[0]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_state_neither_float32_nor_bfloat16_is_a_type_error(dtype):
    param, _ = draws(7, DTYPES[dtype], seed=0)
    before = param.copy()
    m, v = np.zeros(7, np.float16), np.zeros(7, np.float32)
    with pytest.raises(TypeError, match="state 'exp_avg'.*its states are float32 or bfloat16"):
        F.adam_(param, np.ones(7, np.float32), m, v, step=1)
    m64 = np.zeros(7, np.float64)
    with pytest.raises(TypeError, match="state 'exp_avg'.*its states are float32 or bfloat16"):
        F.adam_(param, np.ones(7, np.float32), m64, v, step=1)
    assert np.array_equal(bits(param), bits(before)) and not v.any()


def test_unsupported_param_dtypes_and_optimizers_are_type_errors():
    with pytest.raises(TypeError, match=r"params\[0\].*dtype int16 is not supported"):
        pyopt.Adam([np.zeros(3, np.int16)])
    with pytest.raises(TypeError, match=r"float16.*not supported|not supported.*float16|use float32 or float64"):
        pyopt.create("muon", [np.zeros((4, 4), F16)])
    with pytest.raises(TypeError, match="use float32 or float64"):
        pyopt.create("schedulefree_adamw", [np.zeros(3, BF16)])
    big_endian = np.zeros(3, ">f2")
    with pytest.raises(TypeError, match="not supported"):
        pyopt.Adam([big_endian])


@pytest.mark.parametrize("grad_dtype", [np.float32, BF16])
def test_non_contiguous_grad_of_a_16bit_param_is_read_as_a_copy(grad_dtype):
    param, grads = draws(17, BF16, seed=4)
    wide = np.repeat(grads[0].astype(grad_dtype), 2)[::2]  # a strided view with the same values
    assert not wide.flags.c_contiguous
    expected = model_steps("adam", param.copy(), [grads[0].astype(grad_dtype)], {"lr": 0.01})
    F.adam_(param, wide, np.zeros(17, np.float32), np.zeros(17, np.float32), step=1, lr=0.01)
    assert np.array_equal(bits(param), bits(expected))
