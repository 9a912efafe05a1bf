"""SOAP, Shampoo and Kron (pyopt/soap.py, shampoo.py, kron.py) against pytorch-optimizer 4.1.0's
SOAP, Shampoo and Kron, plus their checks, checkpoints, pyopt.torch twins and tuner spaces.

How the runs see the same things (details in preconditioned_refs.py): SOAP's eigendecompositions
and QR factorizations, and Kron's random draws, are choices the algorithm leaves open (an
eigenbasis of a repeated eigenvalue, noise-amplifying QRs of rank-deficient factors in float32,
Gaussian probes); pyopt's are recorded and replayed in the reference run, each decomposition
checked to be a valid one of the reference's own input. With that:

- float64: SOAP ≤ 1e-12 (measured 3e-16); Kron ≤ 1e-8 with a float64 preconditioner (the
  reference's triangular solves are float32 whatever the dtype; measured 2e-10) and ≤ 1e-6 with
  the default float32 one (measured 9e-9).
- float32: SOAP and Kron ≤ 1e-5 (measured 1.6e-7).
- Shampoo: the inverse 2k-th roots of nearly singular statistics (matrix_eps * I plus fewer
  gradients than the dimension) amplify rounding, and with momentum the preconditioned gradient
  feeds back into the statistics: some runs are chaotic, in the reference itself (its result
  moves by O(1) when its gradients move by one ulp). So Shampoo is held to the reference's own
  sensitivity: its error is at most 10x the change of the reference's result when every
  gradient moves by one ulp, + 1e-8 (float64) / 1e-5 (float32). Well-conditioned runs agree to
  1e-16 .. 1e-11 (float64) and 1e-7 (float32).

Errors are max |ours - theirs| / max(|theirs|, 1). Unpatched SOAP (torch's own eigh) is compared
on a case whose factors have distinct eigenvalues: the column signs LAPACK picks do not matter.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import pyopt
from pyopt.soap import merge_small_dims

torch = pytest.importorskip("torch")
pto = pytest.importorskip("pytorch_optimizer")

from preconditioned_refs import make_case, max_relative_error, run_pyopt, run_reference  # noqa: E402

STEPS = 32
SHAPES = [(1,), (7,), (17,), (1023,), (7, 17), (33, 5), (3, 4, 5), (2, 3, 4, 5), (96, 80)]
NAMES = ("soap", "shampoo", "kron")
CLASSES = {"soap": pyopt.SOAP, "shampoo": pyopt.Shampoo, "kron": pyopt.Kron}


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):  # (conftest.py)
    pass


def _pick(rng: np.random.Generator, options: list):
    return options[int(rng.integers(len(options)))]


def hypers(name: str, seed: int) -> dict:
    """Seed 0: the reference's defaults; others random, with extremes (eps = 0, betas 0, every
    layout option, update probabilities 0 and 1, ...)."""
    if seed == 0:
        return {}
    rng = np.random.default_rng(7000 + seed)
    lr = float(np.exp(rng.uniform(np.log(1e-4), np.log(1e-1))))
    if name == "soap":
        return dict(
            lr=lr, betas=(_pick(rng, [0.0, float(rng.uniform(0.3, 0.99))]), float(rng.uniform(0.5, 0.999))),
            shampoo_beta=_pick(rng, [None, float(rng.uniform(0.0, 0.99))]),
            weight_decay=_pick(rng, [0.0, float(rng.uniform(0.0, 0.2))]),
            precondition_frequency=int(rng.integers(1, 9)), max_precondition_dim=_pick(rng, [10000, 20, 5]),
            merge_dims=bool(seed % 3 == 2), precondition_1d=bool(rng.integers(2)), correct_bias=bool(rng.integers(2)),
            normalize_gradient=bool(rng.integers(2)), data_format=_pick(rng, ["channels_first", "channels_last"]),
            eps=_pick(rng, [1e-8, 0.0, 1e-3]), maximize=bool(rng.integers(2)))
    if name == "shampoo":
        return dict(
            lr=lr, momentum=_pick(rng, [0.0, float(rng.uniform(0.1, 0.99))]),
            weight_decay=_pick(rng, [0.0, float(rng.uniform(0.0, 0.1))]), weight_decouple=bool(rng.integers(2)),
            fixed_decay=bool(rng.integers(2)), preconditioning_compute_steps=int(rng.integers(1, 6)),
            matrix_eps=_pick(rng, [1e-6, 1e-3, 1e-1]), maximize=bool(rng.integers(2)))
    momentum_into = bool(rng.integers(2))
    return dict(
        lr=lr, momentum=_pick(rng, [0.0, float(rng.uniform(0.3, 0.99))]),
        weight_decay=_pick(rng, [0.0, float(rng.uniform(0.0, 0.1))]), weight_decouple=bool(rng.integers(2)),
        pre_conditioner_update_probability=_pick(rng, [None, 1.0, 0.5, 0.3, 0.0]),
        max_size_triangular=_pick(rng, [8192, 20, 0]), min_ndim_triangular=_pick(rng, [2, 1, 3]),
        memory_save_mode=_pick(rng, [None, "one_diag", "smart_one_diag", "all_diag"]),
        momentum_into_precondition_update=momentum_into,
        # (the reference's einsum cannot mix the raw gradient's dtype with another preconditioner dtype)
        precondition_dtype=_pick(rng, ["float32", None, "float64"]) if momentum_into else None,
        # (the reference's einsum cannot mix a float32 momentum with a float64 preconditioner either)
        mu_dtype=_pick(rng, [None, "float32"]) if momentum_into else None, balance_prob=_pick(rng, [0.01, 0.5, 1.0]),
        maximize=bool(rng.integers(2)), precondition_lr=_pick(rng, [0.1, float(rng.uniform(0.01, 0.5))]),
        precondition_init_scale=_pick(rng, [1.0, float(rng.uniform(0.1, 3.0))]))


def shapes_for(name: str, hyper: dict) -> list[tuple[int, ...]]:
    if name == "soap":
        shapes = [(0,)] + SHAPES
        if hyper.get("merge_dims"):  # (the shapes the reference can merge; the others are refused)
            limit = hyper.get("max_precondition_dim", 10000)
            shapes = [s for s in shapes if math.prod(merge_small_dims(s, limit)) == math.prod(s)]
        return shapes
    if name == "shampoo":  # (a 1023-long vector is a 1023² SVD per compute step: too slow for this matrix)
        return [{(1023,): (255,), (96, 80): (48, 40)}.get(s, s) for s in SHAPES]
    return SHAPES


def tolerance(name: str, dtype, hyper: dict) -> float:
    if dtype == np.float32:
        return 1e-5
    if name == "kron":
        return 1e-6 if hyper.get("precondition_dtype", "float32") == "float32" else 1e-8
    return 1e-12 if name == "soap" else 1e-6


def case(name: str, dtype, seed: int):
    hyper = hypers(name, seed)
    shapes = shapes_for(name, hyper)
    params, grads = make_case(shapes, dtype, STEPS, seed)
    return hyper, params, grads


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", NAMES)
def test_matches_pytorch_optimizer(name: str, dtype, seed: int) -> None:
    hyper, params, grads = case(name, dtype, seed)
    ours, _, draws = run_pyopt(name, hyper, params, grads, seed=seed)
    if name == "shampoo":
        theirs = run_reference(name, hyper, params, grads)
        rng = np.random.default_rng(seed)
        nudged = [[np.nextafter(g, np.where(rng.random(g.shape) < 0.5, -np.inf, np.inf).astype(dtype))
                   for g in step] for step in grads]
        assert all(not np.array_equal(a, b) for step, nudge in zip(grads, nudged) for a, b in zip(step, nudge))
        sensitivity = max_relative_error(run_reference(name, hyper, params, nudged), theirs)
        error = max_relative_error(ours, theirs)
        assert error <= 10 * sensitivity + (1e-8 if dtype == np.float64 else 1e-5), (hyper, error, sensitivity)
        return
    theirs = run_reference(name, hyper, params, grads, draws)
    error = max_relative_error(ours, theirs)
    assert error <= tolerance(name, dtype, hyper), (hyper, error)
    assert not any(np.isnan(p).any() for p in ours if p.size) or hyper.get("eps") == 0.0


def test_a_param_without_a_gradient_is_skipped_as_the_reference() -> None:
    """(Shampoo refreshing its roots at every step: the step counts, per param in pyopt and per
    group in the reference, then do not matter.)"""
    hyper = dict(momentum=0.5, weight_decay=0.01, lr=1e-2)
    params, grads = make_case([(7,), (6, 5), (3, 4, 5)], np.float64, 12, 9)
    for step in (0, 4, 5, 9):
        grads[step][step % 3] = None
    ours, _, _ = run_pyopt("shampoo", hyper, params, grads)
    assert max_relative_error(ours, run_reference("shampoo", hyper, params, grads)) <= 1e-6


def test_soap_with_torchs_own_eigh_agrees_whatever_the_signs() -> None:
    """Square factors of full rank from the first step (distinct eigenvalues), grads of one scale:
    torch's eigh and numpy's may pick other column signs; the params must still agree."""
    hyper = dict(precondition_frequency=4, lr=1e-2)
    params, grads = make_case([(5, 5), (6, 6, 6)], np.float64, 12, 3, scale=lambda rng: 1.0)
    ours, _, _ = run_pyopt("soap", hyper, params, grads)
    theirs = run_reference("soap", hyper, params, grads, patch_eigh=False)
    assert max_relative_error(ours, theirs) <= 1e-6


def test_soap_merges_dims_as_the_reference_and_refuses_what_it_cannot() -> None:
    hyper = dict(merge_dims=True, max_precondition_dim=24, precondition_frequency=2, data_format="channels_last")
    shapes = [(2, 3, 4, 5), (4, 4, 6, 2), (30, 7)]
    params, grads = make_case(shapes, np.float64, 12, 5)
    ours, opt, draws = run_pyopt("soap", hyper, params, grads)
    assert opt.state[0]["GG_0"].shape == (10, 10)  # NHWC (2, 3, 4, 5) -> NCHW (2, 5, 3, 4) -> (2·5, 3·4)
    assert max_relative_error(ours, run_reference("soap", hyper, params, grads, draws)) <= 1e-12
    p = np.zeros((7, 17))
    opt = pyopt.SOAP([p], merge_dims=True)
    with pytest.raises(ValueError, match="merge_dims=True merges shape"):
        opt.step([np.ones((7, 17))])
    assert not opt.state and not p.any()
    tp = torch.nn.Parameter(torch.zeros(7, 17))
    tp.grad = torch.ones(7, 17)
    with pytest.raises(RuntimeError):
        pto.SOAP([tp], merge_dims=True).step()


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", ["soap", "kron"])
def test_non_finite_gradients_spread_as_in_the_reference(name: str, bad: float, dtype) -> None:
    hyper = {"precondition_frequency": 3} if name == "soap" else {"pre_conditioner_update_probability": 0.5}
    params, grads = make_case([(7,), (6, 5)], dtype, 10, 11)
    grads[5][1][2, 3] = bad
    ours, _, draws = run_pyopt(name, hyper, params, grads)
    with np.errstate(all="ignore"):
        theirs = run_reference(name, hyper, params, grads, draws)
    assert np.isnan(ours[1]).any()
    assert all(np.array_equal(np.isnan(a), np.isnan(b)) for a, b in zip(ours, theirs))
    assert max_relative_error(ours, theirs) <= 1e-5


@pytest.mark.parametrize("name", ["soap", "shampoo"])
def test_a_gradient_the_decompositions_cannot_take_is_refused_before_any_change(name: str) -> None:
    """The reference raises (torch's eigh / svd on non-finite input); pyopt raises ValueError
    before changing anything."""
    rng = np.random.default_rng(2)
    params = [rng.standard_normal((4, 3)), rng.standard_normal((5,))]
    opt = CLASSES[name](params)
    good = [rng.standard_normal((4, 3)), rng.standard_normal((5,))]
    if name == "shampoo":
        opt.step(good)
    before = [p.copy() for p in params], opt.state_dict()
    bad = [np.full((4, 3), np.nan), rng.standard_normal((5,))]
    with pytest.raises(ValueError, match="non-finite gradient"):
        opt.step(bad)
    assert all(np.array_equal(a, b) for a, b in zip(before[0], params))
    assert _same_state(before[1], opt.state_dict())
    tparams = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
    ref = getattr(pto, {"soap": "SOAP", "shampoo": "Shampoo"}[name])(tparams)
    if name == "shampoo":
        for p, g in zip(tparams, good):
            p.grad = torch.from_numpy(g)
        ref.step()
    for p, g in zip(tparams, bad):
        p.grad = torch.from_numpy(g)
    with pytest.raises(RuntimeError):
        ref.step()


@pytest.mark.parametrize("name", ["shampoo", "kron"])
def test_zero_size_params_are_refused_as_the_reference_cannot_step_them(name: str) -> None:
    with pytest.raises(ValueError, match="0-size param"):
        CLASSES[name]([np.zeros((7, 0))])
    tp = torch.nn.Parameter(torch.zeros(7, 0))
    tp.grad = torch.zeros(7, 0)
    with pytest.raises(RuntimeError):
        getattr(pto, {"shampoo": "Shampoo", "kron": "Kron"}[name])([tp]).step()


def _same_state(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, dict):
            if not isinstance(y, dict) or not _same_state(x, y):
                return False
        elif isinstance(x, np.ndarray):
            if not (isinstance(y, np.ndarray) and x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True)):
                return False
        elif x != y:
            return False
    return True


RESUME_HYPER = {"soap": dict(precondition_frequency=3, precondition_1d=True),
                "shampoo": dict(momentum=0.5, preconditioning_compute_steps=2),
                "kron": dict(pre_conditioner_update_probability=0.4, balance_prob=0.5, memory_save_mode="one_diag")}


@pytest.mark.parametrize("how", ["state_dict", "file"])
@pytest.mark.parametrize("name", NAMES)
def test_resuming_from_a_checkpoint_is_bit_identical(name: str, how: str, tmp_path) -> None:
    shapes = [(), (7,), (6, 5), (2, 3, 4)]
    params, grads = make_case(shapes, np.float32, 14, 21)
    straight = [p.copy() for p in params]
    opt = CLASSES[name](straight, **RESUME_HYPER[name], **({"seed": 4} if name == "kron" else {}))
    for g in grads:
        opt.step(g)
    first = [p.copy() for p in params]
    opt = CLASSES[name](first, **RESUME_HYPER[name], **({"seed": 4} if name == "kron" else {}))
    for g in grads[:7]:
        opt.step(g)
    resumed = [p.copy() for p in first]
    if how == "state_dict":
        again = CLASSES[name](resumed, **({"seed": 99} if name == "kron" else {}))
        again.load_state_dict(opt.state_dict())
    else:
        pyopt.save(opt, tmp_path / "ckpt.npz")
        again = pyopt.load(tmp_path / "ckpt.npz", resumed)
    assert type(again) is CLASSES[name] and _same_state(again.state_dict(), opt.state_dict())
    for g in grads[7:]:
        again.step(g)
    assert all(np.array_equal(a, b) for a, b in zip(resumed, straight))


def test_kron_draws_from_its_own_seeded_generator() -> None:
    params, grads = make_case([(6, 5), (4,)], np.float64, 6, 1)
    runs = []
    for seed in (3, 3, 4):
        ps = [p.copy() for p in params]
        opt = pyopt.Kron(ps, seed=seed, pre_conditioner_update_probability=1.0)
        state = np.random.get_state()
        for g in grads:
            opt.step(g)
        assert np.random.get_state()[1].tolist() == state[1].tolist()  # numpy's global generator untouched
        runs.append(ps)
    assert all(np.array_equal(a, b) for a, b in zip(runs[0], runs[1]))
    assert not all(np.array_equal(a, b) for a, b in zip(runs[0], runs[2]))
    # a step with no gradient still counts and draws, as the reference's
    opt = pyopt.Kron([np.ones(3)], seed=0)
    opt.step([None])
    assert opt.state_dict()["global_state"]["steps"] == 1 and not opt.state


BAD_HYPERS = {
    "soap": [("lr", -1.0, ValueError), ("betas", (0.9, 1.0), ValueError), ("betas", (0.9,), TypeError),
             ("shampoo_beta", -0.1, ValueError), ("weight_decay", -1.0, ValueError),
             ("precondition_frequency", 0, ValueError), ("precondition_frequency", 2.5, TypeError),
             ("max_precondition_dim", 0, ValueError), ("merge_dims", 1, TypeError),
             ("data_format", "nhwc", ValueError), ("eps", -1e-8, ValueError), ("eps", float("nan"), ValueError),
             ("maximize", "yes", TypeError)],
    "shampoo": [("lr", float("nan"), ValueError), ("momentum", 1.0, ValueError), ("weight_decay", -0.1, ValueError),
                ("weight_decouple", None, TypeError), ("preconditioning_compute_steps", 0, ValueError),
                ("preconditioning_compute_steps", True, TypeError), ("matrix_eps", -1.0, ValueError)],
    "kron": [("lr", -1e-3, ValueError), ("momentum", 1.5, ValueError), ("weight_decay", "0", TypeError),
             ("pre_conditioner_update_probability", 1.5, ValueError),
             ("pre_conditioner_update_probability", lambda n: 0.5, TypeError),
             ("max_size_triangular", -1, ValueError), ("min_ndim_triangular", 1.0, TypeError),
             ("memory_save_mode", "some_diag", ValueError), ("mu_dtype", "bfloat16", ValueError),
             ("precondition_dtype", "float16", ValueError), ("balance_prob", 2.0, ValueError),
             ("precondition_lr", -0.1, ValueError), ("precondition_init_scale", 0.0, ValueError)],
}


@pytest.mark.parametrize("name", NAMES)
def test_bad_hyperparameters_are_refused_naming_them_before_anything_changes(name: str) -> None:
    for key, value, error in BAD_HYPERS[name]:
        with pytest.raises(error, match=key):
            CLASSES[name]([np.zeros((3, 2))], **{key: value})
        params = [np.ones((3, 2)), np.ones(4)]
        opt = CLASSES[name](params)
        opt.step([np.ones((3, 2)), np.ones(4)])
        before = [p.copy() for p in params], opt.state_dict()
        opt.param_groups[0][key] = value
        with pytest.raises(error, match=key):
            opt.step([np.ones((3, 2)), np.ones(4)])
        assert all(np.array_equal(a, b) for a, b in zip(before[0], params))
        after = opt.state_dict()
        after["param_groups"][0][key] = before[1]["param_groups"][0][key]
        assert _same_state(before[1], after)
    with pytest.raises(TypeError, match="seed"):
        pyopt.Kron([np.zeros(2)], seed=1.5)


def test_a_hyperparameter_that_shapes_the_state_cannot_change_after_the_first_step() -> None:
    p = np.ones((30, 7))
    opt = pyopt.SOAP([p], max_precondition_dim=50)
    opt.step([np.ones((30, 7))])
    opt.param_groups[0]["max_precondition_dim"] = 10
    with pytest.raises(ValueError, match="hyperparameter that shapes the state"):
        opt.step([np.ones((30, 7))])


def test_kron_refuses_params_of_more_than_13_dims() -> None:
    with pytest.raises(ValueError, match="at most 13 dimensions"):
        pyopt.Kron([np.zeros((1,) * 14)])


@pytest.mark.parametrize("name", NAMES)
def test_created_by_name_and_twinned_in_torch(name: str) -> None:
    params, grads = make_case([(6, 5), (4,)], np.float32, 5, 8)
    ours = [p.copy() for p in params]
    opt = pyopt.create(name, ours, lr=1e-2, **({"seed": 1} if name == "kron" else {}))
    assert type(opt) is CLASSES[name]
    for g in grads:
        opt.step(g)
    import pyopt.torch as pt

    tparams = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
    twin = getattr(pt, CLASSES[name].__name__)(tparams, lr=1e-2, **({"seed": 1} if name == "kron" else {}))
    for g in grads:
        for p, gi in zip(tparams, g):
            p.grad = torch.from_numpy(gi.copy())
        twin.step()
    assert all(np.array_equal(a, b.detach().numpy()) for a, b in zip(ours, tparams))


def test_kron_twin_resumes_its_generator_through_torch_save(tmp_path) -> None:
    """The twin's checkpoint carries Kron's generator and counters (each group's "global_state"):
    a run resumed from it halfway draws, and so steps, exactly as the uninterrupted one."""
    import pyopt.torch as pt

    params, grads = make_case([(6, 5), (4,)], np.float32, 20, 7)

    def run(steps, start=None, checkpoint=None):
        tparams = [torch.nn.Parameter(torch.from_numpy(p.copy() if start is None else s.copy()))
                   for p, s in zip(params, start or params)]
        opt = pt.Kron([{"params": tparams[:1], "seed": 3}, {"params": tparams[1:], "seed": 4}], lr=1e-2,
                      pre_conditioner_update_probability=0.5)
        if checkpoint is not None:
            opt.load_state_dict(torch.load(checkpoint))
        for g in steps:
            for p, gi in zip(tparams, g):
                p.grad = torch.from_numpy(gi.copy())
            opt.step()
        return [p.detach().numpy().copy() for p in tparams], opt

    whole, _ = run(grads)
    half, opt = run(grads[:10])
    torch.save(opt.state_dict(), tmp_path / "kron.pt")
    resumed, _ = run(grads[10:], start=half, checkpoint=tmp_path / "kron.pt")
    assert all(np.array_equal(a, b) for a, b in zip(whole, resumed))
    fresh, _ = run(grads[10:], start=half)  # the test can fail: without the generator, other draws
    assert not all(np.array_equal(a, b) for a, b in zip(whole, fresh))


@pytest.mark.parametrize("name", NAMES)
def test_the_tuner_searches_them(name: str) -> None:
    optuna = pytest.importorskip("optuna")
    from pyopt import tuner
    from pyopt.tuner import space

    assert name in space.tunable()
    dims = {d.label for d in space.dimensions(name, "full")}
    assert "lr" in dims and ("weight_decay" in dims)

    class Quadratic:
        name = "quadratic-precond"
        epochs = 2

        def init_params(self, seed):
            return {"w": np.zeros((4, 3)), "b": np.zeros(3)}

        def train_batches(self, epoch, rng):
            for _ in range(5):
                yield rng.standard_normal(15) * 0.01

        def loss_and_grads(self, params, batch):
            dw, db = params["w"] - 1.0, params["b"] + 0.5
            loss = float(0.5 * (np.sum(dw * dw) + np.sum(db * db)))
            return loss, {"w": dw + batch[:12].reshape(4, 3), "b": db + batch[12:]}

        def validation_loss(self, params):
            return self.loss_and_grads(params, np.zeros(15))[0]

    study = optuna.create_study()
    trial = study.ask()
    hyper = space.suggest(trial, name, "full")
    value, info = tuner.train(Quadratic(), name, hyper)
    assert np.isfinite(value) and info["epochs"] == 2


@pytest.mark.parametrize("name", NAMES)
def test_memory_counts_the_per_dimension_matrices(name: str) -> None:
    with pytest.raises(ValueError, match="one matrix per dimension"):
        pyopt.memory_estimate(name, [30, 7])
    params = [np.zeros((6, 5), np.float32), np.zeros(4, np.float32)]
    opt = CLASSES[name](params)
    opt.step([np.ones((6, 5), np.float32), np.ones(4, np.float32)])
    memory = opt.memory()
    state = sum(v.nbytes for entry in opt.state.values() for v in entry.values() if isinstance(v, np.ndarray))
    assert memory["total"] == memory["params"] + state and state > 2 * sum(p.nbytes for p in params)
