"""AdamMini (pyopt/adam_mini.py) against pytorch-optimizer 4.1.0's AdamMini, plus its blocks option,
errors, checkpoints and tuner space.

pytorch-optimizer takes a torch model and picks each param's blocks from its name; the reference
here is a model whose param names select each of its rules, and pyopt gets one param group per
param with the ``blocks`` (and ``weight_decay``) that name stands for (the mapping of the module
docstring). pytorch-optimizer keeps its states and the gradient in float32 whatever the param's
dtype; for float64 it runs with ``torch.float32`` read as float64 in its module (and float64 as
torch's default dtype), so that both sides compute in float64."""
from __future__ import annotations

import types

import numpy as np
import pytest

import pyopt
from pycheck import (STEPS, assert_refused_before_changes, assert_resumes_bit_identically, relative_update_errors,
                     run_one_tuning_trial)
from refcheck import loguniform

torch = pytest.importorskip("torch")
pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
reference_module = pytest.importorskip("pytorch_optimizer.optimizer.adam_mini")
from torch_defaults import default_dtype  # noqa: E402

NUM_EMBEDS, NUM_HEADS, NUM_QUERY_GROUPS = 8, 4, 2
# (name in the reference model, shape, pyopt's group options for that name)
PARAMS = [
    ("fc.weight", (7, 17), {}), ("fc.bias", (7,), {}), ("norm.weight", (17,), {"weight_decay": 0.0}),
    ("big.weight", (100003,), {}), ("one.weight", (1,), {}), ("empty.weight", (0,), {}),
    ("conv.weight", (8, 3, 3, 3), {}), ("batch.weight", (4, 3, 5), {}), ("wide.weight", (1023,), {}),
    ("embed.weight", (17, 7), {"blocks": "element"}), ("lm_head.weight", (7, 17), {"blocks": "element"}),
    ("q_proj.weight", (NUM_EMBEDS, NUM_EMBEDS), {"blocks": NUM_HEADS}),
    ("k_proj.weight", (NUM_EMBEDS, NUM_EMBEDS), {"blocks": NUM_HEADS}),
    ("attn.qkv.weight", (3 * NUM_EMBEDS, NUM_EMBEDS),
     {"blocks": NUM_QUERY_GROUPS * (NUM_HEADS // NUM_QUERY_GROUPS + 2)}),
]


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):  # (conftest.py)
    pass


class Model(torch.nn.Module):
    """A module whose (dotted) param names are given."""

    def __init__(self, named: dict) -> None:
        super().__init__()
        for name, tensor in named.items():
            owner = self
            *path, leaf = name.split(".")
            for part in path:
                if not hasattr(owner, part):
                    owner.add_module(part, torch.nn.Module())
                owner = getattr(owner, part)
            owner.register_parameter(leaf, torch.nn.Parameter(tensor))


class Float64Torch(types.ModuleType):
    """torch, with ``torch.float32`` being float64 (for pytorch-optimizer's adam_mini module)."""

    float32 = torch.float64

    def __getattr__(self, name):
        return getattr(torch, name)


def draw(seed: int) -> dict:
    rng = np.random.default_rng([seed, 2406, 16793])
    return {"lr": loguniform(rng, 1e-4, 1e-1),
            "betas": (float(rng.choice([0.0, rng.uniform(0.5, 0.95)])), float(rng.uniform(0.9, 0.9999))),
            "weight_decay": [0.1, 0.0, loguniform(rng, 1e-3, 0.5)][seed % 3],
            "eps": [1e-8, 0.0, loguniform(rng, 1e-12, 1e-3)][seed % 3], "maximize": seed % 4 == 3}


def data(seed: int, dtype: type, steps: int = STEPS, params=PARAMS):
    rng = np.random.default_rng([seed, 11])
    params0 = [rng.standard_normal(s).astype(dtype) for _, s, _ in params]
    grads = [[(rng.standard_normal(s) * rng.choice([1e-6, 1.0, 1e4])).astype(dtype) for _, s, _ in params]
             for _ in range(steps)]
    return params0, grads


def run_reference(h: dict, params0, grads, params=PARAMS, monkeypatch=None):
    float64 = params0[0].dtype == np.float64
    model = Model({name: torch.from_numpy(p.copy()) for (name, _, _), p in zip(params, params0)})
    tparams = [t for _, t in model.named_parameters()]
    with default_dtype(torch.float64 if float64 else torch.float32), pytest.MonkeyPatch.context() as mp:
        if float64:
            mp.setattr(reference_module, "torch", Float64Torch("torch"))
        ref = pytorch_optimizer.AdamMini(model, num_embeds=NUM_EMBEDS, num_heads=NUM_HEADS,
                                         num_query_groups=NUM_QUERY_GROUPS, **h)
        for step in grads:
            for tp, g in zip(tparams, step):
                tp.grad = torch.from_numpy(g.copy())
            ref.step()
    return [tp.detach().numpy() for tp in tparams], ref, tparams


def run(seed: int, dtype: type, hyper: dict | None = None, **kw):
    h = draw(seed) if hyper is None else hyper
    params0, grads = data(seed, dtype, **kw)
    params = [p.copy() for p in params0]
    opt = pyopt.AdamMini([{"params": [p], **options} for p, (_, _, options) in zip(params, PARAMS)], **h)
    for step in grads:
        opt.step(step)
    ref, topt, tparams = run_reference(h, params0, grads)
    return h, params0, (params, ref, opt, topt, tparams)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(6))
def test_matches_pytorch_optimizer(seed, dtype):
    """60 steps, every rule of the reference (one block per tensor, per element, per head, per
    query group and slot). Measured max relative update error per tensor (seeds 0-5): float32 1.1e-6
    (the fused qkv weight: the reference divides by (h·(1-β₁ᵗ)) there, pyopt multiplies by its
    reciprocal), float64 1.2e-13."""
    h, params0, (params, ref, opt, topt, tparams) = run(seed, dtype)
    errors = relative_update_errors(params, ref, params0)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert max(errors) < tol, (h, {name: e for (name, _, _), e in zip(PARAMS, errors)})
    for i, (tp, (name, shape, options)) in enumerate(zip(tparams, PARAMS)):
        if not tp.numel():
            continue
        state, tstate = opt.state[i], topt.state[tp]
        np.testing.assert_allclose(state["m"], tstate["m"].numpy().reshape(shape), rtol=tol * 10,
                                   atol=tol * 10 * float(tstate["m"].abs().max()), err_msg=name)
        second = "v" if options.get("blocks") == "element" else "v_mean"
        np.testing.assert_allclose(state[second], tstate[second].numpy().reshape(state[second].shape),
                                   rtol=tol * 10, err_msg=name)


def test_rows_are_one_block_per_output_row():
    """blocks="rows" is blocks=len(p) (pytorch-optimizer's per-head rule with one row per head),
    for a 1-D param one block per element; a matrix's row blocks are not its tensor's block."""
    rng = np.random.default_rng(0)
    shapes = [(5, 6), (3, 2, 4), (7,)]
    results = []
    for blocks in ("rows", [5, 3, 7], "tensor"):
        params = [np.ones(s) for s in shapes]
        groups = [{"params": [p], "blocks": b} for p, b in zip(params, blocks if isinstance(blocks, list) else [blocks] * 3)]
        opt = pyopt.AdamMini(groups, lr=0.01)
        r = np.random.default_rng(1)
        for _ in range(5):
            opt.step([r.standard_normal(s) for s in shapes])
        results.append(params)
        assert [opt.state[i]["v_mean"].shape for i in range(3)] == ([(5,), (3,), (7,)] if blocks != "tensor" else [(1,)] * 3)
    for a, b in zip(results[0], results[1]):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(results[0][0], results[2][0])
    del rng


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_and_inf_as_the_reference(dtype):
    params0, grads = data(4, dtype, steps=6)
    grads[2][0][3, 1] = np.nan
    grads[3][9][1, 2] = np.inf
    grads[4][11][0, 0] = -np.inf
    h = draw(4)
    params = [p.copy() for p in params0]
    opt = pyopt.AdamMini([{"params": [p], **options} for p, (_, _, options) in zip(params, PARAMS)], **h)
    for step in grads:
        opt.step(step)
    ref, _, _ = run_reference(h, params0, grads)
    for p, r in zip(params, ref):
        assert np.array_equal(np.isnan(p), np.isnan(r)) and np.array_equal(np.isinf(p), np.isinf(r))
        finite = np.isfinite(r)
        np.testing.assert_allclose(p[finite], r[finite], rtol=1e-5, atol=1e-5 * float(np.abs(r[finite]).max(initial=0)))
    assert any(np.isnan(p).any() for p in params)


def test_wrong_hyperparameter_fails():
    h = {**draw(2), "weight_decay": 0.1}
    _, _, (_, ref, *_) = run(2, np.float64, hyper=h, steps=20)
    for change in ({"lr": h["lr"] * 1.01}, {"betas": (h["betas"][0], 0.5)}, {"weight_decay": 0.2}, {"eps": 1e-2}):
        params0, grads = data(2, np.float64, steps=20)
        ps = [p.copy() for p in params0]
        opt = pyopt.AdamMini([{"params": [p], **options} for p, (_, _, options) in zip(ps, PARAMS)], **{**h, **change})
        for g in grads:
            opt.step(g)
        assert any(not np.allclose(p, r, rtol=1e-9) for p, r in zip(ps, ref)), change


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("blocks", ["tensor", "element", "rows", 2])
def test_state_dict_and_save_resume_bit_identically(dtype, blocks, tmp_path):
    h = {**draw(1), "blocks": blocks}
    assert_resumes_bit_identically(lambda ps: pyopt.AdamMini(ps, **h), [(6,), (6, 5), (4, 2, 3), (0,)], dtype, tmp_path)


def test_blocks_checked_against_the_state_and_the_params():
    params = [np.ones((4, 6)), np.ones(6)]
    opt = pyopt.AdamMini(params, lr=0.01, blocks=2)
    opt.step([np.ones((4, 6)), np.ones(6)])
    before = [p.copy() for p in params]
    for blocks, pattern in ((4, "v_mean"), ("element", "'v_mean' but its group now says blocks='element'"),
                            (5, "blocks=5 does not divide")):
        opt.param_groups[0]["blocks"] = blocks
        with pytest.raises(ValueError, match=pattern):
            opt.step([np.ones((4, 6)), np.ones(6)])
        for p, b in zip(params, before):
            np.testing.assert_array_equal(p, b)
    opt.param_groups[0]["blocks"] = 2
    sd = opt.state_dict()
    sd["state"][0]["v_mean"] = np.zeros(5)
    with pytest.raises(ValueError, match="v_mean"):
        pyopt.AdamMini([np.ones((4, 6)), np.ones(6)]).load_state_dict(sd)


@pytest.mark.parametrize("bad, error, name", [
    ({"lr": -1e-3}, ValueError, "lr"), ({"betas": (1.0, 0.999)}, ValueError, r"betas\[0\]"),
    ({"betas": (0.9,)}, TypeError, "betas"), ({"weight_decay": -1.0}, ValueError, "weight_decay"),
    ({"eps": float("nan")}, ValueError, "eps"), ({"maximize": 0}, TypeError, "maximize"),
    ({"blocks": "heads"}, ValueError, "blocks"), ({"blocks": 0}, ValueError, "blocks"),
    ({"blocks": 2.0}, TypeError, "blocks"), ({"blocks": True}, TypeError, "blocks"),
])
def test_bad_hyperparameters_are_refused_before_anything_changes(bad, error, name):
    def make():
        params = [np.ones((3, 4)), np.ones(6)]
        return pyopt.AdamMini(params, lr=0.01), params

    assert_refused_before_changes(make, bad, error, name)


def test_created_by_name_and_tunable():
    opt = pyopt.create("adam_mini", [np.ones((3, 4), np.float32)], lr=0.01, blocks="rows")
    assert isinstance(opt, pyopt.AdamMini) and opt.param_groups[0]["blocks"] == "rows"
    run_one_tuning_trial("adam_mini")


def test_memory_estimate_counts_the_moments_of_the_size_of_the_params():
    """m per element; v only with blocks="element" (the per-block values are a few per tensor)."""
    four_bytes = 4 * (24 + 6)
    assert pyopt.memory_estimate("adam_mini", [24, 6])["total"] == 3 * four_bytes  # params, grads, m
    assert pyopt.memory_estimate("adam_mini", [24, 6], blocks="element")["total"] == 4 * four_bytes
    assert pyopt.memory_estimate("normuon", [24, 6])["total"] == 3 * four_bytes
    assert pyopt.memory_estimate("adamp", [24, 6])["total"] == 4 * four_bytes
    with pytest.raises(ValueError, match="came's state is factored"):
        pyopt.memory_estimate("came", [24, 6])
