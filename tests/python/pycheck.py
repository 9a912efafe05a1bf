"""Checks shared by the tests of the Python-written optimizers compared with pytorch-optimizer
(test_adamp.py, test_came.py, test_adam_mini.py): trajectories against a torch reference, errors,
checkpoint resumes, bad hyperparameters, and one tiny tuning trial."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

import pyopt

# Sizes 0, 1, 7, 17, 1023 and 100003 (once), with 2-D, 3-D and 4-D shapes.
SHAPES = [(0,), (1,), (7,), (17,), (1023,), (100003,), (1, 17), (7, 17), (17, 7), (4, 3, 5), (8, 3, 3, 3)]
STEPS = 60


def relative_update_errors(params: Sequence[np.ndarray], ref: Sequence[np.ndarray],
                           initial: Sequence[np.ndarray]) -> list[float]:
    """Per tensor: ||Δp − Δp_ref|| / ||Δp_ref|| (Δ from the initial params; 0 for empty tensors,
    NaN where the reference has NaN or Inf)."""
    out = []
    for p, r, p0 in zip(params, ref, initial):
        r64, p64 = r.astype(np.float64), p.astype(np.float64)
        if not r.size:
            out.append(0.0)
            continue
        if not np.isfinite(r64).all():
            out.append(0.0 if np.array_equal(np.isfinite(p64), np.isfinite(r64)) and np.array_equal(
                p64[~np.isfinite(r64)], r64[~np.isfinite(r64)], equal_nan=True) else float("nan"))
            continue
        den = np.linalg.norm(r64 - p0)
        num = np.linalg.norm(p64 - r64)
        out.append(float(num / den) if den else float(num > 0))
    return out


def run_against(make_pyopt: Callable[[list[np.ndarray]], Any], make_ref: Callable[[list[Any]], Any],
                params0: Sequence[np.ndarray], grads: Sequence[Sequence[np.ndarray]]):
    """Steps pyopt and the torch reference (made by the callables) on the same grads; returns
    (pyopt params, reference params as numpy, pyopt optimizer, reference optimizer, torch params)."""
    import torch

    params = [p.copy() for p in params0]
    tparams = [torch.from_numpy(p.copy()).requires_grad_() for p in params0]
    opt, ref = make_pyopt(params), make_ref(tparams)
    for step_grads in grads:
        opt.step([g for g in step_grads])
        for tp, g in zip(tparams, step_grads):
            tp.grad = torch.from_numpy(np.array(g))  # a copy: pytorch-optimizer edits grads in place
        ref.step()
    return params, [tp.detach().numpy() for tp in tparams], opt, ref, tparams


def assert_resumes_bit_identically(make: Callable[[list[np.ndarray]], Any], shapes: Sequence[tuple[int, ...]],
                                   dtype: type, tmp_path, steps: int = 30, seed: int = 0,
                                   grads: Callable[[np.random.Generator, Sequence[np.ndarray]], list] | None = None) -> None:
    """``steps`` steps, a state_dict and a pyopt.save checkpoint, ``steps`` more: an optimizer
    rebuilt with default hyperparameters from either resumes bit for bit."""
    rng = np.random.default_rng(seed)
    draw = grads or (lambda r, ps: [r.standard_normal(p.shape).astype(p.dtype) for p in ps])
    params0 = [rng.standard_normal(s).astype(dtype) for s in shapes]
    first = [draw(rng, params0) for _ in range(steps)]
    second = [draw(rng, params0) for _ in range(steps)]
    ref_params = [p.copy() for p in params0]
    ref = make(ref_params)
    for g in first + second:
        ref.step(g)
    params = [p.copy() for p in params0]
    opt = make(params)
    for g in first:
        opt.step(g)
    sd = opt.state_dict()
    path = tmp_path / f"{opt.name}.npz"
    pyopt.save(opt, path)
    cls = type(opt)
    from_dict_params = [p.copy() for p in params]
    from_dict = cls(from_dict_params)
    from_dict.load_state_dict(sd)
    from_file_params = [p.copy() for p in params]
    from_file = pyopt.load(path, from_file_params)
    assert type(from_file) is cls
    for resumed, resumed_params in ((opt, params), (from_dict, from_dict_params), (from_file, from_file_params)):
        for g in second:
            resumed.step(g)
        for p, r in zip(resumed_params, ref_params):
            np.testing.assert_array_equal(p, r)


def assert_refused_before_changes(make: Callable[[], tuple[Any, list[np.ndarray]]], bad: dict[str, Any],
                                  error: type, name: str) -> None:
    """Constructing with ``bad`` hyperparameters raises ``error`` naming ``name``; so does a step
    after setting them in the group, and nothing (params, state, step counts) changes."""
    import pytest

    opt, params = make()
    with pytest.raises(error, match=name):
        type(opt)(params, **bad)
    rng = np.random.default_rng(5)
    opt.step([rng.standard_normal(p.shape).astype(p.dtype) for p in params])
    before = [p.copy() for p in params]
    state = {i: {k: np.copy(v) for k, v in s.items()} for i, s in opt.state.items()}
    saved = dict(opt.param_groups[0])
    for k, v in bad.items():
        opt.param_groups[0][k] = v
    with pytest.raises(error, match=name):
        opt.step([rng.standard_normal(p.shape).astype(p.dtype) for p in params])
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p, b)
    for i, s in opt.state.items():
        for k, v in s.items():
            np.testing.assert_array_equal(v, state[i][k])
    for k in bad:
        opt.param_groups[0][k] = saved[k]


class TinyTask:
    """A noisy quadratic over one 2-D and (unless ``matrices_only``) one 1-D param: one tiny tuning
    trial."""

    name = "tiny-quadratic"
    epochs = 2

    def __init__(self, matrices_only: bool = False) -> None:
        self.scale = {"w": np.logspace(-1, 1, 24).reshape(4, 6)}
        if not matrices_only:
            self.scale["b"] = np.logspace(-1, 0, 6)

    def init_params(self, seed: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        return {k: rng.standard_normal(s.shape) for k, s in self.scale.items()}

    def train_batches(self, epoch: int, rng: np.random.Generator):
        for _ in range(5):
            yield {k: rng.standard_normal(s.shape) * 0.01 for k, s in self.scale.items()}

    def loss_and_grads(self, params, batch):
        loss = sum(float(0.5 * np.sum(self.scale[k] * (params[k] - 1) ** 2)) for k in params)
        return loss, {k: self.scale[k] * (params[k] - 1) + batch[k] for k in params}

    def validation_loss(self, params) -> float:
        return sum(float(0.5 * np.sum(self.scale[k] * (params[k] - 1) ** 2)) for k in params)


def run_one_tuning_trial(name: str, matrices_only: bool = False) -> None:
    """The tuner builds a search space for ``name`` from its record and runs one trial with it."""
    from pyopt import tuner
    from pyopt.tuner import space

    assert name in space.tunable()
    for budget in space.BUDGETS:
        assert space.dimensions(name, budget)[0].key == "lr"
    result = tuner.tune(TinyTask(matrices_only), [name], trials=1, progress=False, budget="full")
    trial = result.studies[0].trials[0]
    assert trial.params["optimizer"] == name and trial.value is not None and np.isfinite(trial.value)
