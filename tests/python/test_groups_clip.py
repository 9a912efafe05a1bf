"""clip_grad_norm_ / clip_grad_value_ against torch.nn.utils, and the param_groups one-liner."""
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pyopt  # noqa: E402

SHAPES = [(1,), (7,), (17, 3), (31, 33), (100003,)]


def make_grads(rng, dtypes, scale):
    return [(rng.standard_normal(s) * scale).astype(dt) for s, dt in zip(SHAPES, dtypes)]


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0, 0.5])
@pytest.mark.parametrize("dtypes", ["float32", "float64", "mixed"])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 10.0])
@pytest.mark.parametrize("form", ["list", "dict"])
def test_clip_grad_norm_vs_torch(norm_type, dtypes, scale, form):
    rng = np.random.default_rng([int(min(norm_type, 99) * 10), int(scale * 1000)])
    dts = {"float32": [np.float32] * 5, "float64": [np.float64] * 5,
           "mixed": [np.float32, np.float64, np.float32, np.float64, np.float32]}[dtypes]
    grads = make_grads(rng, dts, scale)
    max_norm = 5.0
    ts = [torch.zeros(g.shape, dtype=torch.from_numpy(g).dtype, requires_grad=True) for g in grads]
    for t, g in zip(ts, grads):
        t.grad = torch.from_numpy(g.copy())
    expect_total = float(torch.nn.utils.clip_grad_norm_(ts, max_norm, norm_type=norm_type))
    ours = {f"g{i}": g for i, g in enumerate(grads)} if form == "dict" else grads
    total = pyopt.clip_grad_norm_(ours, max_norm, norm_type=norm_type)
    assert isinstance(total, float)
    f32 = dtypes != "float64"
    # torch accumulates float32 p-norms (p not 2, inf) in float32: off by up to ~1e-5 on
    # 100k elements; ours accumulates in float64, so it is the more accurate of the two there.
    rtol = (2e-6 if norm_type in (2.0, math.inf) else 3e-5) if f32 else 1e-12
    assert total == pytest.approx(expect_total, rel=rtol)
    for g, t in zip(grads, ts):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=2 * rtol, atol=0)  # mixed: float32 norms set c


def test_clip_grad_norm_no_clip_leaves_grads_bitwise():
    g = [np.array([0.3, 0.4], np.float32)]
    before = g[0].copy()
    assert pyopt.clip_grad_norm_(g, 1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(g[0], before)
    assert pyopt.clip_grad_norm_([], 1.0) == 0.0
    assert pyopt.clip_grad_norm_([None, g[0]], 0.1) == pytest.approx(0.5)
    assert np.linalg.norm(g[0]) == pytest.approx(0.1, rel=1e-5)


def test_clip_grad_norm_nonfinite():
    g = [np.array([1.0, np.nan]), np.array([2.0])]
    with pytest.raises(RuntimeError, match="non-finite"):
        pyopt.clip_grad_norm_(g, 1.0, error_if_nonfinite=True)
    assert g[1][0] == 2.0  # untouched
    total = pyopt.clip_grad_norm_(g, 1.0)
    assert math.isnan(total) and np.isnan(g[1]).all()  # torch does the same
    ts = [torch.tensor([1.0, math.inf])]
    ts[0].grad = ts[0].clone()
    tt = float(torch.nn.utils.clip_grad_norm_(ts, 1.0))
    gi = [np.array([1.0, math.inf])]
    assert pyopt.clip_grad_norm_(gi, 1.0) == tt == math.inf
    np.testing.assert_array_equal(gi[0], ts[0].grad.numpy())


@pytest.mark.parametrize("call,exc,words", [
    (lambda: pyopt.clip_grad_norm_([np.ones(2)], "1"), TypeError, "max_norm"),
    (lambda: pyopt.clip_grad_norm_([np.ones(2)], 1.0, norm_type=0), ValueError, "norm_type"),
    (lambda: pyopt.clip_grad_norm_([np.ones(2)], 1.0, norm_type="fro"), TypeError, "norm_type"),
    (lambda: pyopt.clip_grad_norm_([[1.0, 2.0]], 1.0), TypeError, r"grads\[0\]"),
    (lambda: pyopt.clip_grad_norm_({"w": np.ones(2, np.int32)}, 1.0), TypeError, r"grads\['w'\]"),
    (lambda: pyopt.clip_grad_norm_(5, 1.0), TypeError, "grads"),
    (lambda: pyopt.clip_grad_value_([np.ones(2)], -1.0), ValueError, "clip_value"),
    (lambda: pyopt.clip_grad_value_([np.ones(2)], None), TypeError, "clip_value"),
])
def test_clip_validation(call, exc, words):
    with pytest.raises(exc, match=words):
        call()


def test_clip_read_only():
    g = np.ones(3)
    g.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        pyopt.clip_grad_norm_([g], 0.1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_grad_value_vs_torch(dtype):
    rng = np.random.default_rng(5)
    grads = [(rng.standard_normal(s) * 3).astype(dtype) for s in SHAPES]
    grads[1][2] = np.nan
    ts = [torch.zeros(g.shape, dtype=torch.from_numpy(g).dtype, requires_grad=True) for g in grads]
    for t, g in zip(ts, grads):
        t.grad = torch.from_numpy(g.copy())
    torch.nn.utils.clip_grad_value_(ts, 1.3)
    assert pyopt.clip_grad_value_({str(i): g for i, g in enumerate(grads)}, 1.3) is None
    for g, t in zip(grads, ts):
        np.testing.assert_array_equal(g, t.grad.numpy())


def test_param_groups_dict():
    params = {"fc1.weight": np.zeros((4, 3), np.float32), "fc1.bias": np.zeros(4, np.float32),
              "ln.weight": np.zeros(4, np.float32), "head.weight": np.zeros((2, 4), np.float32),
              "conv.bias": np.zeros((1, 1), np.float32)}
    groups = pyopt.param_groups(params, weight_decay=1e-2)
    assert [sorted(g["params"]) for g in groups] == [["fc1.weight", "head.weight"],
                                                     ["conv.bias", "fc1.bias", "ln.weight"]]
    assert [g["weight_decay"] for g in groups] == [1e-2, 0.0]
    opt = pyopt.AdamW(groups, lr=1e-3)
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-2, 0.0]
    opt.step({k: np.ones_like(v) for k, v in params.items()})  # names survive: dict grads work
    custom = pyopt.param_groups(params, weight_decay=0.1, no_decay=lambda name, p: p.ndim <= 1, lr=5e-4)
    assert sorted(custom[0]["params"]) == ["conv.bias", "fc1.weight", "head.weight"]
    assert all(g["lr"] == 5e-4 for g in custom)


def test_param_groups_list_and_single_group():
    W, b, W2 = np.zeros((3, 3)), np.zeros(3), np.zeros((2, 3))
    groups = pyopt.param_groups([W, b, W2], weight_decay=0.05)
    assert groups[0]["params"][0] is W and groups[0]["params"][1] is W2 and groups[1]["params"][0] is b
    pyopt.AdamW(groups).step([np.ones((3, 3)), np.ones((2, 3)), np.ones(3)])  # grads in group order
    only = pyopt.param_groups([W, W2])
    assert len(only) == 1 and only[0]["weight_decay"] == 1e-2
    seen = []
    pyopt.param_groups([W], no_decay=lambda name, p: seen.append(name) or False)
    assert seen == [None]


def test_param_groups_matches_torch_adamw():
    rng = np.random.default_rng(2)
    W, b = rng.standard_normal((5, 4)), rng.standard_normal(5)
    tW, tb = torch.tensor(W, requires_grad=True), torch.tensor(b, requires_grad=True)
    opt = pyopt.AdamW(pyopt.param_groups({"W": W, "b": b}, weight_decay=0.3), lr=1e-2)
    topt = torch.optim.AdamW([{"params": [tW], "weight_decay": 0.3}, {"params": [tb], "weight_decay": 0.0}], lr=1e-2)
    for _ in range(20):
        gW, gb = rng.standard_normal((5, 4)), rng.standard_normal(5)
        opt.step({"W": gW, "b": gb})
        tW.grad, tb.grad = torch.tensor(gW), torch.tensor(gb)
        topt.step()
    np.testing.assert_allclose(W, tW.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(b, tb.detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("call,exc,words", [
    (lambda: pyopt.param_groups({}), ValueError, "empty"),
    (lambda: pyopt.param_groups({1: np.zeros(2)}), TypeError, "names"),
    (lambda: pyopt.param_groups([np.zeros(2), [1.0]]), TypeError, r"params\[1\]"),
    (lambda: pyopt.param_groups("W"), TypeError, "params"),
    (lambda: pyopt.param_groups([np.zeros(2)], weight_decay="0.1"), TypeError, "weight_decay"),
    (lambda: pyopt.param_groups([np.zeros(2)], no_decay=True), TypeError, "no_decay"),
])
def test_param_groups_validation(call, exc, words):
    with pytest.raises(exc, match=words):
        call()
