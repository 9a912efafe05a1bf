"""The element-wise maps behind EMA, Lookahead, the schedule-free swap and SophiaG's Hessian EMA
(driver/map.hpp) and Adafactor's kernel: not optimizers, and run on the ISA path set_isa selects.
Their results against torch are in test_ema.py, test_lookahead.py, test_schedulefree.py,
test_sophia.py and test_adafactor.py."""
from __future__ import annotations

import numpy as np
import pytest

import pyopt
from pyopt import _core
from refcheck import ISAS, isa_path, num_threads

HAS_FMA_PATH = any(isa in ISAS for isa in ("avx2", "avx512"))


@pytest.mark.parametrize("name", ["lerp", "sophia_hessian"])
def test_internal_kernels_are_not_optimizers(name: str) -> None:
    for call in (lambda: _core.validate(name, [0.5]),
                 lambda: _core.Engine(name, [[0.5]], [], np.zeros(0, np.int64), np.zeros((0, _core.MAX_SCALARS))),
                 lambda: _core.apply(name, np.zeros(3), np.zeros(3), [], 1, [0.5], np.zeros(_core.MAX_SCALARS))):
        with pytest.raises((ValueError, TypeError), match=f"unknown optimizer '{name}'"):
            call()
    assert name not in _core.optimizers()


def lerp_reference(target: np.ndarray, end: np.ndarray, weight: float) -> np.ndarray:
    """torch.lerp's two forms, rounded twice (no FMA: the baseline path)."""
    t = target.dtype.type
    if abs(np.float32(weight)) < 0.5:
        return target + t(weight) * (end - target)
    return end + (t(weight) - t(1)) * (end - target)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lerp_inplace_groups_skips_and_conversions(dtype: type) -> None:
    rng = np.random.default_rng(7)
    targets = [rng.standard_normal(s).astype(dtype) for s in [(5,), (3, 4), (40001,), (0,)]]
    ends = [rng.standard_normal(t.shape).astype(dtype) for t in targets]
    before = [t.copy() for t in targets]
    weights = [0.25, 0.75]
    groups = [0, 1, 1, 0]
    tensors = [(f"t{i}", g, t) for i, (g, t) in enumerate(zip(groups, targets))]
    with isa_path("baseline"):
        _core.lerp_inplace(weights, tensors, [ends[0], None, ends[2].tolist(), ends[3]])
    np.testing.assert_array_equal(targets[0], lerp_reference(before[0], ends[0], 0.25))
    np.testing.assert_array_equal(targets[1], before[1])  # None: skipped
    np.testing.assert_array_equal(targets[2], lerp_reference(before[2], ends[2], 0.75))  # a list is converted


def test_sophia_hessian_update_is_the_ema() -> None:
    rng = np.random.default_rng(8)
    h = np.abs(rng.standard_normal(70001)).astype(np.float32)
    estimate = np.abs(rng.standard_normal(70001))  # float64: converted to the hessian's dtype
    expected = h * np.float32(0.9) + np.float32(1 - 0.9) * estimate.astype(np.float32)
    with isa_path("baseline"):
        _core.sophia_hessian_update([0.9], [("h", 0, h)], [estimate])
    np.testing.assert_array_equal(h, expected)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_maps_do_not_depend_on_threads(threads: int) -> None:
    rng = np.random.default_rng(9)
    targets = [rng.standard_normal(n).astype(np.float32) for n in (100003, 17, 65536)]
    ends = [rng.standard_normal(t.size).astype(np.float32) for t in targets]
    serial = [t.copy() for t in targets]
    with num_threads(1):
        _core.lerp_inplace([0.3], [(str(i), 0, t) for i, t in enumerate(serial)], ends)
    with num_threads(threads):
        _core.lerp_inplace([0.3], [(str(i), 0, t) for i, t in enumerate(targets)], ends)
    for a, b in zip(targets, serial):
        np.testing.assert_array_equal(a, b)


def test_map_errors_name_the_array_and_write_nothing() -> None:
    rng = np.random.default_rng(10)
    a = rng.standard_normal(6).astype(np.float32)
    keep = a.copy()
    shared = np.zeros(12, np.float32)

    def check(exc: type, match: str, run) -> None:
        with pytest.raises(exc, match=match):
            run()
        np.testing.assert_array_equal(a, keep)

    end = np.ones(6, np.float32)
    check(ValueError, r"invalid weight: nan \(must be finite\)",
          lambda: _core.lerp_inplace([0.5, float("nan")], [("a", 0, a)], [end]))
    check(ValueError, r"invalid beta2: 1 \(must be in \[0, 1\)\)",
          lambda: _core.sophia_hessian_update([1.0], [("a", 0, a)], [end]))
    check(ValueError, "b: bad group index", lambda: _core.lerp_inplace([0.5], [("a", 0, a), ("b", 1, a.copy())],
                                                                        [end, end]))
    check(ValueError, r"expected 2 gradients \(one per param\), got 1",
          lambda: _core.lerp_inplace([0.5], [("a", 0, a), ("b", 0, np.zeros(6, np.float32))], [end]))
    check(ValueError, r"b: gradient shape \(5,\) does not match param shape \(6,\)",
          lambda: _core.lerp_inplace([0.5], [("a", 0, a), ("b", 0, np.zeros(6, np.float32))], [end, np.ones(5)]))
    check(TypeError, "b: expected a numpy.ndarray", lambda: _core.lerp_inplace([0.5], [("a", 0, a), ("b", 0, [1.0])],
                                                                                [end, end]))
    ro = np.zeros(6, np.float32)
    ro.flags.writeable = False
    check(ValueError, "b: array is read-only", lambda: _core.lerp_inplace([0.5], [("a", 0, a), ("b", 0, ro)],
                                                                          [end, end]))
    check(ValueError, "b and c share memory", lambda: _core.lerp_inplace(
        [0.5], [("a", 0, a), ("b", 0, shared[:6]), ("c", 0, shared[4:10])], [end, end, end]))
    check(ValueError, "b: gradient shares memory with its param", lambda: _core.lerp_inplace(
        [0.5], [("a", 0, a), ("b", 0, shared[:6])], [end, shared[:6]]))
    check(ValueError, "b: gradient shares memory with a", lambda: _core.lerp_inplace(
        [0.5], [("a", 0, a), ("b", 0, shared[:6])], [end, a]))
    check(ValueError, r"tensors\[1\]: expected \(label, group, array\)", lambda: _core.lerp_inplace(
        [0.5], [("a", 0, a), ("b", 0, shared[:6], [])], [end, end]))
    # sources are only read: they may share memory with each other
    b = np.zeros(6, np.float32)
    _core.lerp_inplace([1.0], [("a", 0, a), ("b", 0, b)], [end, end])
    np.testing.assert_array_equal(a, end)
    np.testing.assert_array_equal(b, end)


def adafactor_bits(isa: str) -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    params = [rng.standard_normal(s).astype(np.float32) for s in [(64, 48), (3000,)]]
    with isa_path(isa):
        opt = pyopt.Adafactor(params, lr=0.05, weight_decay=0.01)
        for _ in range(5):
            opt.step([rng.standard_normal(p.shape).astype(np.float32) for p in params])
    return params


@pytest.mark.skipif(not HAS_FMA_PATH, reason="no ISA path with FMA on this CPU")
def test_adafactor_runs_on_the_selected_isa_path() -> None:
    """Adafactor's kernel is compiled per ISA: the FMA paths fuse its lerps and its update, the
    baseline path rounds twice, so set_isa changes its bits (by ulps); the FMA paths agree."""
    baseline = adafactor_bits("baseline")
    fused = [adafactor_bits(isa) for isa in ("avx2", "avx512") if isa in ISAS]
    for p, q in zip(baseline, fused[0]):
        np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-6)
    assert any(p.tobytes() != q.tobytes() for p, q in zip(baseline, fused[0]))
    for other in fused[1:]:
        for p, q in zip(fused[0], other):
            np.testing.assert_array_equal(p, q)
