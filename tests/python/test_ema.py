"""pyopt.ema.EMA and _core.ema_update against torch's EMA (AveragedModel + get_ema_multi_avg_fn, torch.lerp)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn  # noqa: E402

import pyopt  # noqa: E402
from pyopt import _core  # noqa: E402
from pyopt.ema import EMA  # noqa: E402
from refcheck import ISAS, fma_isas, isa_path  # noqa: E402

SIZES = [(1,), (7,), (17,), (1023,), (100003,), (13, 29)]
# torch.lerp is one fused multiply-add; so is ours on the avx2 / avx512 paths. The baseline path
# (no FMA) rounds twice: within an ulp or so per update.


@pytest.fixture(params=ISAS)
def isa(request):
    """The reference comparisons run on every ISA path this machine has."""
    with isa_path(request.param) as name:
        yield name


def make_params(rng, dtypes):
    return [rng.standard_normal(s).astype(dt) for s, dt in zip(SIZES, dtypes)]


def assert_matches(ours, expect, dtype):
    ours, expect = np.asarray(ours), np.asarray(expect)
    assert ours.dtype == expect.dtype
    if pyopt.info()["isa"] in fma_isas():
        np.testing.assert_array_equal(ours, expect)
    else:
        tol = 1e-5 if dtype == np.float32 else 1e-13
        np.testing.assert_allclose(ours, expect, rtol=tol, atol=tol)


def perturb(rng, params, scale=0.05):
    for p in params:
        p += (rng.standard_normal(p.shape) * scale).astype(p.dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("decay", [0.999, 0.9, 0.5, 0.3])
@pytest.mark.parametrize("threads", [1, 2])
def test_ema_vs_torch_averaged_model(dtype, decay, threads, isa):
    rng = np.random.default_rng([int(decay * 1000), threads, np.dtype(dtype).itemsize])
    params = make_params(rng, [dtype] * len(SIZES))
    model = torch.nn.Module()
    model.ps = torch.nn.ParameterList([torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params])
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))
    averaged.update_parameters(model)  # the first call copies the params: our EMA starts from copies
    ema = EMA(params, decay=decay)
    old = _core.num_threads()
    _core.set_num_threads(threads)
    try:
        for _ in range(120):
            perturb(rng, params)
            with torch.no_grad():
                for t, p in zip(model.ps, params):
                    t.copy_(torch.from_numpy(p))
            averaged.update_parameters(model)
            ema.update()
    finally:
        _core.set_num_threads(old)
    assert ema.num_updates == 120
    for ours, t in zip(ema.averages, averaged.module.ps):
        assert_matches(ours, t.detach().numpy(), dtype)
    # the averages moved: a test that cannot pass by leaving them alone
    assert any(not np.array_equal(a, p) for a, p in zip(ema.averages, params))


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_vs_torch_lerp_mixed_dtypes_dict(warmup, isa):
    rng = np.random.default_rng(7 + warmup)
    dtypes = [np.float32, np.float64] * 3
    params = dict(zip("abcdef", make_params(rng, dtypes)))
    torch_avgs = {k: torch.from_numpy(v.copy()) for k, v in params.items()}
    ema = EMA(params, decay=0.99, warmup=warmup)
    assert isinstance(ema.averages, dict) and list(ema.averages) == list("abcdef")
    for t in range(150):
        perturb(rng, params.values())
        d = min(0.99, (1 + t) / (10 + t)) if warmup else 0.99
        assert ema.current_decay() == d
        for k, v in params.items():
            torch_avgs[k].lerp_(torch.from_numpy(v), 1 - d)
        ema.update()
    for k, dt in zip("abcdef", dtypes):
        assert_matches(ema.averages[k], torch_avgs[k].numpy(), dt)


def test_warmup_first_decays():
    p = np.zeros(3, np.float32)
    ema = EMA([p], decay=0.999, warmup=True)
    seen = []
    for _ in range(3):
        seen.append(ema.current_decay())
        ema.update()
    assert seen == [1 / 10, 2 / 11, 3 / 12]
    ema = EMA([p], decay=0.5, warmup=True)
    ema.num_updates = 1000
    assert ema.current_decay() == 0.5


def test_core_ema_update_errors_write_nothing():
    rng = np.random.default_rng(0)
    a0, p0 = rng.standard_normal(5).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    keep = a0.copy()

    def check(exc, match, avgs, params, decay=0.9):
        with pytest.raises(exc, match=match):
            _core.ema_update(avgs, params, decay)
        np.testing.assert_array_equal(a0, keep)  # the valid first pair was not touched

    check(ValueError, "2 averages but 1 params", [a0, a0.copy()], [p0])
    check(TypeError, r"averages\[1\].*float64.*float32", [a0, np.zeros(5)], [p0, np.zeros(5, np.float32)])
    check(ValueError, r"averages\[1\].*shape", [a0, np.zeros(4, np.float32)], [p0, np.zeros(5, np.float32)])
    check(TypeError, r"averages\[1\].*int64", [a0, np.zeros(5, np.int64)], [p0, np.zeros(5, np.int64)])
    check(TypeError, r"params\[1\].*int32", [a0, np.zeros(5, np.float32)], [p0, np.zeros(5, np.int32)])
    check(TypeError, r"averages\[1\]: expected a numpy.ndarray", [a0, [0.0] * 5], [p0, np.zeros(5, np.float32)])
    check(TypeError, r"params\[1\]: expected a numpy.ndarray", [a0, np.zeros(5, np.float32)], [p0, [0.0] * 5])
    ro = np.zeros(5, np.float32)
    ro.flags.writeable = False
    check(ValueError, r"averages\[1\].*read-only", [a0, ro], [p0, np.zeros(5, np.float32)])
    strided = np.zeros(10, np.float32)[::2]
    check(ValueError, r"averages\[1\].*C-contiguous", [a0, strided], [p0, np.zeros(5, np.float32)])
    check(ValueError, r"params\[1\].*C-contiguous", [a0, np.zeros(5, np.float32)], [p0, strided])
    shared = np.zeros(10, np.float32)
    check(ValueError, r"averages\[1\]: shares memory with its param", [a0, shared[:5]], [p0, shared[3:8]])
    check(ValueError, r"averages\[0\] and averages\[1\] share memory", [a0, a0], [p0, p0.copy()])
    check(ValueError, r"averages\[0\]: shares memory", [a0], [a0])
    check(ValueError, r"averages\[1\] and params\[0\] share memory", [a0, shared[:5]], [shared[4:9], p0])
    for bad in (-0.1, 1.5, float("nan")):
        check(ValueError, "decay must be in", [a0], [p0], bad)
    # params may overlap each other (they are only read), and a read-only param is fine
    p_ro = p0.copy()
    p_ro.flags.writeable = False
    b = np.zeros(5, np.float32)
    _core.ema_update([a0, b], [p_ro, p_ro], 0.0)
    np.testing.assert_array_equal(a0, p0)
    np.testing.assert_array_equal(b, p0)


def test_decay_edges_and_empty():
    p = np.arange(6, dtype=np.float64)
    a = np.zeros(6)
    _core.ema_update([a], [p], 1.0)
    np.testing.assert_array_equal(a, 0)
    _core.ema_update([a], [p], 0.0)
    np.testing.assert_array_equal(a, p)
    _core.ema_update([], [], 0.5)
    _core.ema_update([np.zeros(0, np.float32)], [np.zeros(0, np.float32)], 0.5)


def test_copy_to_swap_and_context_manager():
    rng = np.random.default_rng(3)
    params = make_params(rng, [np.float32, np.float64] * 3)
    ema = EMA(params, decay=0.5)
    perturb(rng, params, 1.0)
    ema.update()
    avgs = [a.copy() for a in ema.averages]
    current = [p.copy() for p in params]
    with ema.average_parameters():
        for p, a in zip(params, avgs):
            np.testing.assert_array_equal(p, a)
    for p, c in zip(params, current):
        np.testing.assert_array_equal(p, c)
    with pytest.raises(RuntimeError, match="boom"):
        with ema.average_parameters():
            params[0][...] = 123.0
            raise RuntimeError("boom")
    for p, c in zip(params, current):
        np.testing.assert_array_equal(p, c)
    for a, c in zip(ema.averages, avgs):
        np.testing.assert_array_equal(a, c)

    ema.swap()
    for p, a, c, e in zip(params, ema.averages, current, avgs):
        np.testing.assert_array_equal(p, e)
        np.testing.assert_array_equal(a, c)
    ema.swap()
    for p, c in zip(params, current):
        np.testing.assert_array_equal(p, c)

    others = [np.zeros_like(p) for p in params]
    ema.copy_to(others)
    for o, e in zip(others, avgs):
        np.testing.assert_array_equal(o, e)
    ema.copy_to()
    for p, e in zip(params, avgs):
        np.testing.assert_array_equal(p, e)
    bad = [np.zeros_like(p) for p in params]
    bad[-1] = np.zeros((2,), np.float64)
    with pytest.raises(ValueError, match=r"params\[5\]"):
        ema.copy_to(bad)
    assert all(not b.any() for b in bad[:-1])  # checked whole before writing


def test_state_dict_roundtrip_and_checks():
    rng = np.random.default_rng(4)
    params = {"w": rng.standard_normal((3, 4)).astype(np.float32), "b": rng.standard_normal(4)}
    ema = EMA(params, decay=0.9, warmup=True)
    for _ in range(5):
        perturb(rng, params.values())
        ema.update()
    sd = ema.state_dict()
    assert sd["num_updates"] == 5 and sd["warmup"] is True and sd["decay"] == 0.9
    sd["averages"]["w"][0, 0] += 1  # a copy, not the live array
    assert ema.averages["w"][0, 0] != sd["averages"]["w"][0, 0]
    sd["averages"]["w"][0, 0] -= 1

    fresh = EMA({k: v.copy() for k, v in params.items()}, decay=0.5)
    fresh.load_state_dict(sd)
    assert fresh.num_updates == 5 and fresh.decay == 0.9 and fresh.warmup
    for k in params:
        np.testing.assert_array_equal(fresh.averages[k], ema.averages[k])
        assert fresh.averages[k].dtype == params[k].dtype
    perturb(rng, params.values())
    ema.update()
    fresh._params = [params[k] for k in ("w", "b")]
    fresh.update()
    for k in params:
        np.testing.assert_array_equal(fresh.averages[k], ema.averages[k])

    before = {k: v.copy() for k, v in fresh.averages.items()}
    bad = dict(sd, averages={"w": sd["averages"]["w"], "b": np.zeros(5)})
    with pytest.raises(ValueError, match="shape"):
        fresh.load_state_dict(bad)
    with pytest.raises(ValueError, match="named"):
        fresh.load_state_dict(dict(sd, averages={"w": sd["averages"]["w"]}))
    with pytest.raises(ValueError, match="num_updates"):
        fresh.load_state_dict(dict(sd, num_updates=-1))
    with pytest.raises(ValueError, match="decay"):
        fresh.load_state_dict(dict(sd, decay=2.0))
    with pytest.raises(ValueError, match="not an EMA state_dict"):
        fresh.load_state_dict({"averages": []})
    for k in before:
        np.testing.assert_array_equal(fresh.averages[k], before[k])
    assert fresh.num_updates == 6


def test_constructor_errors():
    with pytest.raises(ValueError, match="decay"):
        EMA([np.zeros(3, np.float32)], decay=1.5)
    with pytest.raises(TypeError, match="decay"):
        EMA([np.zeros(3, np.float32)], decay="0.9")
    with pytest.raises(TypeError, match=r"params\[0\].*int64"):
        EMA([np.zeros(3, np.int64)])
    with pytest.raises(ValueError, match="empty"):
        EMA([])
    x = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="share memory"):
        EMA([x, x])
    with pytest.raises(TypeError, match="warmup"):
        EMA([x], warmup=1)
