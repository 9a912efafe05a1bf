"""pyopt.LBFGS against torch.optim.LBFGS 2.13, side by side on small full-batch problems.

Both optimizers step the same start with the same loss, whose value and gradient torch's autograd
computes for both (pyopt's closure runs it on tensors viewing the numpy params), so the only
differences are the optimizers'. Compared after every step: the params, the returned loss and the
state's counters ``func_evals`` and ``n_iter`` (exactly: the same iterations, line-search
evaluations and stopping decisions); at the end the whole state. float64 to TOLERANCE_F64 of each
array's largest magnitude (torch's dot products are MKL's, summed in another order than numpy's,
and its ``add_`` fuses the multiply-add: the rest is the same arithmetic, in the same dtype); float32
on runs that stop on max_iter before the loss reaches float32's noise, where a stopping test or a
line-search comparison would otherwise be decided by the last bits.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pyopt  # noqa: E402
from pyopt.lbfgs import LBFGS  # noqa: E402

# Largest deviation (params, losses, state) over all steps of the float64 runs here, relative to
# each array's largest magnitude. Measured: 2e-15 on the logistic regression; 5.2e-12 on the
# Rosenbrock function, whose valley (Hessian condition ~2500 at the minimum) amplifies the
# rounding differences of the gradients and dot products step after step.
TOLERANCE_F64 = {"logistic": 1e-13, "rosenbrock": 1e-11}
# (The state of test_float64_state_matches_torch: 2.5e-14 and 4.4e-12.) float32, on the runs of
# test_float32_is_close: measured 6.9e-6 (params), 4.4e-7 (losses).
TOLERANCE_F32 = 1e-4


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):  # (conftest.py)
    pass


from torch_defaults import default_dtype  # noqa: E402


# ----- problems: (start values, loss of the params as tensors) ------------------------------------
def logistic(dtype: torch.dtype) -> tuple[list[torch.Tensor], Callable[..., torch.Tensor]]:
    """L2-regularized logistic regression on a fixed dataset; params of 7, 17, 3x5 and 1 elements."""
    gen = torch.Generator().manual_seed(0)
    n = 60
    x7, x17, x35 = (torch.randn(n, *s, generator=gen, dtype=dtype) for s in ((7,), (17,), (3, 5)))
    labels = (torch.rand(n, generator=gen, dtype=dtype) < 0.5).to(dtype)
    start = [0.3 * torch.randn(s, generator=gen, dtype=dtype) for s in ((7,), (17,), (3, 5), (1,))]

    def loss(w7: torch.Tensor, w17: torch.Tensor, w35: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        logits = x7 @ w7 + x17 @ w17 + (x35 * w35).sum((1, 2)) + bias
        penalty = w7.square().sum() + w17.square().sum() + w35.square().sum()
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels) + 0.02 * penalty

    return start, loss


def rosenbrock(dtype: torch.dtype) -> tuple[list[torch.Tensor], Callable[..., torch.Tensor]]:
    """The 5-D Rosenbrock function, its point split into params of 3 and 2 elements."""
    start = [torch.tensor([-1.5, 2.0, -0.5], dtype=dtype), torch.tensor([1.2, 0.3], dtype=dtype)]

    def loss(head: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
        x = torch.cat([head, tail])
        return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()

    return start, loss


PROBLEMS = {"logistic": logistic, "rosenbrock": rosenbrock}


def numpy_closure(arrays: list[np.ndarray], loss_fn: Callable[..., torch.Tensor]) -> Callable[[], Any]:
    """pyopt's closure: (loss, grads) at the arrays' current values, by torch's autograd."""
    def closure() -> tuple[torch.Tensor, list[np.ndarray]]:
        tensors = [torch.from_numpy(a).requires_grad_() for a in arrays]
        loss = loss_fn(*tensors)
        loss.backward()
        return loss.detach(), [t.grad.numpy() for t in tensors]
    return closure


def torch_closure(opt: torch.optim.Optimizer, params: list[torch.Tensor],
                  loss_fn: Callable[..., torch.Tensor]) -> Callable[[], torch.Tensor]:
    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn(*params)
        loss.backward()
        return loss
    return closure


def deviation(actual: Any, expected: Any) -> float:
    """max |actual - expected| relative to max |expected| (absolute where that is 0)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert np.isfinite(expected).all() and np.isfinite(actual).all(), "not finite: nothing to compare"
    if not expected.size:
        return 0.0
    scale = float(np.abs(expected).max())
    err = float(np.abs(actual - expected).max())
    return err / scale if scale > 0 else err


def state_deviation(ours: dict[str, Any], theirs: dict[str, Any]) -> float:
    """The largest deviation between pyopt's live state (``opt.state[0]``) and torch's (on its
    first param), after checking they have the same keys, counters and list lengths."""
    assert set(ours) == set(theirs)
    worst = 0.0
    for key, value in theirs.items():
        mine = ours[key]
        if key in ("func_evals", "n_iter"):
            assert mine == value, key
        elif isinstance(value, list):
            assert len(mine) == len(value), key
            for k, (a, b) in enumerate(zip(mine, value)):
                assert (a is None) == (b is None), (key, k)
                if b is not None:
                    worst = max(worst, deviation(a, b.detach().numpy() if isinstance(b, torch.Tensor) else b))
        else:
            worst = max(worst, deviation(mine, value.detach().numpy() if isinstance(value, torch.Tensor) else value))
    return worst


def side_by_side(problem: str, dtype: torch.dtype, steps: int, **hyper: Any) -> dict[str, Any]:
    """torch.optim.LBFGS and pyopt.LBFGS, ``steps`` steps each from the same start. Counters equal
    after every step; returns the largest deviations and what torch did at each step."""
    with default_dtype(dtype):
        start, loss_fn = PROBLEMS[problem](dtype)
        params = [torch.nn.Parameter(p.clone()) for p in start]
        theirs = torch.optim.LBFGS(params, **copy.deepcopy(hyper))
        arrays = [p.clone().numpy() for p in start]
        ours = LBFGS(arrays, **hyper)
        t_closure, n_closure = torch_closure(theirs, params, loss_fn), numpy_closure(arrays, loss_fn)
        worst = {"params": 0.0, "loss": 0.0, "state": 0.0}
        per_step = []
        for step in range(steps):
            before = dict(theirs.state[params[0]])
            loss_theirs, loss_ours = theirs.step(t_closure).detach(), ours.step(n_closure)
            state_theirs, state_ours = theirs.state[params[0]], ours.state[0]
            where = f"{problem} {hyper} step {step + 1}"
            for key in ("func_evals", "n_iter"):
                assert state_ours[key] == state_theirs[key], \
                    f"{where}: {key} {state_ours[key]}, torch's {state_theirs[key]}"
            worst["loss"] = max(worst["loss"], deviation(float(loss_ours), float(loss_theirs)))
            worst["params"] = max([worst["params"]]
                                  + [deviation(a, p.detach().numpy()) for a, p in zip(arrays, params)])
            per_step.append({"evals": state_theirs["func_evals"] - before.get("func_evals", 0),
                             "iterations": state_theirs["n_iter"] - before.get("n_iter", 0),
                             "grad_max": max(float(p.grad.abs().max()) for p in params),
                             "loss": float(loss_theirs)})
        worst["state"] = state_deviation(ours.state[0], theirs.state[params[0]])
        moved = max(deviation(a, s.numpy()) for a, s in zip(arrays, start))
        assert moved > 1e-3, "the params did not move: nothing was compared"
    return {"worst": worst, "per_step": per_step}


# ----- float64 trajectories -----------------------------------------------------------------------
# (problem, hyperparameters, steps): the logistic regression converges within the first step of
# 20 iterations (the next steps return after one evaluation); Rosenbrock with a fixed lr of 0.05
# stays together for 8 steps and then parts (1e-4 by step 12, the same iterations and
# evaluations): fixed steps in its curved valley amplify a last-bit difference without bound.
TRAJECTORIES = [
    pytest.param("logistic", {}, 4, id="logistic-defaults"),
    pytest.param("logistic", {"line_search_fn": "strong_wolfe"}, 4, id="logistic-strong_wolfe"),
    pytest.param("logistic", {"history_size": 3}, 4, id="logistic-history3"),
    pytest.param("logistic", {"history_size": 3, "line_search_fn": "strong_wolfe"}, 4, id="logistic-history3-wolfe"),
    pytest.param("logistic", {"lr": 0.3, "max_iter": 6, "history_size": 4}, 12, id="logistic-lr0.3-iter6"),
    pytest.param("rosenbrock", {"line_search_fn": "strong_wolfe"}, 4, id="rosenbrock-strong_wolfe"),
    pytest.param("rosenbrock", {"line_search_fn": "strong_wolfe", "history_size": 2, "max_iter": 9}, 12,
                 id="rosenbrock-history2-wolfe"),
    pytest.param("rosenbrock", {"lr": 0.05, "history_size": 5}, 8, id="rosenbrock-lr0.05-history5"),
    pytest.param("rosenbrock", {"line_search_fn": "strong_wolfe", "max_iter": 10, "max_eval": 12}, 8,
                 id="rosenbrock-max_eval12"),
]


@pytest.mark.parametrize("problem, hyper, steps", TRAJECTORIES)
def test_float64_trajectory_matches_torch(problem, hyper, steps):
    worst = side_by_side(problem, torch.float64, steps, **hyper)["worst"]
    assert max(worst["params"], worst["loss"]) <= TOLERANCE_F64[problem], worst


@pytest.mark.parametrize("problem, hyper", [
    pytest.param("logistic", {"lr": 0.3, "max_iter": 6, "history_size": 4}, id="logistic"),
    pytest.param("rosenbrock", {"line_search_fn": "strong_wolfe", "history_size": 2, "max_iter": 9}, id="rosenbrock"),
    pytest.param("rosenbrock", {"lr": 0.05, "history_size": 5}, id="rosenbrock-fixed-steps"),
])
def test_float64_state_matches_torch(problem, hyper):
    """The whole state after 2 steps, far from the minimum. (Near it, the state is gradient
    differences of the size of the rounding differences: compared there through the steps
    that use it.)"""
    result = side_by_side(problem, torch.float64, 2, **hyper)
    assert result["per_step"][-1]["grad_max"] > 1e-3
    assert result["worst"]["state"] <= TOLERANCE_F64[problem], result["worst"]


def test_the_runs_exercise_max_eval_and_a_history_shorter_than_the_iterations():
    """The configurations above do what they are there for (so that they test it)."""
    short = side_by_side("logistic", torch.float64, 3, history_size=3)["per_step"]
    assert short[0]["iterations"] > 3  # more curvature pairs than the history keeps
    capped = side_by_side("rosenbrock", torch.float64, 4, line_search_fn="strong_wolfe", max_iter=10, max_eval=12)
    assert any(s["evals"] >= 12 and s["iterations"] < 10 for s in capped["per_step"])  # max_eval stopped a step


def test_stops_on_tolerance_grad_as_torch():
    """A loose tolerance_grad ends steps before max_iter (the gradient small enough), and a
    later step returns at once (one evaluation, no iteration)."""
    result = side_by_side("logistic", torch.float64, 4, tolerance_grad=1e-3, tolerance_change=0.0)
    steps = result["per_step"]
    assert steps[0]["iterations"] < 20 and steps[0]["grad_max"] <= 1e-3
    assert steps[-1]["evals"] == 1 and steps[-1]["iterations"] == 0
    assert max(result["worst"]["params"], result["worst"]["loss"]) <= TOLERANCE_F64["logistic"]


def test_stops_on_tolerance_change_as_torch():
    """A loose tolerance_change ends steps before max_iter while the gradient is still above
    tolerance_grad (the loss or the params changed too little)."""
    result = side_by_side("rosenbrock", torch.float64, 3, tolerance_change=1e-2, line_search_fn="strong_wolfe")
    steps = result["per_step"]
    assert any(0 < s["iterations"] < 20 and s["evals"] < 25 and s["grad_max"] > 1e-7 for s in steps)
    assert max(result["worst"]["params"], result["worst"]["loss"]) <= TOLERANCE_F64["rosenbrock"]


def test_many_steps_follow_torch():
    """40 steps of up to 2 iterations each (max_eval = 3 * 5 // 4 = 3 stops them), history of 2."""
    result = side_by_side("logistic", torch.float64, 40, max_iter=3, history_size=2)
    assert sum(s["iterations"] for s in result["per_step"]) >= 40
    assert max(result["worst"]["params"], result["worst"]["loss"]) <= TOLERANCE_F64["logistic"]


# ----- float32 -----------------------------------------------------------------------------------
@pytest.mark.parametrize("problem, hyper", [
    pytest.param("logistic", {"max_iter": 4}, id="logistic"),
    pytest.param("logistic", {"max_iter": 4, "line_search_fn": "strong_wolfe", "history_size": 2}, id="logistic-wolfe"),
    pytest.param("rosenbrock", {"max_iter": 5, "line_search_fn": "strong_wolfe"}, id="rosenbrock-wolfe"),
    pytest.param("rosenbrock", {"lr": 0.05, "max_iter": 5}, id="rosenbrock-lr0.05"),
])
def test_float32_is_close(problem, hyper):
    result = side_by_side(problem, torch.float32, 3, **hyper)
    assert max(result["worst"]["params"], result["worst"]["loss"]) <= TOLERANCE_F32, result["worst"]
    assert result["per_step"][-1]["grad_max"] > 1e-4  # (not yet at float32's noise)


def test_float32_state_stays_float32():
    start, loss_fn = logistic(torch.float32)
    arrays = [p.numpy().copy() for p in start]
    opt = LBFGS(arrays, max_iter=3)
    opt.step(numpy_closure(arrays, loss_fn))
    state = opt.state[0]
    assert state["d"].dtype == state["prev_flat_grad"].dtype == np.float32
    assert all(v.dtype == np.float32 for v in state["old_dirs"] + state["old_stps"] + state["ro"])


# ----- the API -----------------------------------------------------------------------------------
def test_returns_the_first_loss_and_treats_a_none_grad_as_zero_as_torch():
    """The loss of the first closure call, as the closure returned it; a param whose grad is None
    has a zero gradient (torch's _gather_flat_grad)."""
    with default_dtype(torch.float64):
        start, loss_fn = rosenbrock(torch.float64)
        frozen = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))]
        params = [torch.nn.Parameter(p.clone()) for p in start] + frozen
        theirs = torch.optim.LBFGS(params, max_iter=5)
        arrays = [p.detach().clone().numpy() for p in params]
        ours = LBFGS(arrays, max_iter=5)
        closure = numpy_closure(arrays[:2], loss_fn)
        seen = []

        def with_none_grads() -> tuple[Any, list[Any]]:
            loss, grads = closure()
            seen.append(loss)
            return loss, grads + [None, None]

        returned = ours.step(with_none_grads)
        expected = theirs.step(torch_closure(theirs, params[:2], loss_fn))
        assert returned is seen[0] and float(returned) == float(expected.detach())
        for a, p in zip(arrays, params):
            assert deviation(a, p.detach().numpy()) <= TOLERANCE_F64["rosenbrock"]
        assert np.array_equal(arrays[2], np.ones(3)) and np.array_equal(arrays[3], np.ones(2))


def test_grads_by_name_and_float32_grads_of_float64_params():
    start, loss_fn = rosenbrock(torch.float64)
    arrays = {"head": start[0].numpy().copy(), "tail": start[1].numpy().copy()}
    reference = [a.copy() for a in arrays.values()]
    closure = numpy_closure(list(arrays.values()), loss_fn)
    ref_closure = numpy_closure(reference, loss_fn)
    named = LBFGS(arrays, max_iter=3)
    plain = LBFGS(reference, max_iter=3)

    def by_name() -> tuple[Any, dict[str, np.ndarray]]:
        loss, grads = closure()
        return loss, dict(zip(arrays, grads))

    named.step(by_name)
    plain.step(ref_closure)
    for a, r in zip(arrays.values(), reference):
        assert np.array_equal(a, r)
    named.step(lambda: (by_name()[0], {k: g.astype(np.float32) for k, g in by_name()[1].items()}))


@pytest.mark.parametrize("hyper, error, words", [
    ({"lr": -1.0}, ValueError, ["lr", "-1.0", ">= 0"]),
    ({"lr": float("nan")}, ValueError, ["lr"]),
    ({"lr": "1"}, TypeError, ["lr", "real number"]),
    ({"history_size": 0}, ValueError, ["history_size", ">= 1"]),
    ({"history_size": 2.0}, TypeError, ["history_size", "int"]),
    ({"max_iter": 0}, ValueError, ["max_iter", ">= 1"]),
    ({"max_iter": True}, TypeError, ["max_iter", "int"]),
    ({"max_eval": 0}, ValueError, ["max_eval", ">= 1"]),
    ({"max_eval": 2.5}, TypeError, ["max_eval", "int or None"]),
    ({"tolerance_grad": -1e-7}, ValueError, ["tolerance_grad", ">= 0"]),
    ({"tolerance_change": float("nan")}, ValueError, ["tolerance_change"]),
    ({"line_search_fn": "armijo"}, ValueError, ["line_search_fn", "'armijo'", "strong_wolfe"]),
    ({"line_search_fn": True}, ValueError, ["line_search_fn"]),
])
def test_bad_hyperparameters_are_named(hyper, error, words):
    with pytest.raises(error) as info:
        LBFGS([np.zeros(3)], **hyper)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_max_eval_defaults_as_torchs():
    assert LBFGS([np.zeros(3)]).param_groups[0]["max_eval"] == 25
    assert LBFGS([np.zeros(3)], max_iter=7).param_groups[0]["max_eval"] == 7 * 5 // 4
    assert torch.optim.LBFGS([torch.zeros(3)], max_iter=7).param_groups[0]["max_eval"] == 8


def test_one_param_group_of_one_dtype():
    with pytest.raises(ValueError, match="LBFGS doesn't support per-parameter options"):
        LBFGS([{"params": [np.zeros(3)]}, {"params": [np.zeros(2)], "lr": 0.1}])
    opt = LBFGS([np.zeros(3)])
    with pytest.raises(ValueError, match="per-parameter options"):
        opt.add_param_group({"params": [np.zeros(2)]})
    with pytest.raises(ValueError, match="float32 and float64"):
        LBFGS([np.zeros(3, np.float32), np.zeros(2)])
    with pytest.raises(TypeError, match="float16"):
        LBFGS([np.zeros(3, np.float16)])


def test_step_needs_a_closure():
    opt = LBFGS([np.zeros(3)])
    with pytest.raises(TypeError, match="LBFGS: step needs a closure"):
        opt.step()
    with pytest.raises(TypeError, match="step needs a closure"):
        opt.step([np.zeros(3)])
    assert opt.state == {}


def test_bad_closure_results_are_named():
    p = np.ones(3)
    opt = LBFGS([p])
    with pytest.raises(TypeError, match=r"closure must return \(loss, grads\)"):
        opt.step(lambda: 1.0)
    with pytest.raises(TypeError, match="loss must be a real number"):
        opt.step(lambda: ("high", [np.ones(3)]))
    with pytest.raises(ValueError, match=r"params\[0\]: gradient shape \(2,\)"):
        opt.step(lambda: (1.0, [np.ones(2)]))
    with pytest.raises(ValueError, match="2 gradients for 1 params"):
        opt.step(lambda: (1.0, [np.ones(3), np.ones(3)]))
    with pytest.raises(ValueError, match="no elements"):
        LBFGS([np.zeros(0)]).step(lambda: (0.0, [np.zeros(0)]))
    p.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        opt.step(lambda: (1.0, [np.ones(3)]))


# ----- checkpoints --------------------------------------------------------------------------------
def run_steps(opt: LBFGS, arrays: list[np.ndarray], loss_fn: Callable[..., torch.Tensor], steps: int) -> list[float]:
    closure = numpy_closure(arrays, loss_fn)
    return [float(opt.step(closure)) for _ in range(steps)]


@pytest.mark.parametrize("through", ["state_dict", "torch_lists", "pyopt.save"])
def test_checkpoint_continues_the_same_trajectory(through, tmp_path):
    """Stopped after 3 steps, saved, restored into a new optimizer over copies of the params: the
    next 5 steps are those of the run that went on, bit for bit."""
    start, loss_fn = logistic(torch.float64)
    hyper = dict(max_iter=6, history_size=4, line_search_fn="strong_wolfe")
    arrays = [p.numpy().copy() for p in start]
    opt = LBFGS(arrays, **hyper)
    run_steps(opt, arrays, loss_fn, 3)
    copies = [a.copy() for a in arrays]
    if through == "pyopt.save":
        pyopt.save(opt, tmp_path / "lbfgs.npz")
        resumed = pyopt.load(tmp_path / "lbfgs.npz", copies)
        assert type(resumed) is LBFGS and resumed.param_groups[0]["line_search_fn"] == "strong_wolfe"
    else:
        resumed = LBFGS(copies, **hyper)
        if through == "state_dict":
            saved = opt.state_dict()
            assert saved["state"][0]["old_dirs"].shape == (4, 7 + 17 + 15 + 1)
            assert np.isnan(saved["state"][0]["al"][4:]).all()  # (torch's None)
        else:  # the live state: torch's lists (as pyopt.torch hands them over)
            saved = {**opt.state_dict(), "state": {0: opt.state[0]}}
        resumed.load_state_dict(saved)
    assert run_steps(resumed, copies, loss_fn, 5) == run_steps(opt, arrays, loss_fn, 5)
    for a, c in zip(arrays, copies):
        assert np.array_equal(a, c)


def test_state_dict_matches_torchs_state():
    """The state_dict holds torch's state (torch.optim.LBFGS's, on its first param), stacked."""
    with default_dtype(torch.float64):
        start, loss_fn = logistic(torch.float64)
        params = [torch.nn.Parameter(p.clone()) for p in start]
        theirs = torch.optim.LBFGS(params, max_iter=5, history_size=3)
        theirs.step(torch_closure(theirs, params, loss_fn))
        arrays = [p.numpy().copy() for p in start]
        ours = LBFGS(arrays, max_iter=5, history_size=3)
        ours.step(numpy_closure(arrays, loss_fn))
    saved, expected = ours.state_dict()["state"], theirs.state_dict()["state"]
    assert set(saved) == set(expected) == {0} and set(saved[0]) == set(expected[0])
    for key, value in expected[0].items():
        if key in ("func_evals", "n_iter"):
            assert saved[0][key] == value
        elif key in ("old_dirs", "old_stps"):
            assert deviation(saved[0][key], torch.stack(value).numpy()) <= TOLERANCE_F64["logistic"]
        elif key in ("ro", "al"):
            assert len(saved[0][key]) == len(value) == (3 if key == "al" else len(saved[0][key]))
            assert deviation(saved[0][key], [float(v) for v in value]) <= TOLERANCE_F64["logistic"]
        else:
            expected_value = value.numpy() if isinstance(value, torch.Tensor) else value
            assert deviation(saved[0][key], expected_value) <= TOLERANCE_F64["logistic"]


@pytest.mark.parametrize("edit, error, words", [
    (lambda s: s["state"].update({1: {"n_iter": 1}}), ValueError, ["param 1", "param 0"]),
    (lambda s: s["state"][0].update(d=np.zeros(5)), ValueError, ["'d'", "(5,)", "(40,)"]),
    (lambda s: s["state"][0].pop("prev_loss"), ValueError, ["lacks", "'prev_loss'"]),
    (lambda s: s["state"][0].update(step=3), ValueError, ["unknown state", "'step'"]),
    (lambda s: s["state"][0].update(ro=s["state"][0]["ro"][:1]), ValueError, ["one entry per stored pair"]),
    (lambda s: s["state"][0].update(n_iter=-1), TypeError, ["'n_iter'", "int >= 0"]),
    (lambda s: s["state"][0].update(t="big"), TypeError, ["'t'", "real number"]),
    (lambda s: s["param_groups"][0].update(history_size=0), ValueError, ["history_size"]),
])
def test_bad_state_dicts_are_refused_whole(edit, error, words):
    start, loss_fn = logistic(torch.float64)
    arrays = [p.numpy().copy() for p in start]
    opt = LBFGS(arrays, max_iter=4)
    run_steps(opt, arrays, loss_fn, 1)
    saved = opt.state_dict()
    before = opt.state_dict()
    edit(saved)
    with pytest.raises(error) as info:
        opt.load_state_dict(saved)
    assert all(w in str(info.value) for w in words), str(info.value)
    np.testing.assert_equal(opt.state_dict()["state"], before["state"])  # (NaN equal to NaN)


def test_zero_state_and_memory():
    start, loss_fn = logistic(torch.float64)
    arrays = [p.numpy().copy() for p in start]
    opt = LBFGS(arrays, max_iter=5, history_size=3)
    assert opt.memory() == {"params": 40 * 8, "total": 40 * 8}
    run_steps(opt, arrays, loss_fn, 1)
    memory = opt.memory()
    assert memory["old_dirs"] == memory["old_stps"] == 3 * 40 * 8 and memory["d"] == memory["prev_flat_grad"] == 40 * 8
    opt.zero_state()
    assert opt.state == {}


def test_lowering_history_size_between_steps_keeps_that_many_pairs():
    """(torch's LBFGS keeps growing its history then: its test is ``len == history_size``.)"""
    start, loss_fn = logistic(torch.float64)
    arrays = [p.numpy().copy() for p in start]
    opt = LBFGS(arrays, max_iter=6, history_size=5)
    run_steps(opt, arrays, loss_fn, 1)
    assert len(opt.state[0]["old_dirs"]) == 5
    opt.param_groups[0]["history_size"] = 2
    run_steps(opt, arrays, loss_fn, 1)
    assert len(opt.state[0]["old_dirs"]) == 2
    opt.param_groups[0]["history_size"] = 8
    run_steps(opt, arrays, loss_fn, 2)
    assert 2 < len(opt.state[0]["old_dirs"]) <= 8


def test_an_attached_schedule_sets_the_lr_of_each_step():
    """As setting the lr by hand before each step."""
    start, loss_fn = rosenbrock(torch.float64)
    scheduled, by_hand = [p.numpy().copy() for p in start], [p.numpy().copy() for p in start]
    opt = LBFGS(scheduled, lr=0.1, max_iter=4)
    pyopt.schedules.step_decay(1, gamma=0.5).attach(opt)
    reference = LBFGS(by_hand, lr=0.1, max_iter=4)
    for k in range(3):
        reference.param_groups[0]["lr"] = 0.1 * 0.5**k
        run_steps(opt, scheduled, loss_fn, 1)
        run_steps(reference, by_hand, loss_fn, 1)
        assert opt.param_groups[0]["lr"] == reference.param_groups[0]["lr"]
    for a, b in zip(scheduled, by_hand):
        assert np.array_equal(a, b)
    assert math.isfinite(opt.state[0]["prev_loss"])


# ----- pyopt.torch.LBFGS --------------------------------------------------------------------------
@pytest.mark.parametrize("hyper", [{}, {"line_search_fn": "strong_wolfe", "history_size": 4}], ids=["plain", "wolfe"])
def test_pyopt_torch_lbfgs_follows_torch(hyper):
    """The twin takes torch's closure (zero grads, backward, return the loss)."""
    pt = pytest.importorskip("pyopt.torch")
    with default_dtype(torch.float64):
        start, loss_fn = logistic(torch.float64)
        runs = []
        for cls in (torch.optim.LBFGS, pt.LBFGS):
            params = [torch.nn.Parameter(p.clone()) for p in start]
            opt = cls(params, **hyper)
            losses = [float(opt.step(torch_closure(opt, params, loss_fn)).detach()) for _ in range(6)]
            runs.append((params, losses, opt.state_dict()["state"][0]))
    (theirs, their_losses, their_state), (ours, our_losses, our_state) = runs
    assert deviation(our_losses, their_losses) <= TOLERANCE_F64["logistic"]
    for a, b in zip(ours, theirs):
        assert deviation(a.detach().numpy(), b.detach().numpy()) <= TOLERANCE_F64["logistic"]
    assert our_state["func_evals"] == their_state["func_evals"] and our_state["n_iter"] == their_state["n_iter"]
    assert [type(v) for v in our_state["ro"]] == [torch.Tensor] * len(their_state["ro"])


def test_memory_estimate_is_what_a_full_history_holds():
    start, loss_fn = logistic(torch.float64)
    arrays = [p.numpy().copy() for p in start]
    opt = LBFGS(arrays, max_iter=5, history_size=3)
    run_steps(opt, arrays, loss_fn, 1)
    estimate = pyopt.memory_estimate("lbfgs", [a.size for a in arrays], param_dtype="float64", history_size=3)
    assert {k: v for k, v in estimate.items() if k not in ("grads", "master", "total")} == {
        k: v for k, v in opt.memory().items() if k != "total"}
    assert estimate["old_dirs"] == 3 * 40 * 8
    with pytest.raises(ValueError, match="history_size"):
        pyopt.memory_estimate("lbfgs", 40, history_size=0)


def test_a_step_at_a_minimum_only_counts_the_evaluation_as_torch():
    """The first gradient within tolerance_grad: one evaluation, no iteration, no other state."""
    with default_dtype(torch.float64):
        param = torch.nn.Parameter(torch.ones(3))
        theirs = torch.optim.LBFGS([param])
        theirs.step(torch_closure(theirs, [param], lambda p: ((p - 1) ** 2).sum()))
    opt = LBFGS([np.ones(3)])
    assert opt.step(lambda: (0.0, [np.zeros(3)])) == 0.0
    assert opt.state[0] == dict(theirs.state[param]) == {"func_evals": 1, "n_iter": 0}
    resumed = LBFGS([np.ones(3)])
    resumed.load_state_dict(opt.state_dict())
    assert resumed.state[0] == {"func_evals": 1, "n_iter": 0}
