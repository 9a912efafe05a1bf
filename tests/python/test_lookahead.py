"""pyopt.lookahead.Lookahead against pytorch-optimizer 4.1.0's Lookahead (pullback_momentum='none')."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
TorchLookahead = pytest.importorskip("pytorch_optimizer").Lookahead

import pyopt  # noqa: E402
from pyopt.lookahead import Lookahead  # noqa: E402
from refcheck import ISAS, fma_isas, ieee_sqrt, isa_path  # noqa: E402

SHAPES = [(1,), (7,), (17,), (33, 31), (100003,)]
# torch's lerp and SGD/AdamW kernels fuse their multiply-adds; so do pyopt's on avx2 / avx512.
# AdamW's torch side runs with a correctly rounded sqrt (refcheck.ieee_sqrt: torch's MKL sqrt is
# 1 ulp off on some inputs, see test_reference.py), so both cases are required bit for bit there.


@pytest.fixture(params=ISAS)
def isa(request):
    """The reference comparisons run on every ISA path this machine has."""
    with isa_path(request.param) as name:
        yield name

CASES = {
    "sgd": (lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3, foreach=False),
            lambda ps: pyopt.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3)),
    "adamw": (lambda ps: torch.optim.AdamW(ps, lr=1e-2, betas=(0.9, 0.99), weight_decay=0.05, foreach=False),
              lambda ps: pyopt.AdamW(ps, lr=1e-2, betas=(0.9, 0.99), weight_decay=0.05)),
}


def grad_of(p, noise):
    """A gradient that depends on the current params, so any divergence would grow."""
    return (np.sin(p) + noise).astype(p.dtype)


def run_torch(params0, noises, make, k, alpha, skip=None):
    ts = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params0]
    opt = TorchLookahead(make(ts), k=k, alpha=alpha)
    with ieee_sqrt():
        for step, noise in enumerate(noises):
            for i, (t, n) in enumerate(zip(ts, noise)):
                t.grad = None if skip and skip(step, i) else torch.from_numpy(grad_of(t.detach().numpy(), n))
            opt.step()
    return [t.detach().numpy() for t in ts]


def run_pyopt(params, noises, opt, skip=None):
    for step, noise in enumerate(noises):
        opt.step([None if skip and skip(step, i) else grad_of(p, n) for i, (p, n) in enumerate(zip(params, noise))])
    return params


def assert_close(ours, expect):
    for o, e in zip(ours, expect):
        assert o.dtype == e.dtype
        if pyopt.info()["isa"] in fma_isas():
            np.testing.assert_array_equal(o, e)
        else:
            tol = 1e-4 if o.dtype == np.float32 else 1e-10
            np.testing.assert_allclose(o, e, rtol=tol, atol=tol)


def setup(seed, dtype, steps):
    rng = np.random.default_rng(seed)
    params0 = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    noises = [[(rng.standard_normal(s) * 0.1).astype(dtype) for s in SHAPES] for _ in range(steps)]
    k = int(rng.integers(1, 8))
    alpha = float(rng.uniform(0.05, 0.95))
    return params0, noises, k, alpha


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lookahead_vs_pytorch_optimizer(case, dtype, seed, isa):
    params0, noises, k, alpha = setup([seed, np.dtype(dtype).itemsize], dtype, 53)
    make_torch, make_ours = CASES[case]
    expect = run_torch(params0, noises, make_torch, k, alpha)
    params = [p.copy() for p in params0]
    la = Lookahead(make_ours(params), k=k, alpha=alpha)
    ours = run_pyopt(params, noises, la)
    assert_close(ours, expect)
    # the interpolation mattered: plain inner steps end elsewhere (unless k == 1 and alpha ~ 1)
    plain = [p.copy() for p in params0]
    run_pyopt(plain, noises, make_ours(plain))
    assert any(not np.allclose(a, b) for a, b in zip(plain, ours))


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.999])
def test_lookahead_alpha_edges_and_skipped_grads(alpha, isa):
    # A param without a gradient at a sync step is neither interpolated nor copied to slow, as in
    # pytorch-optimizer (it only touches params whose .grad is set).
    params0, noises, _, _ = setup([9, int(alpha * 10)], np.float32, 40)
    skip = lambda step, i: (i == 1 and step % 3 == 2) or (i == 3 and step in (5, 6, 7, 8, 9))  # noqa: E731
    make_torch, make_ours = CASES["sgd"]
    expect = run_torch(params0, noises, make_torch, 3, alpha, skip)
    params = [p.copy() for p in params0]
    ours = run_pyopt(params, noises, Lookahead(make_ours(params), k=3, alpha=alpha), skip)
    assert_close(ours, expect)


def test_lookahead_two_groups_dict_params():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((5, 4))
    b = rng.standard_normal(4)
    tw, tb = (torch.nn.Parameter(torch.from_numpy(x.copy())) for x in (w, b))
    topt = TorchLookahead(torch.optim.SGD([{"params": [tw]}, {"params": [tb], "lr": 0.3}], lr=0.1), k=4, alpha=0.3)
    la = Lookahead(pyopt.SGD([{"params": {"w": w}}, {"params": {"b": b}, "lr": 0.3}], lr=0.1), k=4, alpha=0.3)
    assert la.param_groups is la.inner.param_groups and len(la.param_groups) == 2
    for _ in range(22):
        gw, gb = np.cos(w), np.sin(b)
        tw.grad, tb.grad = torch.from_numpy(np.cos(tw.detach().numpy())), torch.from_numpy(np.sin(tb.detach().numpy()))
        topt.step()
        la.step({"w": gw, "b": gb})
    assert la.counters == [22 % 4, 22 % 4]
    assert_close([w, b], [tw.detach().numpy(), tb.detach().numpy()])


def test_alpha_one_is_the_inner_optimizer():
    # pytorch-optimizer rejects alpha == 1 ([0, 1)); we accept it: p = slow + 1·(p − slow) = p.
    params0, noises, _, _ = setup(13, np.float64, 20)
    plain = [p.copy() for p in params0]
    run_pyopt(plain, noises, pyopt.SGD(plain, lr=0.1, momentum=0.9))
    ours = [p.copy() for p in params0]
    run_pyopt(ours, noises, Lookahead(pyopt.SGD(ours, lr=0.1, momentum=0.9), k=3, alpha=1.0))
    for a, b in zip(ours, plain):
        np.testing.assert_array_equal(a, b)


def test_state_dict_restart_matches_uninterrupted(tmp_path):
    params0, noises, k, alpha = setup(11, np.float32, 60)
    k = 4
    ref = [p.copy() for p in params0]
    run_pyopt(ref, noises, Lookahead(pyopt.AdamW(ref, lr=1e-2), k=k, alpha=alpha))

    params = [p.copy() for p in params0]
    la = Lookahead(pyopt.AdamW(params, lr=1e-2), k=k, alpha=alpha)
    run_pyopt(params, noises[:23], la)  # stop mid-cycle: counters == 3
    assert la.counters == [23 % k]
    pyopt.save(la, tmp_path / "ckpt.npz")
    sd = la.state_dict()

    # a restart: new arrays, the optimizer rebuilt from the file
    restarted = [p.copy() for p in params]
    la2 = pyopt.load(tmp_path / "ckpt.npz", restarted)
    assert isinstance(la2, Lookahead) and la2.k == k and la2.alpha == alpha and la2.counters == [3]
    for s, t in zip(la2.slow_params, la.slow_params):
        np.testing.assert_array_equal(s, t)
    run_pyopt(restarted, noises[23:], la2)
    for a, b in zip(restarted, ref):
        np.testing.assert_array_equal(a, b)

    # and load_state_dict into a Lookahead built over fresh copies (whose slow weights differ)
    again = [p.copy() for p in params]
    la3 = Lookahead(pyopt.AdamW(again, lr=1e-2), k=2, alpha=0.9)
    la3.load_state_dict(sd)
    assert (la3.k, la3.alpha) == (k, alpha)
    run_pyopt(again, noises[23:], la3)
    for a, b in zip(again, ref):
        np.testing.assert_array_equal(a, b)


def test_load_state_dict_checks_everything_first():
    params0, noises, _, _ = setup(12, np.float64, 7)
    params = [p.copy() for p in params0]
    la = Lookahead(pyopt.SGD(params, lr=0.1, momentum=0.5), k=3, alpha=0.5)
    run_pyopt(params, noises, la)
    sd = la.state_dict()
    target = [p.copy() for p in params0]
    other = Lookahead(pyopt.SGD(target, lr=0.1, momentum=0.5), k=3, alpha=0.5)
    slow_before = [s.copy() for s in other.slow_params]

    def bad(**changes):
        return {**sd, "lookahead": {**sd["lookahead"], **changes}}

    bad_slow = dict(sd["lookahead"]["slow"])
    bad_slow[4] = np.zeros(3)
    cases = [
        (bad(k=0), ValueError, "k must be >= 1"),
        (bad(alpha=1.5), ValueError, "alpha"),
        (bad(counters=[5]), ValueError, "counters"),
        (bad(counters=[0, 0]), ValueError, "counters"),
        (bad(slow=bad_slow), ValueError, "slow weight 4 has shape"),
        (bad(slow={0: sd["lookahead"]["slow"][0]}), ValueError, "slow weights for params"),
        ({k: v for k, v in sd.items() if k != "lookahead"}, ValueError, "not a Lookahead state_dict"),
        ({**sd, "optimizer": "adamw"}, ValueError, "adamw"),  # the inner's own check, before ours change
    ]
    for state, exc, match in cases:
        with pytest.raises(exc, match=match):
            other.load_state_dict(state)
        assert other.counters == [0] and (other.k, other.alpha) == (3, 0.5)
        for s, b in zip(other.slow_params, slow_before):
            np.testing.assert_array_equal(s, b)
        assert other.inner.state == {}


def test_constructor_errors():
    p = np.zeros(3, np.float32)
    sgd = pyopt.SGD([p], lr=0.1)
    with pytest.raises(ValueError, match="k must be >= 1"):
        Lookahead(sgd, k=0)
    with pytest.raises(TypeError, match="k must be an int"):
        Lookahead(sgd, k=2.5)
    for alpha in (-0.1, 1.01, float("nan")):
        with pytest.raises(ValueError, match="alpha"):
            Lookahead(sgd, alpha=alpha)
    with pytest.raises(TypeError, match="pyopt.Optimizer"):
        Lookahead(torch.optim.SGD([torch.nn.Parameter(torch.zeros(3))], lr=0.1))
    with pytest.raises(TypeError, match="pyopt.Optimizer"):
        Lookahead(Lookahead(sgd))
    with pytest.raises(TypeError, match="pyopt.Optimizer"):
        Lookahead([p])


def test_slow_copy_at_construction_and_added_group():
    a = np.ones(4, np.float32)
    la = Lookahead(pyopt.SGD([a], lr=1.0), k=2, alpha=0.5)
    a[...] = 3.0  # changed after construction: the slow copy was taken before
    b = np.full(2, 10.0, np.float32)
    la.add_param_group({"params": [b], "lr": 1.0})
    b[...] = 20.0
    la.step([np.zeros(4, np.float32), np.zeros(2, np.float32)])
    np.testing.assert_array_equal(a, 3.0)  # count 1 of 2
    la.step([np.zeros(4, np.float32), np.zeros(2, np.float32)])
    np.testing.assert_array_equal(a, 2.0)  # 1 + 0.5 * (3 - 1)
    np.testing.assert_array_equal(b, 15.0)  # 10 + 0.5 * (20 - 10)
    np.testing.assert_array_equal(la.slow_params[0], 2.0)
    np.testing.assert_array_equal(la.slow_params[1], 15.0)
