"""Reference checks beyond the table's matrix (test_reference.py): Lion's sign elementwise,
AdaBelief's flag combinations the seeded draws miss, Grams against the official grams-pytorch,
LAMB's/LARS's per-tensor reductions across FMA paths, the functional API against torch, and
PYOPT_ISA in a fresh process.

Set PYOPT_REFERENCE_REPORT=<path> to dump the largest observed errors as JSON (with the matrix's).
"""
from __future__ import annotations

import collections
import json
import os
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pyopt  # noqa: E402
from pyopt import functional  # noqa: E402
from pyopt._spec import spec  # noqa: E402
from pyopt.optimizers import CLASSES  # noqa: E402
from refcheck import DTYPES, ISAS, STEPS, fma_isas, isa_path, merge_errors, write_report  # noqa: E402
from refcompare import assert_close_torch, run_pyopt  # noqa: E402
from reference_table import BY_NAME, PACKAGE_SQRT, cached, reference_case, sparse_data  # noqa: E402

OBSERVED: dict[tuple[str, str, str], dict[str, float]] = collections.defaultdict(dict)


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    write_report(OBSERVED)


# ----- grams against the official package ------------------------------------------------------
@pytest.mark.parametrize("dtype_name, seed", [("float32", 1), ("float32", 2), ("float64", 1), ("float64", 3)])
@pytest.mark.parametrize("isa", ISAS, indirect=True)
def test_grams_matches_grams_pytorch(dtype_name: str, seed: int, isa: str, threads: None) -> None:
    """Grams against the official grams-pytorch 0.0.2 in the same dtype: to torch's sqrt rounding
    on the FMA paths (bit for bit with a correctly rounded sqrt: test_reference.py), float rounding
    elsewhere."""
    pytest.importorskip("grams")
    row = BY_NAME["grams"]
    hyper = row.draw(seed)
    params0, grads = sparse_data(seed * 37 + 1000, DTYPES[dtype_name])
    trajectory = row.ieee_sqrt(hyper, params0, grads, row.suite.checkpoints)
    errs = run_pyopt(row, hyper, params0, grads, trajectory, dtype_name, f"grams vs grams-pytorch {isa}",
                     tol=PACKAGE_SQRT(dtype_name, isa))
    merge_errors(OBSERVED[("grams-pytorch", dtype_name, isa)], errs)


# ----- sign-specific checks ---------------------------------------------------------------------
SPECIAL = np.array([0.0, -0.0, 1.0, -1.0, 1e-30, -1e-30, np.nan, 3.0, -2.5, 0.0, 5e-8, -5e-8], np.float64)


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("isa", ISAS, indirect=True)
def test_lion_sign_elementwise(dtype_name: str, isa: str, threads: None) -> None:
    """sign(0) = 0 (g = 0 with m = 0 leaves p alone), tiny values keep their sign, and a NaN
    gradient behaves as in lion-pytorch (torch's sgn gives 0 for NaN; the momentum turns NaN).
    Checked elementwise against lion-pytorch, every array position in the SIMD body and the tail."""
    lion_pytorch = pytest.importorskip("lion_pytorch")
    dtype = DTYPES[dtype_name]
    n = 37
    grads = [np.resize(SPECIAL, n).astype(dtype), np.resize(SPECIAL[::-1], n).astype(dtype),
             np.resize(np.roll(SPECIAL, 5), n).astype(dtype)]
    p0 = np.linspace(-1, 1, n).astype(dtype)
    hyper = dict(lr=0.01, betas=(0.9, 0.99), weight_decay=0.0)
    p = p0.copy()
    opt = pyopt.Lion([p], **hyper)
    tp = torch.from_numpy(p0.copy())
    topt = lion_pytorch.Lion([tp], **hyper)
    for step, g in enumerate(grads, start=1):
        opt.step([g])
        tp.grad = torch.from_numpy(g.copy())
        with torch.no_grad():
            topt.step()
        np.testing.assert_array_equal(p, tp.numpy(), err_msg=f"params after step {step}")
        np.testing.assert_array_equal(opt.state[0]["exp_avg"], topt.state[tp]["exp_avg"].numpy())
        if step == 1:  # m = 0: p moves by exactly lr·sign(g), 0 where g is ±0 or NaN
            expected = p0 - dtype(0.01) * np.nan_to_num(np.sign(g)).astype(dtype)
            np.testing.assert_array_equal(p, expected)


# ----- adabelief flag combinations the seeded draws miss ----------------------------------------
ADABELIEF_COMBOS = [
    dict(amsgrad=True, rectify=False, weight_decouple=False, fixed_decay=False, degenerated_to_sgd=True),
    dict(amsgrad=True, rectify=False, weight_decouple=True, fixed_decay=False, degenerated_to_sgd=False),
    dict(amsgrad=False, rectify=True, weight_decouple=False, fixed_decay=False, degenerated_to_sgd=False),
    dict(amsgrad=True, rectify=True, weight_decouple=True, fixed_decay=False, degenerated_to_sgd=False),
]


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("combo", range(len(ADABELIEF_COMBOS)))
@pytest.mark.parametrize("isa", ISAS, indirect=True)
def test_adabelief_flag_combinations(combo: int, dtype_name: str, isa: str, threads: None) -> None:
    """amsgrad without rectification, coupled L2 decay, and rectification without the SGD warm-up
    steps, against adabelief-pytorch 0.2.0 (tolerances as in the matrix)."""
    row = BY_NAME["adabelief"]
    hyper = {**row.draw(2), **ADABELIEF_COMBOS[combo], "weight_decay": 0.02, "maximize": combo % 2 == 1}
    params0, grads = sparse_data(combo * 37 + 3000, DTYPES[dtype_name])
    key = ("adabelief-combo", dtype_name, combo)
    trajectory = cached(key, lambda: row.reference(hyper, params0, grads, row.suite.checkpoints))
    errs = run_pyopt(row, hyper, params0, grads, trajectory, dtype_name, f"adabelief {isa} {hyper}")
    merge_errors(OBSERVED[("adabelief-combos", dtype_name, isa)], errs)


# ----- per-tensor reductions (LAMB, LARS) -----------------------------------------------------
@pytest.mark.parametrize("name", ["lamb", "lars"])
def test_reductions_same_bits_on_every_fma_path(name: str) -> None:
    """Norms are summed in fixed lanes and blocks, so the vector width cannot change the result:
    the FMA paths (avx2, avx512) agree bit for bit, with 1 or 3 threads."""
    if len(fma_isas()) < 2:
        pytest.skip("needs two FMA paths")
    hyper = BY_NAME[name].draw(1)
    params0, grads = sparse_data(7, np.float32, 5)
    results = []
    saved = pyopt.info()["num_threads"]
    try:
        for isa_name in fma_isas():
            for n in (1, 3):
                pyopt.set_num_threads(n)
                with isa_path(isa_name):
                    params = [p.copy() for p in params0]
                    opt = CLASSES[name](params, **hyper)
                    for gs in grads:
                        opt.step(gs)
                results.append((f"{isa_name}/{n} threads", params))
    finally:
        pyopt.set_num_threads(saved)
    first_label, first = results[0]
    for label, params in results[1:]:
        for i, (p, q) in enumerate(zip(first, params)):
            np.testing.assert_array_equal(p, q, err_msg=f"{name}: params[{i}], {label} vs {first_label}")


# ----- the functional layer against torch ---------------------------------------------------
def test_functional_adam_and_nadam_against_torch(threads: None) -> None:
    """functional.adam_ / nadam_ (with the returned mu_product threaded through) against torch."""
    for name in ("adam", "nadam"):
        for dtype_name, dtype in DTYPES.items():
            row = BY_NAME[name]
            hyper, params0, grads, trajectory = reference_case(row, dtype_name, 1)
            params = [p.copy() for p in params0]
            slots = functional.state_slots(name, **hyper)
            state = [[np.full_like(p, init) for _, init in slots] for p in params]
            scalars = [{n: init for n, init in spec(name).scalars} for _ in params]
            for t, gs in enumerate(grads, start=1):
                for i, (p, g) in enumerate(zip(params, gs)):
                    out = getattr(functional, f"{name}_")(p, g, *state[i], step=t, **hyper, **scalars[i])
                    scalars[i] = out or {}
            final = trajectory[STEPS]
            tol = row.tolerance(dtype_name, pyopt.info()["isa"])
            for i in range(len(params)):
                assert_close_torch(params[i], final["params"][i], tol, f"functional {name} params[{i}]")
                for (slot, _), arr in zip(slots, state[i]):
                    if slot in final["state"][i]:
                        assert_close_torch(arr, final["state"][i][slot], tol, f"functional {name} {slot}")
                if name == "nadam":
                    assert scalars[i]["mu_product"] == final["state"][i]["mu_product"]


# ----- PYOPT_ISA in a fresh process -------------------------------------------------------------
_CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np, torch, pyopt
    torch.set_num_threads(1)
    info = pyopt.info()
    rng = np.random.default_rng(5)
    worst = {}
    for dtype, tdtype, rtol, atol in ((np.float32, torch.float32, 1e-4, 1e-6), (np.float64, torch.float64, 1e-12, 1e-14)):
        torch.set_default_dtype(tdtype)
        for name, cls, tcls, hyper in (
            ("adam", pyopt.Adam, torch.optim.Adam, dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-2, amsgrad=True)),
            ("sgd", pyopt.SGD, torch.optim.SGD, dict(lr=5e-2, momentum=0.9, dampening=0.1, weight_decay=1e-3)),
        ):
            shapes = [(1,), (7,), (1, 17), (31, 33), (100003,)]
            params = [rng.standard_normal(s).astype(dtype) for s in shapes]
            tparams = [torch.from_numpy(p.copy()) for p in params]
            opt = cls(params, **hyper)
            topt = tcls(tparams, foreach=False, **hyper)
            for _ in range(20):
                grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
                opt.step(grads)
                for tp, g in zip(tparams, grads):
                    tp.grad = torch.from_numpy(g.copy())
                with torch.no_grad():
                    topt.step()
            for i, (p, tp) in enumerate(zip(params, tparams)):
                ref = tp.numpy()
                for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer"):
                    if key in topt.state[tp]:
                        np.testing.assert_allclose(opt.state[i][key], topt.state[tp][key].numpy(), rtol=rtol,
                                                   atol=atol * float(np.abs(topt.state[tp][key].numpy()).max()))
                np.testing.assert_allclose(p, ref, rtol=rtol, atol=atol * float(np.abs(ref).max()))
                scaled = float(np.abs(p - ref).max() / np.abs(ref).max())
                key = name + "/" + np.dtype(dtype).name
                worst[key] = max(worst.get(key, 0.0), scaled)
    print(json.dumps({"isa": info["isa"], "worst": worst}))
    """
)


@pytest.mark.parametrize("isa_name", ISAS)
def test_pyopt_isa_env_in_subprocess(isa_name: str, python_child) -> None:
    env = {**os.environ, "PYOPT_ISA": isa_name}
    proc = python_child("-c", _CHILD, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["isa"] == isa_name, result
