"""Bad input gets a TypeError/ValueError naming the parameter, before any array changes."""
import numpy as np
import pytest

import pyopt


def make(name="adam", **hyper):
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((3, 4)).astype(np.float32), "b": rng.standard_normal(4).astype(np.float32)}
    return params, pyopt.create(name, params, **hyper)


def snapshot(opt, params):
    return [p.copy() for p in params.values()], {i: {k: (v.copy() if isinstance(v, np.ndarray) else v)
                                                    for k, v in s.items()} for i, s in opt.state.items()}


def assert_unchanged(before, opt, params):
    values, state = before
    for old, new in zip(values, params.values()):
        np.testing.assert_array_equal(old, new)
    assert set(state) == set(opt.state)
    for i, entry in state.items():
        for k, v in entry.items():
            np.testing.assert_array_equal(v, opt.state[i][k])


# (native float16 and bfloat16 params are accepted: tests/python/test_mixed_precision.py)
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.complex64, np.int16, np.dtype(">f2"), object, bool])
def test_param_dtype_rejected(dtype):
    with pytest.raises(TypeError, match=r"params\[1\].*dtype"):
        pyopt.Adam([np.zeros(3, np.float32), np.zeros(3, dtype=dtype)])


def test_param_must_be_ndarray():
    with pytest.raises(TypeError, match=r"params\[0\].*numpy.ndarray.*list"):
        pyopt.SGD([[1.0, 2.0]])


def test_param_non_contiguous_and_read_only():
    with pytest.raises(ValueError, match=r"params\['w'\].*C-contiguous"):
        pyopt.Adam({"w": np.zeros((4, 4), np.float32)[:, ::2]})
    frozen = np.zeros(3)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[0\].*read-only"):
        pyopt.Adam([frozen])


def test_empty_and_duplicate_params():
    with pytest.raises(ValueError, match="empty parameter list"):
        pyopt.Adam([])
    w = np.zeros(3)
    with pytest.raises(ValueError, match="more than one place"):
        pyopt.Adam([{"params": [w]}, {"params": [w], "lr": 0.1}])
    with pytest.raises(ValueError, match=r"params\[0\] and params\[1\] share memory"):
        pyopt.Adam([w, w[:]])  # two views of one buffer
    big = np.zeros(10)
    pyopt.Adam([big[:5], big[5:]])  # adjacent, not overlapping: fine


def test_unknown_optimizer_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamm'.*adamw.*radam"):
        pyopt.create("adamm", [np.zeros(2)])


def test_unknown_hyperparameter():
    with pytest.raises(TypeError, match="lrr"):
        pyopt.create("adam", [np.zeros(2)], lrr=0.1)
    with pytest.raises(TypeError):
        pyopt.Adam([np.zeros(2)], momentum=0.9)
    with pytest.raises(TypeError, match="decoupled_weight_decay"):
        pyopt.create("adamw", [np.zeros(2)], decoupled_weight_decay=False)  # pinned by adamw
    with pytest.raises(TypeError, match="'foo'"):
        pyopt.Adam([{"params": [np.zeros(2)], "foo": 1}])


@pytest.mark.parametrize(
    "name, hyper, pattern",
    [
        ("adam", {"lr": -1e-3}, "lr"),
        ("adam", {"lr": float("nan")}, "lr"),
        ("adam", {"betas": (1.0, 0.999)}, "beta1"),
        ("adam", {"betas": (0.9, -0.1)}, "beta2"),
        ("adam", {"eps": -1.0}, "eps"),
        ("adamw", {"weight_decay": -0.1}, "weight_decay"),
        ("sgd", {"nesterov": True}, "nesterov"),
        ("sgd", {"momentum": 0.9, "dampening": 0.1, "nesterov": True}, "nesterov"),
        ("sgd", {"momentum": -0.5}, "momentum"),
        ("adadelta", {"rho": 1.5}, "rho"),
        ("rmsprop", {"alpha": -0.5}, "alpha"),
        ("adagrad", {"lr_decay": -1.0}, "lr_decay"),
        ("nadam", {"momentum_decay": -1.0}, "momentum_decay"),
    ],
)
def test_out_of_range_hyperparameters(name, hyper, pattern):
    with pytest.raises(ValueError, match=pattern):
        pyopt.create(name, [np.zeros(2)], **hyper)


@pytest.mark.parametrize("hyper", [{"amsgrad": "yes"}, {"lr": "0.1"}, {"betas": 0.9}, {"betas": (0.9,)}, {"lr": None}])
def test_hyperparameter_types(hyper):
    with pytest.raises(TypeError):
        pyopt.Adam([np.zeros(2)], **hyper)


def test_bad_group_edit_caught_at_step_before_any_change():
    params, opt = make("adam")
    opt.step({"w": np.ones((3, 4)), "b": np.ones(4)})
    before = snapshot(opt, params)
    opt.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match="lr"):
        opt.step({"w": np.ones((3, 4)), "b": np.ones(4)})
    assert_unchanged(before, opt, params)


@pytest.mark.parametrize(
    "grads, exc, pattern",
    [
        ({"w": np.ones((3, 4)), "b": np.ones(5)}, ValueError, r"params\['b'\].*shape \(5,\).*\(4,\)"),
        ({"w": np.ones((4, 3)), "b": np.ones(4)}, ValueError, r"params\['w'\].*shape"),
        ({"w": np.ones((3, 4))}, ValueError, r"missing \['b'\]"),
        ({"w": np.ones((3, 4)), "b": np.ones(4), "c": np.ones(1)}, ValueError, r"unexpected \['c'\]"),
        ([np.ones((3, 4))], ValueError, "expected 2 gradients"),
        ({"w": np.ones((3, 4)), "b": np.ones(4, np.complex64)}, TypeError, r"params\['b'\].*complex64"),
        ({"w": np.ones((3, 4)), "b": np.array([object()] * 4)}, TypeError, r"params\['b'\].*object"),
        ({"w": np.ones((3, 4)), "b": "abcd"}, (TypeError, ValueError), r"params\['b'\]"),
        ("not grads", TypeError, "grads must be"),
    ],
)
def test_bad_grads_touch_nothing(grads, exc, pattern):
    params, opt = make("adamw")
    opt.step({"w": np.ones((3, 4)), "b": np.ones(4)})
    before = snapshot(opt, params)
    with pytest.raises(exc, match=pattern):
        opt.step(grads)
    assert_unchanged(before, opt, params)
    assert all(s["step"] == 1 for s in opt.state.values())


def test_grad_aliasing_its_param():
    w = np.ones(8)
    opt = pyopt.SGD([w], lr=0.1)
    with pytest.raises(ValueError, match="shares memory"):
        opt.step([w])
    with pytest.raises(ValueError, match="shares memory"):
        opt.step([w[:]])  # another view of the same memory
    np.testing.assert_array_equal(w, np.ones(8))


def test_dict_grads_for_unnamed_params():
    opt = pyopt.SGD([np.zeros(2)])
    with pytest.raises(TypeError, match="not named"):
        opt.step({"x": np.zeros(2)})


def test_load_state_dict_mismatch_leaves_optimizer_alone():
    params, opt = make("adam")
    opt.step({"w": np.ones((3, 4)), "b": np.ones(4)})
    before = snapshot(opt, params)
    sd = opt.state_dict()
    bad_shape = opt.state_dict()
    bad_shape["state"][1]["exp_avg"] = np.zeros(5, np.float32)
    with pytest.raises(ValueError, match="exp_avg.*shape"):
        opt.load_state_dict(bad_shape)
    bad_name = {**sd, "optimizer": "sgd"}
    with pytest.raises(ValueError, match="'sgd'"):
        opt.load_state_dict(bad_name)
    bad_hyper = opt.state_dict()
    bad_hyper["param_groups"][0]["lr"] = -3.0
    with pytest.raises(ValueError, match="lr"):
        opt.load_state_dict(bad_hyper)
    bad_slot = opt.state_dict()
    bad_slot["state"][0]["momentum_buffer"] = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="momentum_buffer"):
        opt.load_state_dict(bad_slot)
    assert opt.param_groups[0]["lr"] == 1e-3
    assert_unchanged(before, opt, params)


def test_runtime_settings_rejected():
    with pytest.raises(ValueError, match="num_threads"):
        pyopt.set_num_threads(0)
    with pytest.raises(TypeError):
        pyopt.set_num_threads(1.5)
    with pytest.raises(ValueError, match="unknown ISA 'sse9'.*baseline"):
        pyopt.set_isa("sse9")


def test_functional_errors():
    w = np.zeros(4, np.float32)
    m = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match=r"2 state arrays \(exp_avg, exp_avg_sq\), got 1"):
        pyopt.functional.adam_(w, np.ones(4), m, step=1)
    with pytest.raises(ValueError, match="step must be >= 1"):
        pyopt.functional.adam_(w, np.ones(4), m, m.copy(), step=0)
    with pytest.raises(TypeError, match="state 'exp_avg'.*float64"):
        pyopt.functional.adam_(w, np.ones(4), np.zeros(4), np.zeros(4, np.float32), step=1)
    with pytest.raises(TypeError, match="bogus"):
        pyopt.functional.adam_(w, np.ones(4), m, m.copy(), step=1, bogus=1)
    np.testing.assert_array_equal(w, 0)


def test_non_finite_grads_propagate_like_torch():
    """NaN/Inf in a gradient is not masked: it reaches the param and the state, as in torch.optim."""
    w = np.zeros(3, np.float32)
    opt = pyopt.Adam([w], lr=0.1)
    opt.step([np.array([np.nan, np.inf, 1.0], np.float32)])
    assert np.isnan(w[0]) and np.isnan(w[1]) and np.isfinite(w[2])
    assert np.isnan(opt.state[0]["exp_avg"][0]) and np.isinf(opt.state[0]["exp_avg_sq"][1])
