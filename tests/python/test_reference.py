"""Every optimizer against its reference implementation: the rows of reference_table.py.

For each (row, dtype, seed) case: hyperparameters drawn as the row declares (seed 0: optional
features off, 1: all on, 2 and 3: at random), five tensors of sizes {1, 7, 17, 1023, 100003}
(two of them 2-D) stepped together in one ``opt.step`` call, ``STEPS`` steps of fresh random
gradients. The reference runs once per case (its trajectory is cached) and pyopt is compared
with it on every ISA path this machine has, at the suite's checkpoints: params, the state the
reference keeps, the step count and per-tensor scalars. Tolerances: see reference_table.py.

Rows whose reference is a float64 numpy model need no torch: with torch hidden the torch rows are
skipped and those run (test_numpy_models_run_without_torch).

Set PYOPT_REFERENCE_REPORT=<path> to dump the largest observed errors as JSON.
"""
from __future__ import annotations

import collections
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pyopt
from pyopt import functional
from pyopt._spec import spec
from pyopt.optimizers import CLASSES
from refcheck import DTYPES, ISAS, SEEDS, fma_isas, ieee_sqrt, isa_path, merge_errors, num_threads, write_report
from refcompare import run_pyopt
from reference_table import BY_NAME, ELSEWHERE, ROWS, Row, reference_case

# Largest observed errors, per (name, dtype, isa): "scaled" max |a − d| / max |d|, for torch.optim
# rows "rtol" (the smallest rtol that passes with the atol used), and "update" (normwise Δp).
OBSERVED: dict[tuple[str, str, str], dict[str, float]] = collections.defaultdict(dict)


def needs(row: Row) -> None:
    """Skip unless the modules ``row``'s reference runs on are installed."""
    for module in row.needs:
        pytest.importorskip(module)


# ----- fixtures (isa, threads: conftest.py) ------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def _report():
    """Set PYOPT_REFERENCE_REPORT=<path> to dump OBSERVED as JSON after this module."""
    yield
    write_report(OBSERVED)


# ----- the matrix -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, dtype_name, seed, isa",
    [pytest.param(r.name, d, s, i, id=f"{r.name}-{d}-seed{s}-{i}") for r in ROWS for d in DTYPES for s in SEEDS
     for i in ISAS],
    indirect=["isa"],
)
def test_matches_reference(name: str, dtype_name: str, seed: int, isa: str, threads: int) -> None:
    row = BY_NAME[name]
    needs(row)
    hyper, params0, grads, trajectory = reference_case(row, dtype_name, seed)
    errs = run_pyopt(row, hyper, params0, grads, trajectory, dtype_name, f"{name} {dtype_name} {isa} {hyper}")
    merge_errors(OBSERVED[(name, dtype_name, isa)], errs)


def test_every_optimizer_is_covered() -> None:
    """One row per optimizer (but those tested in their own files), and every boolean flag a row
    does not pin is drawn both ways over the seeds."""
    assert sorted(BY_NAME) == sorted(set(pyopt._spec.rule_optimizers()) - ELSEWHERE)
    assert len(BY_NAME) == len(ROWS)
    for suite in {row.suite for row in ROWS}:
        indexes = [row.index for row in ROWS if row.suite is suite]
        assert len(set(indexes)) == len(indexes), f"two rows of {suite.name} share an index"
    for row in ROWS:
        assert row.name in CLASSES
        drawn = [row.draw(s) for s in SEEDS]
        for f in row.flags():
            assert {h[f] for h in drawn} == {False, True}, (row.name, f)


def wrong_hyperparameters(row: Row, hyper: dict[str, Any], seed: int) -> list[tuple[str, dict[str, Any]]]:
    """Mutations the comparison must catch: a 10% larger lr (or the row's ``teeth``), any boolean flag flipped (every one at
    seed 1, where every optional feature is on, else maximize), and for the package suite a
    changed beta, momentum or weight decay."""
    wrongs = [(f"{row.teeth} * 1.1", {**hyper, row.teeth: hyper[row.teeth] * 1.1})]
    if row.suite.value_teeth:
        if "betas" in hyper:
            betas = list(hyper["betas"])
            betas[0] = betas[0] * 0.9
            wrongs.append(("betas[0] * 0.9", {**hyper, "betas": tuple(betas)}))
        if hyper.get("momentum"):
            wrongs.append(("momentum * 0.9", {**hyper, "momentum": hyper["momentum"] * 0.9}))
    for key, value in hyper.items():
        if isinstance(value, bool) and (seed == 1 or key == "maximize"):
            wrongs.append((f"{key}={not value}", {**hyper, key: not value}))
    if row.suite.value_teeth and hyper.get("weight_decay") and not (
            row.coupled_decay_inert and not hyper["weight_decouple"]):
        wrongs.append(("weight_decay * 2", {**hyper, "weight_decay": 2 * hyper["weight_decay"]}))
    return wrongs


@pytest.mark.parametrize("dtype_name, seed", [("float32", 2), ("float64", 1)])
@pytest.mark.parametrize("name", list(BY_NAME))
def test_wrong_hyperparameter_fails(name: str, dtype_name: str, seed: int, threads: int) -> None:
    """The comparison has teeth: every mutation of wrong_hyperparameters must be caught, and the
    right hyperparameters pass on the same data."""
    row = BY_NAME[name]
    needs(row)
    hyper, params0, grads, trajectory = reference_case(row, dtype_name, seed)
    wrongs = wrong_hyperparameters(row, hyper, seed)
    assert len(wrongs) >= 2
    for label, wrong in wrongs:
        with pytest.raises(AssertionError):
            run_pyopt(row, wrong, params0, grads, trajectory, dtype_name, f"{name} deliberately wrong: {label}")
    run_pyopt(row, hyper, params0, grads, trajectory, dtype_name, f"{name} control")


IEEE_SQRT_CASES = [(r.name, d, c) for r in ROWS if r.ieee_sqrt for d in DTYPES for c in ("seed1", "seed2")] + [
    (r.name, d, "large-lerp-weight") for r in ROWS if r.large_lerp_weight for d in DTYPES]


@pytest.mark.parametrize("name, dtype_name, case", [pytest.param(*c, id="-".join(c)) for c in IEEE_SQRT_CASES])
def test_fma_paths_bit_for_bit_with_ieee_sqrt(name: str, dtype_name: str, case: str, threads: int) -> None:
    """With a correctly rounded sqrt swapped into torch, the FMA paths match the row's ``ieee_sqrt``
    reference bit for bit, params and state: all that separates pyopt from stock torch is MKL's
    sqrt. "large-lerp-weight": a lerp weight ≥ 0.5 (β1 or α = 0.3) takes torch's other lerp form."""
    if not fma_isas():
        pytest.skip("no FMA path on this machine, or torch does not fuse")
    row = BY_NAME[name]
    seed = 2 if case == "seed2" else 1  # seed 1: every optional feature on (centered RMSprop)
    hyper = row.draw(seed)
    if case == "large-lerp-weight":
        key = row.large_lerp_weight
        hyper[key] = (0.3, hyper[key][1]) if key == "betas" else 0.3
    params0, grads = row.suite.make_data(row.suite.ieee_sqrt_data_seed(seed, row.index), DTYPES[dtype_name])
    reference = row.ieee_sqrt or row.reference  # an EXACT row's own reference (large-lerp-weight)
    with ieee_sqrt():
        trajectory = reference(hyper, params0, grads, row.suite.checkpoints)
    for isa_name in fma_isas():
        with isa_path(isa_name):
            run_pyopt(row, hyper, params0, grads, trajectory, dtype_name,
                      f"{name} {dtype_name} {isa_name} {hyper} vs its reference with IEEE sqrt", tol=None)


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("name", list(BY_NAME))
@pytest.mark.parametrize("isa", ISAS, indirect=True)
def test_thread_count_does_not_change_results(name: str, dtype_name: str, isa: str) -> None:
    """1, 2 and 3 threads split the step's work list differently (inside the 100003-element
    tensor, at different offsets); the rules are elementwise (their norms summed in fixed blocks),
    so the bits must not change."""
    row = BY_NAME[name]
    hyper = row.draw(1)
    params0, grads = row.suite.make_data(row.index, DTYPES[dtype_name], 5)
    results = []
    for n in (1, 2, 3):
        with num_threads(n):
            params = [p.copy() for p in params0]
            opt = CLASSES[name](params, **hyper)
            for gs in grads:
                opt.step(gs)
        results.append((n, params, opt.state))
    _, base_params, base_state = results[0]
    for n, params, state in results[1:]:
        for i, (p, q) in enumerate(zip(params, base_params)):
            np.testing.assert_array_equal(p, q, err_msg=f"{name} {isa}: params[{i}] with {n} threads vs 1")
            for key, value in base_state[i].items():
                np.testing.assert_array_equal(state[i][key], value, err_msg=f"{name} {isa}: state[{i}][{key!r}], {n} threads")


# ----- the functional layer ---------------------------------------------------------------------
@pytest.mark.parametrize("seed", (0, 1, 2))
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("name", list(BY_NAME))
@pytest.mark.parametrize("isa", ISAS, indirect=True)
def test_functional_matches_class(name: str, dtype_name: str, seed: int, isa: str) -> None:
    """pyopt.functional.<name>_ reproduces the class bit for bit (same kernel, same scalars), the
    per-tensor scalars (NAdam's mu_product, LaProp's lr averages) threaded through."""
    row = BY_NAME[name]
    steps = 20
    hyper = row.draw(seed)
    rng = np.random.default_rng([seed, row.index, *row.suite.functional_salt])
    dtype = DTYPES[dtype_name]
    shapes = [(1,), (7,), (1, 17), (31, 33), (10007,)]
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    fparams = [p.copy() for p in params]
    slots = functional.state_slots(name, **hyper)
    fstate = [[np.full_like(p, init) for _, init in slots] for p in fparams]
    scalars = [{n: init for n, init in spec(name).scalars} for _ in fparams]
    fn = getattr(functional, f"{name}_")
    opt = CLASSES[name](params, **hyper)
    for t in range(1, steps + 1):
        grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
        opt.step(grads)
        for i, (p, g) in enumerate(zip(fparams, grads)):
            out = fn(p, g, *fstate[i], step=t, **hyper, **scalars[i])
            if scalars[i]:
                assert set(out) == set(scalars[i])
                scalars[i] = out
            else:
                assert out is None
    for i, (p, fp) in enumerate(zip(params, fparams)):
        np.testing.assert_array_equal(fp, p, err_msg=f"{name} params[{i}]")
        for (slot, _), arr in zip(slots, fstate[i]):
            np.testing.assert_array_equal(arr, opt.state[i][slot], err_msg=f"{name} state[{i}][{slot!r}]")
        for key, value in scalars[i].items():
            assert value == opt.state[i][key], (name, key, value, opt.state[i][key])
        assert opt.state[i]["step"] == steps


# ----- without torch ----------------------------------------------------------------------------
_HIDE_TORCH = "import sys; sys.modules['torch'] = None; import pytest; sys.exit(pytest.main(sys.argv[1:]))"


def test_numpy_models_run_without_torch(python_child) -> None:
    """With torch hidden (``sys.modules['torch'] = None``: every ``import torch`` fails), a numpy
    model row runs and passes on every ISA path, and a torch row is skipped, not failed."""
    model = next(r.name for r in ROWS if not r.needs)
    torch_row = next(r.name for r in ROWS if "torch" in r.needs)
    ids = [f"{Path(__file__)}::test_matches_reference[{name}-float64-seed1-{isa_name}]"
           for name in (model, torch_row) for isa_name in ISAS]
    env = {k: v for k, v in os.environ.items() if k != "PYOPT_REFERENCE_REPORT"}
    proc = python_child("-c", _HIDE_TORCH, *ids, "-q", "-p", "no:cacheprovider", env=env)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|skipped|failed)", summary)}
    assert counts == {"passed": len(ISAS), "skipped": len(ISAS)}, summary
