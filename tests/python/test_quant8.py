"""Blockwise dynamic 8-bit quantization (csrc/include/pyopt/driver/quant8.hpp) against
bitsandbytes 0.50 on CPU: the same maps, codes, absmax and dequantized values, on every ISA path."""

import numpy as np
import pytest

from pyopt import _core
from refcheck import ISAS, isa_path, num_threads

torch = pytest.importorskip("torch")
bnb_functional = pytest.importorskip("bitsandbytes.functional")

BLOCK = 256
SIZES = [1, 7, 255, 256, 257, 4095, 100003]
f32 = np.float32


def bnb_map(signed):
    return bnb_functional.create_dynamic_map(signed=signed)


def bnb_quantize(x, signed):
    codes, state = bnb_functional.quantize_blockwise(torch.from_numpy(x.copy()), code=bnb_map(signed), blocksize=BLOCK)
    return codes.numpy(), state.absmax.numpy()


def bnb_dequantize(codes, absmax, signed):
    out = bnb_functional.dequantize_blockwise(
        torch.from_numpy(codes.copy()), absmax=torch.from_numpy(absmax.copy()), code=bnb_map(signed), blocksize=BLOCK
    )
    return out.numpy()


def assert_same_bits(actual, expected):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    np.testing.assert_array_equal(actual.view(np.uint8), expected.view(np.uint8))


def assert_matches_bnb(x, signed):
    codes, absmax = _core.quantize_blockwise(x, signed)
    ref_codes, ref_absmax = bnb_quantize(x, signed)
    assert codes.dtype == np.uint8 and absmax.dtype == np.float32
    assert_same_bits(codes, ref_codes)
    assert_same_bits(absmax, ref_absmax)
    assert_same_bits(_core.dequantize_blockwise(codes, absmax, signed), bnb_dequantize(ref_codes, ref_absmax, signed))


def wide_magnitudes(rng, n, signed):
    """Normal draws times 10^k, k uniform in [-8, 8): every decade of the map and every bin."""
    x = rng.standard_normal(n).astype(f32) * f32(10.0) ** rng.integers(-8, 8, n).astype(f32)
    return x if signed else np.abs(x)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("signed", [True, False])
def test_dynamic_map_equals_bnb(isa, signed):
    with isa_path(isa):
        values = _core.dynamic_map(signed)
    assert_same_bits(values, bnb_map(signed).numpy())
    assert values[-1] == 1.0 and np.all(np.diff(values) >= 0)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("n", SIZES)
def test_random_blocks_match_bnb(isa, signed, n):
    rng = np.random.default_rng(n * 2 + signed)
    with isa_path(isa):
        assert_matches_bnb(wide_magnitudes(rng, n, signed), signed)
        assert_matches_bnb(rng.standard_normal(n).astype(f32), signed)  # one scale: values on every bin


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("signed", [True, False])
def test_every_representable_ratio_matches_bnb(isa, signed):
    """All float32 x in [-1, 1] spaced to hit every bin and every midpoint neighbourhood, absmax 1."""
    grid = np.linspace(-1, 1, 65536 * 4 + 1, dtype=np.float64).astype(f32)
    near_midpoints = np.concatenate(
        [np.nextafter(m, np.array([-2, 2], f32)) for m in (0.5 * (bnb_map(signed)[:-1] + bnb_map(signed)[1:])).numpy()]
    ).astype(f32)
    x = np.concatenate([grid, near_midpoints])
    x = np.concatenate([x, np.ones((-len(x)) % BLOCK, f32)])  # whole blocks, each with absmax 1
    x[::BLOCK] = 1.0
    with isa_path(isa):
        assert_matches_bnb(x, signed)


SPECIAL_BLOCKS = {
    "zeros": [0.0] * 300,
    "negative_zeros": [-0.0] * 10,
    "denormal_absmax": [1e-45, 0.0, -1e-45, 5e-45],  # 1/absmax overflows to inf: zeros become NaN
    "tiny": [1e-40, 2e-40, -1e-45, 3e-39],
    "huge": [3e38, -3.4028235e38, 1.0, 0.0, -1e-30],  # 1/absmax is denormal
    "nan_first": [np.nan, 1.0, 2.0, -3.0],
    "nan_middle": [1.0, np.nan, 2.0, -3.0],
    "nan_last": [1.0, 2.0, -3.0, np.nan],
    "all_nan": [np.nan] * 300,
    "inf": [1.0, np.inf, 2.0, -3.0],
    "minus_inf": [1.0, -np.inf, 2.0, -3.0],
    "nan_and_inf": [np.nan, np.inf, -np.inf, 1.0],
}


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("case", sorted(SPECIAL_BLOCKS))
def test_special_values_match_bnb(isa, signed, case):
    block = np.array(SPECIAL_BLOCKS[case], f32)
    with np.errstate(all="ignore"):
        x = np.concatenate([block, np.linspace(-2, 2, 300, dtype=f32), block[::-1]])
    with isa_path(isa):
        assert_matches_bnb(x, signed)


def test_nan_and_inf_rules():
    """What bnb does (documented in driver/quant8.hpp): NaN never raises a block's absmax and takes
    code 0; an infinite absmax zeroes the scale, so the inf itself (inf·0 = NaN) takes code 0 and the
    finite values take the code of 0."""
    codes, absmax = _core.quantize_blockwise(np.array([np.nan, 1.0, 2.0, -4.0], f32), True)
    assert absmax[0] == 4.0 and codes[0] == 0 and codes[3] == 0
    codes, absmax = _core.quantize_blockwise(np.array([np.nan] * 3, f32), True)
    assert absmax[0] == 0.0 and not codes.any()
    codes, absmax = _core.quantize_blockwise(np.array([1.0, np.inf, 0.0], f32), True)
    zero_code = _core.quantize_blockwise(np.array([0.0, 1.0], f32), True)[0][0]
    assert np.isinf(absmax[0]) and codes[1] == 0 and codes[0] == codes[2] == zero_code


def test_thread_count_does_not_change_results():
    x = wide_magnitudes(np.random.default_rng(5), 100003, True)
    with num_threads(1):
        one = _core.quantize_blockwise(x, True)
    with num_threads(2):
        two = _core.quantize_blockwise(x, True)
    assert_same_bits(one[0], two[0])
    assert_same_bits(one[1], two[1])


def test_shapes_and_empty_input():
    x = np.random.default_rng(6).standard_normal((31, 33)).astype(f32)
    codes, absmax = _core.quantize_blockwise(x, True)
    assert codes.shape == (31, 33) and absmax.shape == ((31 * 33 + BLOCK - 1) // BLOCK,)
    assert _core.dequantize_blockwise(codes, absmax, True).shape == (31, 33)
    codes, absmax = _core.quantize_blockwise(np.zeros(0, f32), False)
    assert codes.shape == (0,) and absmax.shape == (0,)


def test_bad_input_is_rejected():
    with pytest.raises(TypeError, match="x: expected a float32"):
        _core.quantize_blockwise(np.ones(4), True)
    with pytest.raises(TypeError, match="x: expected a float32"):
        _core.quantize_blockwise([1.0, 2.0], True)
    with pytest.raises(TypeError, match="codes: expected a uint8"):
        _core.dequantize_blockwise(np.ones(4, np.int8), np.ones(1, f32), True)
    with pytest.raises(ValueError, match="absmax: expected 2 values"):
        _core.dequantize_blockwise(np.ones(257, np.uint8), np.ones(1, f32), True)
