"""SM3, Fromage, PolyakSGD, DoG and MoMo against optax 0.2.8 itself (the reference).

Each run steps pyopt and optax side by side for STEPS steps over params of many shapes (0-size,
1, 7, 17, 1023, a matrix, a 3-D tensor, 100003), in float64 (jax with x64) and float32 (jax
without: optax then computes in float32 as pyopt does), with random hyperparameters including
extremes, zero gradients at the first step, and NaN/Inf. The differences are rounding: the order
of numpy's and XLA's sums (norms, inner products) and XLA's rsqrt. ``python -m pytest
test_optax_family.py -k max_errors -s`` prints the largest relative error per optimizer and dtype.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
import jax.numpy as jnp  # noqa: E402
from optax import contrib  # noqa: E402

import pyopt  # noqa: E402
from refcheck import loguniform  # noqa: E402

SHAPES = [(0,), (1,), (7,), (17,), (1023,), (13, 9), (3, 5, 4), (100003,)]
STEPS = 50
SEEDS = (0, 1, 2, 3)
NAMES = ("sm3", "fromage", "polyak_sgd", "dog", "momo")
# Largest relative error allowed (against max |param|, element-wise, after STEPS steps).
TOLERANCE = {np.float64: 1e-11, np.float32: 2e-4}


@contextlib.contextmanager
def jax_x64(enabled: bool) -> Iterator[None]:
    saved = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", enabled)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", saved)


def draw(name: str, seed: int) -> dict[str, Any]:
    """Random hyperparameters; seed 0 the defaults but lr, seed 1 extremes."""
    rng = np.random.default_rng([seed, 2025, NAMES.index(name)])
    if name == "sm3":
        momentum = [0.9, 0.0, float(rng.uniform(0.5, 0.99)), 0.999][seed]
        return {"lr": loguniform(rng, 1e-4, 1.0), "momentum": momentum}
    if name == "fromage":
        min_norm = [1e-6, 0.0, loguniform(rng, 1e-8, 1e-2), 1e3][seed]
        return {"lr": [1e-2, 1.0, loguniform(rng, 1e-4, 0.3), 1e-9][seed], "min_norm": min_norm}
    if name == "polyak_sgd":
        return {"lr": [1.0, 3.0, loguniform(rng, 0.1, 3), loguniform(rng, 0.1, 3)][seed],
                "max_learning_rate": [1.0, 1e-3, loguniform(rng, 1e-2, 10), 1e6][seed],
                "f_min": [0.0, -1.0, float(rng.uniform(-1, 0.5)), 0.5][seed],
                "eps": [0.0, 1e-3, loguniform(rng, 1e-10, 1e-2), 0.0][seed],
                "variant": ["sps", "sps+", "sps", "sps+"][seed]}
    if name == "dog":
        init_step = [("heuristic", 1e-6), ("distance", 1e-2), ("learning_rate", loguniform(rng, 1e-4, 1e-1)),
                     ("heuristic", 1e-4)][seed]
        return {"lr": [1.0, 3.0, loguniform(rng, 0.3, 3), 0.5][seed], "init_step": init_step,
                "eps": [1e-8, 0.0, loguniform(rng, 1e-10, 1e-4), 1e-8][seed],
                "weight_decay": [0.0, 0.1, loguniform(rng, 1e-4, 1e-1), 0.0][seed]}
    assert name == "momo"
    return {"lr": [1.0, 10.0, loguniform(rng, 0.01, 10), 1e-3][seed],
            "beta": [0.9, 0.0, float(rng.uniform(0.5, 0.99)), 0.99][seed],
            "lower_bound": [0.0, -1.0, float(rng.uniform(-1, 0.3)), 0.3][seed],
            "weight_decay": [0.0, 0.1, loguniform(rng, 1e-4, 1e-1), 0.0][seed],
            "adapt_lower_bound": [False, True, True, False][seed]}


def optax_of(name: str, h: dict[str, Any]) -> Any:
    """optax's optimizer for pyopt's hyperparameters (pyopt's lr is optax's learning_rate;
    PolyakSGD's is optax's scaling)."""
    if name == "sm3":
        return optax.sm3(h["lr"], momentum=h["momentum"])
    if name == "fromage":
        return optax.fromage(h["lr"], min_norm=h["min_norm"])
    if name == "polyak_sgd":
        return optax.polyak_sgd(max_learning_rate=h["max_learning_rate"], scaling=h["lr"], f_min=h["f_min"],
                                eps=h["eps"], variant=h["variant"])
    if name == "dog":
        return contrib.dog(h["lr"], init_step=h["init_step"], eps=h["eps"],
                           weight_decay=h["weight_decay"] or None)
    return contrib.momo(h["lr"], beta=h["beta"], lower_bound=h["lower_bound"], weight_decay=h["weight_decay"],
                        adapt_lower_bound=h["adapt_lower_bound"])


def data(seed: int, dtype: type, shapes: list[tuple[int, ...]], special: str | None = None
         ) -> tuple[list[np.ndarray], list[list[np.ndarray]], list[float]]:
    """Initial params, STEPS gradient lists and losses. Every gradient is zero at the first step
    on seed 1 (one param's on the others); gradient scales span 1e-6 .. 1e3. ``special``: a NaN
    or Inf in a gradient midway, or a NaN loss."""
    rng = np.random.default_rng([seed, 77])
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    scales = [10.0 ** rng.uniform(-6, 3) for _ in shapes]
    grads, losses = [], []
    for t in range(STEPS):
        gs = [(rng.standard_normal(s) * scale).astype(dtype) for s, scale in zip(shapes, scales)]
        if t == 0:
            for k, g in enumerate(gs):
                if seed == 1 or k == 2:
                    g[...] = 0
        if t == STEPS // 2 and special in ("nan", "inf"):
            gs[3].reshape(-1)[5] = np.nan if special == "nan" else np.inf
        grads.append(gs)
        losses.append(float(np.nan) if special == "nan_loss" and t == STEPS // 2 else float(rng.uniform(-0.5, 3.0)))
    return params, grads, losses


def run_optax(name: str, h: dict[str, Any], params0: list[np.ndarray], grads: list[list[np.ndarray]],
              losses: list[float]) -> list[np.ndarray]:
    dtype = params0[0].dtype
    with jax_x64(dtype == np.float64):
        opt = optax_of(name, h)
        params = [jnp.asarray(p) for p in params0]
        assert all(p.dtype == dtype for p in params)
        state = opt.init(params)
        needs_value = name in ("polyak_sgd", "momo")

        @jax.jit
        def step(params: Any, state: Any, grads: Any, value: Any) -> Any:
            kwargs = {"value": value} if needs_value else {}
            updates, state = opt.update(grads, state, params, **kwargs)
            return optax.apply_updates(params, updates), state

        for gs, loss in zip(grads, losses):
            params, state = step(params, state, [jnp.asarray(g) for g in gs], loss)
        return [np.asarray(p) for p in params]


def run_pyopt(name: str, h: dict[str, Any], params0: list[np.ndarray], grads: list[list[np.ndarray]],
              losses: list[float]) -> tuple[list[np.ndarray], Any]:
    params = [p.copy() for p in params0]
    opt = pyopt.create(name, params, **h)
    for gs, loss in zip(grads, losses):
        if opt.step_requires_loss:
            opt.step(gs, loss=loss)
        else:
            opt.step(gs)
    return params, opt


def shapes_for(name: str) -> list[tuple[int, ...]]:
    return SHAPES


def relative_error(params: list[np.ndarray], ref: list[np.ndarray], what: str) -> float:
    """max |p - ref| / max(|ref|) per param (the NaN/Inf positions must match), the largest."""
    worst = 0.0
    for k, (p, r) in enumerate(zip(params, ref)):
        assert p.shape == r.shape and p.dtype == r.dtype, what
        finite = np.isfinite(r)
        np.testing.assert_array_equal(np.isnan(p), np.isnan(r), err_msg=f"{what}: params[{k}] NaN positions")
        np.testing.assert_array_equal(p[~finite & ~np.isnan(r)], r[~finite & ~np.isnan(r)],
                                      err_msg=f"{what}: params[{k}] infinities")
        if not finite.any():
            continue
        scale = float(np.max(np.abs(r[finite]).astype(np.float64)))
        diff = float(np.max(np.abs(p[finite].astype(np.float64) - r[finite])))
        worst = max(worst, diff / scale if scale > 0 else diff)
    return worst


MEASURED: dict[tuple[str, str], float] = {}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", NAMES)
def test_matches_optax(name: str, seed: int, dtype: type) -> None:
    h = draw(name, seed)
    params0, grads, losses = data(seed, dtype, shapes_for(name))
    ref = run_optax(name, h, params0, grads, losses)
    params, _ = run_pyopt(name, h, params0, grads, losses)
    what = f"{name} {dtype.__name__} seed {seed} {h}"
    err = relative_error(params, ref, what)
    key = (name, dtype.__name__)
    MEASURED[key] = max(MEASURED.get(key, 0.0), err)
    if err > TOLERANCE[dtype] and dtype == np.float32:
        # Ill-conditioned runs (MoMo's τ* subtracts nearly equal averages, ⟨d, x⟩ − γ): optax's
        # own float32 result is as far from its float64 one.
        wide = [p.astype(np.float64) for p in params0]
        exact = run_optax(name, h, wide, [[g.astype(np.float64) for g in gs] for gs in grads], losses)
        own = relative_error([r.astype(np.float64) for r in ref], exact, what)
        assert err <= 4 * own, f"{what}: relative error {err:.3g}, optax's float32 vs its float64 {own:.3g}"
    else:
        assert err <= TOLERANCE[dtype], f"{what}: relative error {err:.3g}"
    moved = sum(float(np.sum((p.astype(np.float64) - p0) ** 2)) for p, p0 in zip(params, params0))
    assert moved > 0 or h.get("lr") == 0, what  # (the comparison has something to compare)


@pytest.mark.parametrize("special", ["nan", "inf", "nan_loss"])
@pytest.mark.parametrize("name", NAMES)
def test_nan_and_inf_as_optax(name: str, special: str) -> None:
    if special == "nan_loss" and name not in ("polyak_sgd", "momo"):
        pytest.skip("no loss")
    h = draw(name, 2)
    params0, grads, losses = data(2, np.float64, shapes_for(name), special)
    ref = run_optax(name, h, params0, grads, losses)
    params, _ = run_pyopt(name, h, params0, grads, losses)
    err = relative_error(params, ref, f"{name} {special} {h}")
    assert err <= TOLERANCE[np.float64] or math.isnan(err)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_hyperparameter_fails(name: str) -> None:
    """The comparison has teeth: lr 10% off moves the params away from optax's."""
    h = draw(name, 2)
    params0, grads, losses = data(2, np.float64, shapes_for(name))
    ref = run_optax(name, h, params0, grads, losses)
    params, _ = run_pyopt(name, {**h, "lr": h["lr"] * 1.1}, params0, grads, losses)
    assert relative_error(params, ref, name) > 1e-6


def test_max_errors() -> None:
    """Prints the largest relative errors measured by test_matches_optax in this session."""
    for (name, dtype), err in sorted(MEASURED.items()):
        print(f"{name:12s} {dtype:8s} {err:.3g}")


# ----- the step API, state and checkpoints --------------------------------------------------------
def step(opt: Any, grads: list[np.ndarray], loss: float) -> None:
    if opt.step_requires_loss:
        opt.step(grads, loss=loss)
    else:
        opt.step(grads)


def two_groups(name: str, params: list[np.ndarray], h: dict[str, Any]) -> Any:
    """Two param groups, the second with another lr: each one optax tree."""
    half = len(params) // 2
    return pyopt.create(name, [{"params": params[:half]}, {"params": params[half:], "lr": h["lr"] * 0.5}], **h)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_and_save_load_continue_bit_for_bit(name: str, dtype: type, tmp_path: Any) -> None:
    """Halfway, the state_dict (and a pyopt.save checkpoint) rebuilt on copies of the params
    continues with the same bits; the groups' scalars are 0-d arrays of the params' dtype on each
    group's first param."""
    h = draw(name, 2)
    params0, grads, losses = data(2, dtype, SHAPES)
    params = [p.copy() for p in params0]
    opt = two_groups(name, params, h)
    for gs, loss in zip(grads[:20], losses[:20]):
        step(opt, gs, loss)
    firsts = (0, len(params) // 2)
    for i in firsts:
        for key in getattr(opt, "group_slots", ()):
            value = opt.state[i][key]
            assert isinstance(value, np.ndarray) and value.shape == () and value.dtype == dtype, (name, key)
    sd = opt.state_dict()
    path = tmp_path / "ckpt.npz"
    pyopt.save(opt, path)
    copies = [p.copy() for p in params]
    again = two_groups(name, copies, h)
    again.load_state_dict(sd)
    copies2 = [p.copy() for p in params]
    loaded = pyopt.load(path, [{"params": copies2[:4]}, {"params": copies2[4:]}])
    assert type(loaded) is type(opt)
    for gs, loss in zip(grads[20:], losses[20:]):
        for o in (opt, again, loaded):
            step(o, gs, loss)
    for k, p in enumerate(params):
        for other in (copies, copies2):
            np.testing.assert_array_equal(other[k].view(np.uint8), p.view(np.uint8), err_msg=f"{name} params[{k}]")
    for o in (again, loaded):
        for i, entry in opt.state.items():
            assert set(o.state[i]) == set(entry), name
            for key, value in entry.items():
                np.testing.assert_array_equal(np.asarray(o.state[i][key]), np.asarray(value), err_msg=f"{name} {key}")


@pytest.mark.parametrize("name", ["polyak_sgd", "dog", "momo"])
def test_each_group_is_one_optax_tree(name: str) -> None:
    """Two groups step as two optimizers of one group each (their norms do not mix)."""
    h = draw(name, 3)
    params0, grads, losses = data(3, np.float64, SHAPES)
    params = [p.copy() for p in params0]
    opt = two_groups(name, params, h)
    halves = [[p.copy() for p in params0[:4]], [p.copy() for p in params0[4:]]]
    apart = [pyopt.create(name, halves[0], **h), pyopt.create(name, halves[1], **{**h, "lr": h["lr"] * 0.5})]
    for gs, loss in zip(grads, losses):
        step(opt, gs, loss)
        step(apart[0], gs[:4], loss)
        step(apart[1], gs[4:], loss)
    for p, q in zip(params, halves[0] + halves[1]):
        np.testing.assert_array_equal(p, q, err_msg=name)


def test_a_none_gradient_skips_its_param() -> None:
    """DoG: a skipped param does not move; its gradient does not count, its distance does."""
    params = [np.ones(3), np.full(4, 2.0)]
    opt = pyopt.DoG(params, init_step=("distance", 0.1))
    opt.step([np.ones(3), np.ones(4)])
    before = params[1].copy()
    opt.step([np.ones(3), None])
    np.testing.assert_array_equal(params[1], before)
    assert opt.state[0]["step"] == 2 and opt.state[1]["step"] == 1
    np.testing.assert_array_equal(opt.state[0]["sum_sq_norm_grads"], 7.0 + 3.0)


@pytest.mark.parametrize("name", ["polyak_sgd", "momo"])
def test_the_loss_is_required_and_checked_before_anything_changes(name: str) -> None:
    params = [np.ones(5), np.ones((2, 3))]
    opt = pyopt.create(name, params)
    grads = [np.full(5, 0.5), np.full((2, 3), 0.25)]
    opt.step(grads, loss=2.0)
    saved = [p.copy() for p in params]
    sd = opt.state_dict()
    for bad, error, words in [(None, TypeError, "loss=value"), ("1.0", TypeError, "loss must be a real number"),
                              (True, TypeError, "loss must be a real number"),
                              (np.ones(2), TypeError, "loss must be a real number")]:
        with pytest.raises(error, match=words):
            opt.step(grads, loss=bad) if bad is not None else opt.step(grads)
    for p, s in zip(params, saved):
        np.testing.assert_array_equal(p, s)
    assert opt.state[0]["step"] == sd["state"][0]["step"] == 1
    opt.step(grads, loss=np.float32(1.5))  # numpy scalars and 0-d arrays are numbers
    opt.step(grads, loss=np.array(1.25))
    assert opt.state[0]["step"] == 3


BAD_HYPERPARAMETERS = {
    "sm3": [({"lr": -1.0}, ValueError, "lr"), ({"momentum": 1.0}, ValueError, "momentum"),
            ({"momentum": "0.9"}, TypeError, "momentum"), ({"lr": float("nan")}, ValueError, "lr")],
    "fromage": [({"lr": -0.1}, ValueError, "lr"), ({"lr": float("inf")}, ValueError, "lr"),
                ({"min_norm": -1.0}, ValueError, "min_norm"), ({"min_norm": None}, TypeError, "min_norm")],
    "polyak_sgd": [({"max_learning_rate": -1.0}, ValueError, "max_learning_rate"), ({"eps": -1e-8}, ValueError, "eps"),
                   ({"f_min": float("inf")}, ValueError, "f_min"), ({"variant": "sps-"}, ValueError, "variant"),
                   ({"lr": True}, TypeError, "lr")],
    "dog": [({"init_step": ("distanse", 1.0)}, ValueError, "init_step"),
            ({"init_step": ("distance", -1.0)}, ValueError, "init_step"),
            ({"init_step": 1e-6}, TypeError, "init_step"), ({"eps": -1.0}, ValueError, "eps"),
            ({"weight_decay": -0.1}, ValueError, "weight_decay")],
    "momo": [({"beta": 1.0}, ValueError, "beta"), ({"beta": -0.1}, ValueError, "beta"),
             ({"lower_bound": float("nan")}, ValueError, "lower_bound"), ({"adapt_lower_bound": 1}, TypeError,
                                                                         "adapt_lower_bound"),
             ({"weight_decay": -1.0}, ValueError, "weight_decay")],
}


@pytest.mark.parametrize("name", NAMES)
def test_bad_hyperparameters_raise_naming_them_before_anything_changes(name: str) -> None:
    for bad, error, word in BAD_HYPERPARAMETERS[name]:
        with pytest.raises(error, match=word):
            pyopt.create(name, [np.ones(3)], **bad)
        params = [np.ones(3), np.ones((2, 2))]
        opt = pyopt.create(name, params)
        step(opt, [np.full(3, 0.1), np.full((2, 2), 0.2)], 1.0)
        saved, sd = [p.copy() for p in params], opt.state_dict()
        key = next(iter(bad))
        opt.param_groups[0][key] = bad[key]
        with pytest.raises(error, match=word):
            step(opt, [np.full(3, 0.1), np.full((2, 2), 0.2)], 1.0)
        for p, s in zip(params, saved):
            np.testing.assert_array_equal(p, s)
        assert opt.state[0]["step"] == sd["state"][0]["step"] == 1


def test_sm3_keeps_one_accumulator_per_slice_of_each_axis() -> None:
    shapes = [(), (0,), (7,), (13, 9), (3, 5, 4), (0, 5)]
    params = [np.ones(s) for s in shapes]
    opt = pyopt.SM3(params, lr=0.1)
    opt.step([np.full(s, 0.5) for s in shapes])
    expected = [[(1,)], [(0,)], [(7,)], [(13,), (9,)], [(3,), (5,), (4,)], [(0,), (5,)]]
    for i, axes in enumerate(expected):
        got = [opt.state[i][f"accumulator_{a}"].shape for a in range(len(axes))]
        assert got == axes and f"accumulator_{len(axes)}" not in opt.state[i], shapes[i]
        assert opt.state[i]["momentum_buffer"].shape == shapes[i]
    np.testing.assert_allclose(opt.state[3]["accumulator_1"], 0.25)
    assert params[0] < 1.0  # a 0-d param steps as a 1-element vector


# ----- pyopt.torch and the tuner -----------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_torch_twin_steps_with_the_closure_loss_and_round_trips_its_state(name: str) -> None:
    """The twin (float64 tensors) steps as the numpy class; PolyakSGD and MoMo take the loss from
    step(closure) and refuse a step without one; its state_dict loads into a new twin that
    continues with the same bits (the groups' scalars are 0-d tensors)."""
    torch = pytest.importorskip("torch")
    import pyopt.torch as pt

    h = draw(name, 2)
    params0, grads, losses = data(2, np.float64, [(7,), (13, 9), (3, 5, 4)])
    cls = getattr(pt, type(pyopt.create(name, [np.ones(1)])).__name__)
    tensors = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params0]
    opt = cls(tensors, **h)
    reference = [p.copy() for p in params0]
    numpy_opt = pyopt.create(name, reference, **h)

    def torch_step(o: Any, ts: list[Any], gs: list[np.ndarray], loss: float) -> None:
        def closure() -> Any:
            for t, g in zip(ts, gs):
                t.grad = torch.from_numpy(g.copy())
            return torch.tensor(loss, dtype=torch.float64)
        if o.numpy_class.step_requires_loss:
            o.step(closure)
        else:
            closure()
            o.step()

    if numpy_opt.step_requires_loss:
        with pytest.raises(TypeError, match="closure"):
            opt.step()
    for gs, loss in zip(grads[:10], losses[:10]):
        torch_step(opt, tensors, gs, loss)
        step(numpy_opt, gs, loss)
    for t, r in zip(tensors, reference):
        np.testing.assert_array_equal(t.detach().numpy(), r, err_msg=name)
    for key in getattr(numpy_opt, "group_slots", ()):
        value = opt.state[tensors[0]][key]
        assert isinstance(value, torch.Tensor) and value.dim() == 0 and value.dtype == torch.float64
        assert value.item() == float(numpy_opt.state[0][key])
    copies = [torch.nn.Parameter(t.detach().clone()) for t in tensors]
    again = cls(copies, **h)
    again.load_state_dict(opt.state_dict())
    for gs, loss in zip(grads[10:20], losses[10:20]):
        torch_step(opt, tensors, gs, loss)
        torch_step(again, copies, gs, loss)
    for t, c in zip(tensors, copies):
        np.testing.assert_array_equal(c.detach().numpy(), t.detach().numpy(), err_msg=name)


class Quadratic:
    """f(w) = 0.5 * sum(s (w - 1)²) with noisy gradients: a tiny task for one tuning trial."""

    name = "quadratic-optax-family"
    epochs = 2

    def init_params(self, seed: int) -> dict[str, np.ndarray]:
        return {"w": np.zeros((4, 5), np.float32), "b": np.zeros(3, np.float32)}

    def train_batches(self, epoch: int, rng: Any) -> Iterator[float]:
        for _ in range(5):
            yield float(rng.standard_normal() * 0.01)

    def loss_and_grads(self, params: dict[str, np.ndarray], batch: float) -> tuple[float, dict[str, np.ndarray]]:
        grads = {k: (np.linspace(0.5, 2.0, v.size).reshape(v.shape) * (v - 1) + batch).astype(np.float32)
                 for k, v in params.items()}
        return self.validation_loss(params), grads

    def validation_loss(self, params: dict[str, np.ndarray]) -> float:
        return float(sum(0.5 * np.sum(np.linspace(0.5, 2.0, v.size).reshape(v.shape) * (v - 1.0) ** 2)
                         for v in params.values()))


@pytest.mark.parametrize("name", NAMES)
def test_tunable_from_the_record_and_one_trial_runs(name: str) -> None:
    pytest.importorskip("optuna")
    from pyopt import tuner
    from pyopt.tuner import space

    assert name in space.tunable()
    dims = {d.key for d in space.dimensions(name, "full")}
    assert "lr" in dims
    task = Quadratic()
    val, info = tuner.train(task, name, space.defaults(name))
    assert info["steps"] == 10 and np.isfinite(val) and val < info["initial_val_loss"], (name, val, info)
    result = tuner.tune(task, [name], trials=1, progress=False, budget="full")
    assert len(result.studies[0].trials) == 1
    assert result.studies[0].trials[0].params["optimizer"] == name


@pytest.mark.parametrize("name", ["dog", "momo"])
def test_a_state_dict_with_misplaced_or_partial_group_state_is_refused(name: str) -> None:
    params = [np.ones(3), np.ones(4)]
    opt = pyopt.create(name, params)
    step(opt, [np.full(3, 0.5), np.full(4, 0.25)], 1.0)
    sd = opt.state_dict()
    key = opt.group_slots[0]
    moved = {**sd, "state": {0: {k: v for k, v in sd["state"][0].items() if k not in opt.group_slots},
                             1: {**sd["state"][1], **{k: sd["state"][0][k] for k in opt.group_slots}}}}
    partial = {**sd, "state": {**sd["state"], 0: {k: v for k, v in sd["state"][0].items() if k != key}}}
    before = {k: np.array(v) for k, v in opt.state[0].items()}
    for bad in (moved, partial):
        with pytest.raises(ValueError, match="first param"):
            opt.load_state_dict(bad)
        for k, v in before.items():
            np.testing.assert_array_equal(opt.state[0][k], v)
    opt._state[0][key] = np.zeros(2)  # (the live state, edited to no longer fit)
    saved = [p.copy() for p in params]
    with pytest.raises(ValueError, match=key):
        step(opt, [np.full(3, 0.5), np.full(4, 0.25)], 1.0)
    for p, s in zip(params, saved):
        np.testing.assert_array_equal(p, s)
