"""SPAM with density < 1 (pyopt/spam.py: random update masks on 2-D params) against
pytorch-optimizer 4.1.0's SPAM (per-param path), plus its checks, checkpoints and pyopt.torch twin.

The masks are random: pyopt draws its own (numpy, from ``seed``); the test records them and the
reference run replays them through ``torch.randperm`` (its first masks) and ``torch.rand_like``
(its resamples), patched for that run only. Everything else, including how the reference carries
its compact moments over a resample, is the reference's own code.

Measured over the 18 cases on every ISA path, max |pyopt − ref| / max |ref| per param and per
moment: float64 4.0e-16, float32 2.1e-7 (params alone: 1.4e-16, 8.8e-8); relative to the largest
change of the param instead: float64 7.8e-14, float32 4.6e-5 (baseline ISA; 2.0e-5 with FMA).
The reference writes p + (−s)·(m/d), pyopt's rule p + (−s·m)/d: an ulp per step. An lr 0.1 %
off, a warmup one step longer or one entry of one mask flipped fails the test.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any
from unittest import mock

import numpy as np
import pytest

import pyopt

torch = pytest.importorskip("torch")
pto = pytest.importorskip("pytorch_optimizer")

from refcheck import ISAS, isa_path  # noqa: E402

STEPS = 60
SHAPES = [(1, 1), (7, 17), (1,), (17, 7), (7,), (64, 33), (1023,)]
DENSITIES = (0.05, 0.3, 0.9)
TOLERANCE = {np.float32: 1e-5, np.float64: 1e-13}
# The same errors relative to the largest change of the param instead (a stricter measure: the
# params move by far less than their size).
UPDATE_TOLERANCE = {np.float32: 2e-4, np.float64: 1e-11}
WORST: dict[str, float] = {}  # dtype -> the largest error seen (printed by the last case)


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):  # (conftest.py)
    pass


def hypers(seed: int, density: float) -> dict[str, Any]:
    """Random hyperparameters whose resets (every 7-20 steps), warmups and spike clipping all
    happen within the run; grad_accu_steps >= 2 (see reference_table.py's spam row)."""
    rng = np.random.default_rng(9100 + seed)
    gap = int(rng.integers(7, 21))
    return dict(lr=float(10 ** rng.uniform(-4, -2)), betas=(float(rng.uniform(0.0, 0.99)),
                                                         float(rng.uniform(0.5, 0.9999))),
                density=density, weight_decay=float(rng.choice([0.0, 10 ** rng.uniform(-3, -1)])),
                warmup_epoch=int(rng.integers(0, 2 * gap)), threshold=float(rng.choice([0.0, 10 ** rng.uniform(0, 2)])),
                grad_accu_steps=int(rng.integers(2, gap)), update_proj_gap=gap,
                eps=float(rng.choice([1e-6, 1e-8, 1e-12])), maximize=bool(rng.integers(2)))


def case(seed: int, dtype: type) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """Params and STEPS of gradients, some steps and params scaled to extremes (1e-30 .. 1e18)."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = []
    for _ in range(STEPS):
        scales = rng.choice([1.0, 1.0, 1.0, 1e-30, 1e-8, 1e8, 1e18], size=len(SHAPES))
        grads.append([(rng.standard_normal(s) * k).astype(dtype) for s, k in zip(SHAPES, scales)])
    return params, grads


def run_pyopt(hyper: dict, params: list[np.ndarray], grads: list[list[np.ndarray]], seed: int = 0):
    """pyopt's params after the steps, the optimizer, and its masks in draw order: ("initial" |
    "resample", mask)."""
    params = [p.copy() for p in params]
    opt = pyopt.create("spam", params, **hyper, seed=seed)
    draws: list[tuple[str, np.ndarray]] = []
    initial, resample = opt._draw_initial_mask, opt._draw_mask

    def recorded(kind: str, draw: Any) -> Any:
        def wrapped(*args: Any) -> np.ndarray:
            draws.append((kind, draw(*args)))
            return draws[-1][1]
        return wrapped
    opt._draw_initial_mask, opt._draw_mask = recorded("initial", initial), recorded("resample", resample)
    for step_grads in grads:
        opt.step(step_grads)
    return params, opt, draws


@contextlib.contextmanager
def replayed(draws: list[tuple[str, np.ndarray]], density: float):
    """torch.randperm and torch.rand_like give the reference pyopt's masks, in order."""
    # The reference skips randperm for a mask of int(density · size) = 0 entries (pyopt draws it, empty).
    firsts = [m for kind, m in draws if kind == "initial" and int(density * m.size) > 0]
    resamples = [m for kind, m in draws if kind == "resample"]

    def randperm(n: int, **_: Any) -> Any:
        assert firsts, "the reference drew a first mask more than pyopt did"
        mask = firsts.pop(0).reshape(-1)
        assert mask.size == n and np.count_nonzero(mask) == int(density * n)
        return torch.from_numpy(np.concatenate([np.flatnonzero(mask), np.flatnonzero(~mask)]))

    def rand_like(t: Any, **_: Any) -> Any:
        assert resamples, "the reference resampled a mask more than pyopt did"
        mask = resamples.pop(0)
        assert mask.shape == tuple(t.shape)
        return torch.where(torch.from_numpy(mask), 0.0, 1.0).to(t.dtype)  # (< density where masked)

    with mock.patch("torch.randperm", randperm), mock.patch("torch.rand_like", rand_like):
        yield
    assert not firsts and not resamples, "pyopt drew masks the reference did not"


def run_reference(hyper: dict, params: list[np.ndarray], grads: list[list[np.ndarray]], draws: list):
    """pytorch-optimizer's SPAM (foreach=False) on the same params, gradients and masks."""
    tparams = [torch.tensor(p, requires_grad=True) for p in params]
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if params[0].dtype == np.float64 else torch.float32)
    try:
        with replayed(draws, hyper["density"]):
            opt = pto.SPAM(tparams, foreach=False, **hyper)
            for step_grads in grads:
                for p, g in zip(tparams, step_grads):
                    p.grad = torch.from_numpy(g.copy())
                opt.step()
    finally:
        torch.set_default_dtype(default)
    return [p.detach().numpy() for p in tparams], opt


def relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    assert np.array_equal(np.isnan(ours), np.isnan(theirs))
    finite = np.isfinite(theirs)
    assert np.array_equal(ours[~finite & ~np.isnan(theirs)], theirs[~finite & ~np.isnan(theirs)])
    if not finite.any():
        return 0.0
    scale = np.max(np.abs(theirs[finite]))
    return float(np.max(np.abs(ours[finite] - theirs[finite])) / scale) if scale else float(
        np.max(np.abs(ours[finite])))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference(seed: int, density: float, dtype: type, isa: str) -> None:
    hyper = hypers(seed, density)
    params, grads = case(100 * seed + int(density * 100), dtype)
    with isa_path(isa):
        ours, opt, draws = run_pyopt(hyper, params, grads, seed=seed)
    assert sum(kind == "resample" for kind, _ in draws) >= 2 * sum(p.ndim == 2 for p in params)
    theirs, ref = run_reference(hyper, params, grads, draws)
    worst = 0.0
    for i, (p, q, tp) in enumerate(zip(ours, theirs, ref.param_groups[0]["params"])):
        assert p.dtype == q.dtype == dtype
        worst = max(worst, relative_error(p, q))
        moved = np.max(np.abs(q.astype(np.float64) - params[i]))
        if moved:
            assert np.max(np.abs(p.astype(np.float64) - q)) / moved <= UPDATE_TOLERANCE[dtype], (i, p.shape)
        state, their_state = opt.state[i], ref.state[tp]
        if p.ndim == 2:
            np.testing.assert_array_equal(state["mask"], their_state["mask"].numpy())
            assert state["exp_avg"].shape == (int(state["mask"].sum()),)
        for key in ("exp_avg", "exp_avg_sq"):
            worst = max(worst, relative_error(state[key], their_state[key].numpy().reshape(state[key].shape)))
        changed = p != params[i]
        if p.ndim == 2:  # only the entries of some mask ever move
            ever = np.zeros(p.shape, bool)
            for kind, mask in draws:
                if mask.shape == p.shape:
                    ever |= mask
            assert not (changed & ~ever).any()
    name = np.dtype(dtype).name
    WORST[name] = max(WORST.get(name, 0.0), worst)
    print(f"\nspam density={density} seed={seed} {name} {isa}: max |pyopt - ref| / max |ref| = {worst:.3g} "
          f"(worst so far: {WORST})")
    assert worst <= TOLERANCE[dtype]


def test_unmasked_entries_do_not_move() -> None:
    """Entries outside the mask keep their value (no step, no weight decay), whatever their gradient."""
    p = np.random.default_rng(0).standard_normal((40, 30))
    start = p.copy()
    opt = pyopt.SPAM([p], density=0.2, weight_decay=0.1, lr=0.1, update_proj_gap=1000)
    for _ in range(5):
        opt.step([np.random.default_rng(1).standard_normal(p.shape)])
    mask = opt.state[0]["mask"]
    assert mask.sum() == int(0.2 * p.size)
    np.testing.assert_array_equal(p[~mask], start[~mask])
    assert (p[mask] != start[mask]).all()
    assert opt.memory()["exp_avg"] == mask.sum() * 8


def test_density_one_is_the_engine_unchanged() -> None:
    """density = 1 runs the C++ engine (full moments, no mask), bit for bit as before."""
    rng = np.random.default_rng(3)
    params = [rng.standard_normal((7, 17)), rng.standard_normal(7)]
    grads = [[rng.standard_normal(p.shape) for p in params] for _ in range(20)]
    a, b = [p.copy() for p in params], [p.copy() for p in params]
    opt = pyopt.SPAM(a, update_proj_gap=7, warmup_epoch=3)
    for g in grads:
        opt.step(g)
    assert opt._engine is not None and "mask" not in opt.state[0]
    assert opt.state[0]["exp_avg"].shape == (7, 17)
    flat = opt._flat_hypers()[0]  # the rule itself, one tensor at a time
    states = [[np.zeros_like(p), np.zeros_like(p)] for p in b]
    for t, g in enumerate(grads, 1):
        for p, gi, st in zip(b, g, states):
            pyopt._core.apply("spam", p, gi, st, t, flat, np.zeros(pyopt._core.MAX_SCALARS))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def _resume_case(seed: int = 5):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s) for s in [(7, 17), (1,), (64, 33), (7,)]]
    grads = [[rng.standard_normal(p.shape) for p in params] for _ in range(30)]
    hyper = dict(density=0.3, update_proj_gap=7, warmup_epoch=4, grad_accu_steps=2, threshold=10.0,
                 weight_decay=0.01, lr=1e-2)
    return params, grads, hyper


@pytest.mark.parametrize("through", ["state_dict", "file"])
def test_resume_is_exact_across_resamples(through: str, tmp_path) -> None:
    params, grads, hyper = _resume_case()
    straight = [p.copy() for p in params]
    opt = pyopt.SPAM(straight, **hyper, seed=11)
    for g in grads:
        opt.step(g)
    # Stop at step 13 (a resample at 14), resume in an optimizer built with another seed: the
    # checkpoint's seed and masks take over.
    first = [p.copy() for p in params]
    opt = pyopt.SPAM(first, **hyper, seed=11)
    for g in grads[:13]:
        opt.step(g)
    resumed = [p.copy() for p in first]
    if through == "file":
        pyopt.save(opt, tmp_path / "spam.npz")
        again = pyopt.load(tmp_path / "spam.npz", resumed)
    else:
        again = pyopt.SPAM(resumed, seed=99)
        again.load_state_dict(opt.state_dict())
    assert again.param_groups[0]["seed"] == 11
    for g in grads[13:]:
        again.step(g)
    for x, y in zip(straight, resumed):
        np.testing.assert_array_equal(x, y)


def test_masks_depend_on_seed_param_and_step_only() -> None:
    p = np.zeros((30, 30))
    masks = []
    for seed in (0, 0, 1):
        opt = pyopt.SPAM([p.copy(), p.copy()], density=0.5, seed=seed, update_proj_gap=2)
        opt.step([np.ones_like(p), np.ones_like(p)])
        first = [opt.state[i]["mask"].copy() for i in (0, 1)]
        opt.step([np.ones_like(p), np.ones_like(p)])  # step 2: resampled
        masks.append(first + [opt.state[0]["mask"].copy()])
    assert all(np.array_equal(x, y) for x, y in zip(masks[0], masks[1]))
    assert not np.array_equal(masks[0][0], masks[2][0])
    assert not np.array_equal(masks[0][0], masks[0][1])  # two params: two masks
    assert not np.array_equal(masks[0][0], masks[0][2])  # a resample: a new mask


@pytest.mark.parametrize("key, value, error", [
    ("density", 0.0, ValueError), ("density", 1.5, ValueError), ("density", -0.1, ValueError),
    ("density", math.nan, ValueError), ("density", "0.3", TypeError), ("seed", -1, ValueError),
    ("seed", 1.5, ValueError), ("update_proj_gap", 0, ValueError)])
def test_bad_hyperparameters_are_refused(key: str, value: Any, error: type) -> None:
    with pytest.raises(error, match=key):
        pyopt.SPAM([np.zeros((3, 4))], **{key: value})
    # edited into a group after steps: refused at the step, before anything changes
    p = np.ones((3, 4))
    opt = pyopt.SPAM([p], density=0.5, lr=0.1)
    opt.step([np.ones_like(p)])
    before, state = p.copy(), {k: np.copy(v) for k, v in opt.state[0].items()}
    opt.param_groups[0][key] = value
    with pytest.raises(error, match=key):
        opt.step([np.ones_like(p)])
    np.testing.assert_array_equal(p, before)
    assert all(np.array_equal(v, state[k]) for k, v in opt.state[0].items())


def test_what_density_below_one_does_not_take() -> None:
    with pytest.raises(ValueError, match="density < 1.*int8"):
        pyopt.SPAM([np.zeros((64, 64), np.float32)], density=0.5, state_dtype="int8")
    with pytest.raises(ValueError, match="density < 1.*bfloat16"):
        pyopt.create("spam", [np.zeros((4, 4), np.float32)], density=0.5, state_dtype="bfloat16")
    pyopt.SPAM([np.zeros((64, 64), np.float32)], density=1.0, state_dtype="int8")  # the engine's
    p = np.ones((5, 6))
    opt = pyopt.SPAM([p], density=0.5)
    for options in ({"clip_norm": 1.0}, {"clip_value": 1.0}, {"skip_nonfinite": True}):
        with pytest.raises(ValueError, match="density < 1"):
            opt.step([np.ones_like(p)], **options)
    with pytest.raises(TypeError, match="RowSparse"):
        opt.step([pyopt.RowSparse([0], np.ones((1, 6)))])
    with pytest.raises(ValueError, match="gradient shape"):
        opt.step([np.ones((6, 5))])
    np.testing.assert_array_equal(p, 1.0)
    assert opt.state == {}


def test_density_layout_is_kept_after_the_first_step() -> None:
    p, v = np.ones((5, 6)), np.ones(6)
    opt = pyopt.SPAM([p, v], density=0.5)
    opt.step([np.ones_like(p), np.ones_like(v)])
    before = p.copy()
    opt.param_groups[0]["density"] = 1.0
    with pytest.raises(ValueError, match="density"):
        opt.step([np.ones_like(p), np.ones_like(v)])
    np.testing.assert_array_equal(p, before)
    opt.param_groups[0]["density"] = 0.7  # another density < 1: the next resample uses it
    opt.step([np.ones_like(p), np.ones_like(v)])
    opt.zero_state()
    opt.param_groups[0]["density"] = 1.0
    opt.step([np.ones_like(p), np.ones_like(v)])
    assert "mask" not in opt.state[0] and opt.state[0]["exp_avg"].shape == p.shape


def test_bad_checkpoints_are_refused() -> None:
    p = np.ones((5, 6))
    opt = pyopt.SPAM([p], density=0.5)
    opt.step([np.ones_like(p)])
    good = opt.state_dict()
    fresh = pyopt.SPAM([np.ones((5, 6))], density=0.5)
    for edit, error in [(lambda e: e.pop("mask"), ValueError),
                        (lambda e: e.update(mask=e["mask"].astype(np.float64)), TypeError),
                        (lambda e: e.update(mask=e["mask"][:4]), ValueError),
                        (lambda e: e.update(exp_avg=np.zeros(3)), ValueError),
                        (lambda e: e.update(other=np.zeros(3)), ValueError)]:
        bad = opt.state_dict()
        edit(bad["state"][0])
        with pytest.raises(error):
            fresh.load_state_dict(bad)
        assert fresh.state == {}
    dense = pyopt.SPAM([np.ones((5, 6))])
    with pytest.raises(ValueError, match="mask"):
        dense.load_state_dict({**good, "param_groups": [{**good["param_groups"][0], "density": 1.0}]})
    fresh.load_state_dict(good)
    np.testing.assert_array_equal(fresh.state[0]["mask"], opt.state[0]["mask"])


def test_torch_twin_matches_and_resumes() -> None:
    import pyopt.torch as pt

    params, grads, hyper = _resume_case(8)
    ours = [p.copy() for p in params]
    opt = pyopt.SPAM(ours, **hyper, seed=3)
    for g in grads:
        opt.step(g)

    def twin(tparams: list) -> Any:
        return pt.SPAM(tparams, **hyper, seed=3)

    tparams = [torch.tensor(p, requires_grad=True) for p in params]
    topt = twin(tparams)
    for g in grads[:10]:
        for p, gi in zip(tparams, g):
            p.grad = torch.from_numpy(gi.copy())
        topt.step()
    assert topt.state[tparams[0]]["mask"].dtype == torch.bool
    saved = topt.state_dict()
    again_params = [p.detach().clone().requires_grad_(True) for p in tparams]
    again = twin(again_params)
    again.load_state_dict(saved)
    for g in grads[10:]:
        for p, gi in zip(again_params, g):
            p.grad = torch.from_numpy(gi.copy())
        again.step()
    for x, y in zip(ours, again_params):
        np.testing.assert_array_equal(x, y.detach().numpy())
    # the exposed state follows the resamples (new arrays)
    st = again.state[again_params[0]]
    assert st["exp_avg"].shape == (int(st["mask"].sum()),)
    assert np.array_equal(st["mask"].numpy(), again.state_dict()["state"][0]["mask"].numpy())


def test_torch_twin_refuses_flat_partitions_with_density_below_one() -> None:
    """DeepSpeed ZeRO's flat partitions are 1-D: the masks of 2-D params cannot be drawn on them."""
    import pyopt.torch as pt

    w = torch.ones(4, 5, requires_grad=True)
    for density, refused in ((0.5, True), (1.0, False)):
        opt = pt.SPAM([w], density=density)
        partition = torch.zeros(20, requires_grad=True)
        partition.grad = torch.ones(20)
        opt.param_groups[0]["params"] = [partition]
        if refused:
            with pytest.raises(ValueError, match="not given to the optimizer.*update masks"):
                opt.step()
            assert torch.equal(partition, torch.zeros(20))
        else:
            opt.step()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nonfinite_gradients_as_the_reference(dtype: type) -> None:
    """NaN and ±Inf in some gradients: in masked entries they reach the moments and the param as
    in the reference (until the next reset); outside the mask they are ignored, as there."""
    hyper = hypers(4, 0.3)
    params, grads = case(77, dtype)
    rng = np.random.default_rng(5)
    for step in (3, 4 + hyper["update_proj_gap"]):
        for g in grads[step]:
            g.flat[rng.integers(g.size, size=3)] = [np.nan, np.inf, -np.inf]
    ours, opt, draws = run_pyopt(hyper, params, grads, seed=4)
    theirs, _ = run_reference(hyper, params, grads, draws)
    assert any(np.isnan(p).any() for p in theirs)
    for p, q in zip(ours, theirs):
        assert relative_error(p, q) <= TOLERANCE[dtype]
