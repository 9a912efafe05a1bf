"""cautious=True (Liang et al., 2024, "Cautious Optimizers", arXiv:2411.16085): the driver's mask
policy (rules/base.hpp) on the rules whose reference-table row cannot draw it.

ademamix, laprop, mars and mars_lion draw cautious as a flag in their rows (their reference,
pytorch-optimizer 4.1.0, has it). Here: lion against pytorch-optimizer 4.1.0 Lion(cautious=True)
(its mask n / (count + 1), as apply_cautious), and adam / adamw / amsgrad against a float64 numpy
model of torch.optim.Adam's step with the mask of C-Optim's c_adamw.py (mask / max(mean(mask), 1e-3)).
Same data, draws and comparison as test_reference.py (refcompare.run_pyopt), on every ISA path.
Plus: the non-cautious path is unchanged (cautious=False gives the bits of a step without the flag),
the mask drops elements (cautious=True differs), and 16-bit storage is refused before any change.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest

import pyopt
from pyopt.optimizers import CLASSES
from refcheck import DTYPES, ISAS, SEEDS
from refcompare import run_pyopt
from refdraws import Fixed, Flag, Log, Optional, Tuple, Uniform, UnlessOff
from reference_table import ADAM_DRAWS, PACKAGES, ROUNDING, TORCH_DECAY, Row, flips_in_params, package
import reference_impls as ref


def _adam_init(p: np.ndarray, h: dict) -> dict:
    slots = ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if h["amsgrad"] else ())
    return {k: np.zeros_like(p) for k in slots}


ADAM_MODEL = ref.numpy_model(_adam_init, ref.adam_cautious_step)
CAUTIOUS = Fixed(True)
# Indexes continue the package suite's (seeding only; these rows are not in reference_table.ROWS).
ROWS = {
    "lion": Row("lion", PACKAGES, 1001, package(ref.pytorch_optimizer("Lion"), "exp_avg"), {
        "lr": Log(1e-4, 1e-2), "betas": Tuple(Uniform(0.5, 0.99), Uniform(0.9, 0.999)),
        "weight_decay": Optional(Log(1e-2, 1.0)), "cautious": CAUTIOUS}, ROUNDING, sign_flips=flips_in_params),
    "adam": Row("adam", PACKAGES, 1002, ADAM_MODEL, {
        **ADAM_DRAWS, "weight_decay": TORCH_DECAY, "decoupled_weight_decay": Flag(), "amsgrad": Flag(),
        "cautious": CAUTIOUS}, ROUNDING, needs=()),
    "adamw": Row("adamw", PACKAGES, 1003, ADAM_MODEL, {
        **ADAM_DRAWS, "weight_decay": UnlessOff(Log(1e-4, 1e-1)), "amsgrad": Flag(), "cautious": CAUTIOUS},
        ROUNDING, needs=()),
    "amsgrad": Row("amsgrad", PACKAGES, 1004, ADAM_MODEL, {
        **ADAM_DRAWS, "weight_decay": TORCH_DECAY, "decoupled_weight_decay": Flag(), "cautious": CAUTIOUS},
        ROUNDING, needs=()),
}


# What the aliases pin (not settable under their names); the model reads them.
PINNED = {"adamw": {"decoupled_weight_decay": True}, "amsgrad": {"amsgrad": True}}


@functools.lru_cache(maxsize=2)
def _case(name: str, dtype_name: str, seed: int):
    row = ROWS[name]
    hyper = row.draw(seed)
    params, grads = row.suite.make_data(row.suite.matrix_data_seed(seed, row.index), DTYPES[dtype_name])
    return hyper, params, grads, row.reference({**hyper, **PINNED.get(name, {})}, params, grads, row.suite.checkpoints)


@pytest.mark.parametrize(
    "name, dtype_name, seed, isa",
    [pytest.param(n, d, s, i, id=f"{n}-{d}-seed{s}-{i}") for n in ROWS for d in DTYPES for s in SEEDS for i in ISAS],
    indirect=["isa"])
def test_cautious_matches_reference(name: str, dtype_name: str, seed: int, isa: str, threads: int) -> None:
    row = ROWS[name]
    for module in row.needs:
        pytest.importorskip(module)
    hyper, params0, grads, trajectory = _case(name, dtype_name, seed)
    run_pyopt(row, hyper, params0, grads, trajectory, dtype_name, f"{name} cautious {dtype_name} {isa} {hyper}")


CAUTIOUS_RULES = ("adam", "adamw", "lion", "ademamix", "laprop", "mars", "mars_lion")


@pytest.mark.parametrize("name", CAUTIOUS_RULES)
def test_cautious_flag_off_is_the_plain_step_and_on_masks(name: str) -> None:
    """cautious=False gives exactly the default step; cautious=True zeroes the elements whose
    direction disagrees with the gradient (those params do not move where the rule has no decay)."""
    rng = np.random.default_rng(7)
    params0 = [rng.standard_normal(n) for n in (1, 7, 33, 5000)]
    grads = [[rng.standard_normal(p.shape) for p in params0] for _ in range(4)]
    runs = {}
    for flag in (None, False, True):
        params = [p.copy() for p in params0]
        opt = pyopt.create(name, params, **({} if flag is None else {"cautious": flag}))
        for gs in grads:
            opt.step(gs)
        runs[flag] = params
    for a, b in zip(runs[None], runs[False]):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(runs[False], runs[True]))


@pytest.mark.parametrize("name", CAUTIOUS_RULES)
def test_cautious_is_a_keyword_flag_the_tuner_searches(name: str) -> None:
    from pyopt._spec import spec

    h = next(h for h in spec(name).specs if h.name == "cautious")
    assert (h.kind, h.search, h.keyword_only, h.default) == ("bool", "flag", True, 0.0)


def test_cautious_refuses_16bit_storage_before_any_change() -> None:
    p = np.ones(8, dtype=np.float32)
    opt = pyopt.create("adam", [p], cautious=True, state_dtype="bfloat16")
    with pytest.raises(ValueError, match="cautious"):
        opt.step([np.ones(8, dtype=np.float32)])
    np.testing.assert_array_equal(p, np.ones(8, dtype=np.float32))
