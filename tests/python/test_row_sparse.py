"""pyopt.RowSparse gradients (pyopt/sparse.py) against torch.optim's sparse-gradient paths, and
rowwise_adagrad against a float64 numpy model of FBGEMM's EXACT_ROWWISE_ADAGRAD.

torch side: torch.optim.SparseAdam / Adagrad / SGD with ``torch.sparse_coo_tensor`` gradients as
``nn.Embedding(sparse=True)`` makes them (row indices along dim 0, duplicates, not coalesced), in
the params' dtype, one thread. Each case runs STEPS steps whose row counts include 0 and 1, with
random hyperparameters (their extremes among them) and per-case gradient scales from 1e-30 to
1e20, on every ISA path.

Tolerances: torch sums duplicate rows in its own order and (adagrad, sgd) rounds its sparse paths
differently from the dense kernels pyopt runs (pyopt/sparse.py), so the float32 comparisons allow
a few ulps per step (rtol 2e-5 after STEPS steps); float64 ones 1e-12.
"""
from __future__ import annotations

import math
import os
import re
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

import pyopt  # noqa: E402
from refcheck import DTYPES, ISAS  # noqa: E402

torch = pytest.importorskip("torch")

STEPS = 60
NCOLS = (1, 7, 17, 1023)
TOL = {"float32": dict(rtol=2e-5, atol_scale=2e-6), "float64": dict(rtol=1e-12, atol_scale=1e-13)}
OBSERVED: dict[tuple[str, str], float] = {}  # largest relative error seen, by (case, dtype)

TORCH_CLASS = {"sparse_adam": "SparseAdam", "adagrad": "Adagrad", "sgd": "SGD"}
SLOTS = {"sparse_adam": ("exp_avg", "exp_avg_sq"), "adagrad": ("sum",), "sgd": ()}


def draw_hyper(name: str, rng: np.random.Generator, extreme: bool) -> dict:
    """Random hyperparameters; ``extreme``: their edges (eps at its smallest, betas 0 or near 1)."""
    def log(lo: float, hi: float) -> float:
        return float(10.0 ** rng.uniform(math.log10(lo), math.log10(hi)))

    maximize = bool(rng.integers(2))
    if name == "sparse_adam":
        if extreme:
            edges = [0.0, 0.999999]
            return dict(lr=log(1e-4, 1.0), betas=(float(rng.choice(edges)), float(rng.choice(edges))), eps=1e-30,
                        maximize=maximize)
        return dict(lr=log(1e-3, 3e-2), betas=(rng.uniform(0.3, 0.95), rng.uniform(0.9, 0.9995)), eps=log(1e-8, 1e-4),
                    maximize=maximize)
    if name == "adagrad":
        return dict(lr=log(1e-3, 1.0), lr_decay=0.0 if extreme else log(1e-3, 1e-1),
                    initial_accumulator_value=0.0 if extreme else log(1e-2, 1.0),
                    eps=0.0 if extreme else log(1e-10, 1e-6), maximize=maximize)
    momentum = 0.0 if extreme else float(rng.choice([0.0, rng.uniform(0.5, 0.95)]))
    nesterov = momentum > 0 and bool(rng.integers(2))
    return dict(lr=log(1e-3, 1e-1), momentum=momentum, nesterov=nesterov,
                dampening=0.0 if nesterov or momentum == 0 else rng.uniform(0.0, 0.5), maximize=maximize)


def make_steps(rng: np.random.Generator, nrows: int, ncols: int, dtype: type, steps: int, scale: float):
    """Per step (indices, rows): 0 rows at step 3, 1 row at step 4, else up to 2·nrows indices with
    duplicates, in no order."""
    out = []
    for t in range(steps):
        count = 0 if t == 2 else 1 if t == 3 else int(rng.integers(1, 2 * nrows + 1))
        idx = rng.integers(0, nrows, count).astype(rng.choice([np.int64, np.int32]))
        rows = (rng.standard_normal((count, ncols)) * scale).astype(dtype)
        out.append((idx, rows))
    return out


def torch_run(name: str, hyper: dict, param: np.ndarray, steps: list, checkpoint: int):
    """torch.optim's sparse path: (params, states) after ``checkpoint`` steps and at the end."""
    tdtype = torch.float64 if param.dtype == np.float64 else torch.float32
    saved = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(tdtype)
    torch.set_num_threads(1)
    try:
        tp = torch.nn.Parameter(torch.from_numpy(param.copy()))
        opt = getattr(torch.optim, TORCH_CLASS[name])([tp], **hyper)
        snaps = []
        for t, (idx, rows) in enumerate(steps, start=1):
            tp.grad = torch.sparse_coo_tensor(torch.from_numpy(idx.astype(np.int64))[None], torch.from_numpy(rows),
                                              param.shape, check_invariants=True)
            opt.step()
            if t in (checkpoint, len(steps)):
                state = {k: v.to_dense().numpy().copy() for k, v in opt.state[tp].items()
                         if torch.is_tensor(v) and v.dim() > 0}
                snaps.append((tp.detach().numpy().copy(), state))
        return snaps
    finally:
        torch.set_default_dtype(saved[0])
        torch.set_num_threads(saved[1])


def pyopt_run(name: str, hyper: dict, param: np.ndarray, steps: list, checkpoint: int):
    p = param.copy()
    opt = pyopt.create(name, [p], **hyper)
    snaps = []
    for t, (idx, rows) in enumerate(steps, start=1):
        opt.step([pyopt.RowSparse(idx, rows)])
        if t in (checkpoint, len(steps)):
            state = {k: v.copy() for k, v in opt.state[0].items() if isinstance(v, np.ndarray)}
            snaps.append((p.copy(), state))
    return opt, snaps


def assert_close(got: np.ndarray, want: np.ndarray, dtype_name: str, what: str, key: tuple[str, str]) -> None:
    tol = TOL[dtype_name]
    finite = np.isfinite(want)
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{what}: NaN in different places"
    assert np.array_equal(got[~finite & ~np.isnan(want)], want[~finite & ~np.isnan(want)]), f"{what}: infinities differ"
    g, w = got[finite].astype(np.float64), want[finite].astype(np.float64)
    if not w.size:
        return
    scale = float(np.max(np.abs(w))) or 1.0
    err = np.abs(g - w)
    relative = err / (np.abs(w) + tol["atol_scale"] * scale / tol["rtol"])  # (1 at the tolerance's edge · rtol)
    OBSERVED[key] = max(OBSERVED.get(key, 0.0), float(np.max(relative)))
    np.testing.assert_allclose(g, w, rtol=tol["rtol"], atol=tol["atol_scale"] * scale, err_msg=what)


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    if OBSERVED:
        worst: dict[tuple[str, str], float] = {}
        for (case, dtype_name), err in OBSERVED.items():
            k = (case.split("-")[0], dtype_name)
            worst[k] = max(worst.get(k, 0.0), err)
        print("\nrow-sparse: largest relative error per optimizer and dtype:",
              {f"{n}/{d}": f"{e:.2e}" for (n, d), e in sorted(worst.items())})


CASES = [pytest.param(name, d, ncols, seed, isa, id=f"{name}-{d}-cols{ncols}-seed{seed}-{isa}")
         for name in ("sparse_adam", "adagrad", "sgd") for d in DTYPES for ncols in NCOLS for seed in (0, 1, 2)
         for isa in ISAS]


@pytest.mark.parametrize("name, dtype_name, ncols, seed, isa", CASES, indirect=["isa"])
def test_matches_torch_sparse_path(name: str, dtype_name: str, ncols: int, seed: int, isa: str, threads: int) -> None:
    rng = np.random.default_rng([seed, ncols, list(TORCH_CLASS).index(name), 1414])
    dtype = DTYPES[dtype_name]
    hyper = draw_hyper(name, rng, extreme=seed == 1)
    scale = float(rng.choice([1e-30, 1e-3, 1.0, 1e3, 1e20])) if seed == 2 else 1.0
    if dtype is np.float32 and scale < 1e-20:
        scale = 1e-10  # (float32's range)
    nrows = 5 if ncols == 1023 else 13
    param = rng.standard_normal((nrows, ncols)).astype(dtype)
    steps = make_steps(rng, nrows, ncols, dtype, STEPS, scale)
    want = torch_run(name, hyper, param, steps, checkpoint=10)
    _, got = pyopt_run(name, hyper, param, steps, checkpoint=10)
    key = (f"{name}-{ncols}-{seed}-{isa}", dtype_name)
    for (gp, gs), (wp, ws), when in zip(got, want, ("step 10", f"step {STEPS}")):
        assert_close(gp, wp, dtype_name, f"{name} {hyper} param at {when}", key)
        for slot in SLOTS[name]:
            assert_close(gs[slot], ws[slot], dtype_name, f"{name} {hyper} state {slot!r} at {when}", key)


def test_large_table_once(threads: int) -> None:
    """A 100003-row table of one column (rows of one element, runs of consecutive rows), sparse_adam and
    adagrad, float32."""
    rng = np.random.default_rng(100003)
    param = rng.standard_normal((100003, 1)).astype(np.float32)
    steps = [(rng.integers(0, 100003, 30000), rng.standard_normal((30000, 1)).astype(np.float32)) for _ in range(8)]
    for name, hyper in (("sparse_adam", dict(lr=1e-2)), ("adagrad", dict(lr=0.1, lr_decay=0.01))):
        want = torch_run(name, hyper, param, steps, checkpoint=4)
        _, got = pyopt_run(name, hyper, param, steps, checkpoint=4)
        for (gp, gs), (wp, ws) in zip(got, want):
            assert_close(gp, wp, "float32", f"{name} param", (f"{name}-large", "float32"))
            for slot in SLOTS[name]:
                assert_close(gs[slot], ws[slot], "float32", f"{name} {slot}", (f"{name}-large", "float32"))


def test_steps_count_every_step_and_untouched_rows_stay() -> None:
    p = np.arange(12, dtype=np.float64).reshape(4, 3)
    before = p.copy()
    opt = pyopt.SparseAdam([p], lr=0.1)
    opt.step([pyopt.RowSparse(np.zeros(0, np.int64), np.zeros((0, 3)))])
    assert opt.state[0]["step"] == 1 and np.array_equal(p, before)
    opt.step([pyopt.RowSparse([2, 2], np.ones((2, 3)))])
    assert opt.state[0]["step"] == 2
    assert np.array_equal(p[[0, 1, 3]], before[[0, 1, 3]]) and not np.array_equal(p[2], before[2])
    assert np.array_equal(opt.state[0]["exp_avg"][[0, 1, 3]], np.zeros((3, 3)))


@pytest.mark.parametrize("name", ["sparse_adam", "adagrad", "sgd", "rowwise_adagrad"])
def test_row_sparse_equals_dense_where_the_rule_is_lazy_in_effect(name: str) -> None:
    """A RowSparse of every row (duplicates summed) steps as the dense gradient does, bit for bit:
    the same kernel on the same values."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal((6, 17)).astype(np.float32)
    b = a.copy()
    oa, ob = pyopt.create(name, [a], lr=0.05), pyopt.create(name, [b], lr=0.05)
    for _ in range(5):
        rows = rng.standard_normal((6, 17)).astype(np.float32)
        perm = rng.permutation(6)
        oa.step([rows])
        ob.step([pyopt.RowSparse(perm, rows[perm])])
    assert np.array_equal(a, b)


def test_duplicates_are_summed() -> None:
    a, b = np.ones((3, 2)), np.ones((3, 2))
    oa, ob = pyopt.Adagrad([a], lr=0.1), pyopt.Adagrad([b], lr=0.1)
    oa.step([pyopt.RowSparse([1, 0, 1], [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])])
    ob.step([pyopt.RowSparse([0, 1], [[3.0, 4.0], [6.0, 8.0]])])
    assert np.array_equal(a, b) and np.array_equal(oa.state[0]["sum"], ob.state[0]["sum"])


# ----- the in-place row step (_core.apply_rows) against gather -> _core.apply -> scatter -------------
def bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint64 if a.dtype == np.float64 else np.uint32)


def gather_apply_scatter(name: str, flat: list, p: np.ndarray, states: dict, grad: "pyopt.RowSparse",
                         step: int) -> None:
    """The row step as numpy gathers it: the present rows of the param and its states copied into
    contiguous blocks, the rule's element kernel on them (_core.apply), copied back."""
    from pyopt import _core

    rows = grad.indices
    if not rows.size:
        return
    slots = [slot for slot, _ in _core.slots_needed(name, flat)]
    block, blocks = p[rows], [states[slot][rows] for slot in slots]
    _core.apply(name, block, grad.rows, blocks, step, flat, np.zeros(_core.MAX_SCALARS), None, -1)
    p[rows] = block
    for slot, values in zip(slots, blocks):
        states[slot][rows] = values


@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("ncols", NCOLS)
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("name", ["sparse_adam", "adagrad", "sgd"])
def test_in_place_rows_match_gather_step_scatter_bit_for_bit(name: str, dtype_name: str, ncols: int, isa: str,
                                                               nthreads: int) -> None:
    """opt.step(RowSparse) steps the listed rows in place, threaded over rows; every element gets
    the bits of the element kernel on the gathered rows. Enough touched elements (> 2**15) that two
    threads share the rows; runs of consecutive rows, duplicates, NaN/Inf, extreme hyperparameters."""
    from pyopt import _core
    from refcheck import num_threads

    dtype = DTYPES[dtype_name]
    rng = np.random.default_rng([ncols, list(TORCH_CLASS).index(name), np.dtype(dtype).itemsize, 1415])
    nrows = max(40, 3 * 2**15 // ncols)
    hyper = draw_hyper(name, rng, extreme=bool(rng.integers(2)))
    if name == "sgd":  # with momentum torch's sparse SGD is dense SGD (pyopt/sparse.py)
        hyper.update(momentum=0.0, nesterov=False, dampening=0.0)
    param = rng.standard_normal((nrows, ncols)).astype(dtype)
    model_p = param.copy()
    with num_threads(nthreads):
        opt = pyopt.create(name, [param], **hyper)
        flat = opt._flat_hypers()[0]
        model_states = {slot: np.full(param.shape, init, dtype) for slot, init in _core.slots_needed(name, flat)}
        for t in range(1, 6):
            count = 0 if t == 2 else int(rng.integers(nrows // 2, 2 * nrows))
            idx = rng.integers(0, nrows, count)
            if t == 3:
                idx = np.concatenate([idx, np.arange(nrows // 3, nrows // 3 + 30)])  # a run of consecutive rows
            rows = rng.standard_normal((idx.size, ncols)).astype(dtype)
            if t == 4:
                rows.flat[rng.integers(0, rows.size, 3)] = [np.nan, np.inf, -np.inf]
            opt.step([pyopt.RowSparse(idx, rows)])
            grad = pyopt.RowSparse(idx, rows).coalesced(model_p, "grad")
            gather_apply_scatter(name, flat, model_p, model_states, grad, t)
            assert np.array_equal(bits(param), bits(model_p)), f"{name} {hyper} param at step {t}"
            for slot, values in model_states.items():
                assert np.array_equal(bits(opt.state[0][slot]), bits(values)), f"{name} {hyper} {slot} at step {t}"


def _apply_rows_args():
    from pyopt import _core

    p = np.arange(15, dtype=np.float64).reshape(5, 3)
    states = [np.zeros_like(p), np.ones_like(p)]
    return p, states, dict(step=1, hyper=pyopt.SparseAdam([p.copy()])._flat_hypers()[0],
                           scalars=np.zeros(_core.MAX_SCALARS))


@pytest.mark.parametrize("change, error, words", [
    (dict(indices=np.array([1, 5])), ValueError, "row 5 is out of range"),
    (dict(indices=np.array([-1, 2])), ValueError, "row -1 is out of range"),
    (dict(indices=np.array([2, 1])), ValueError, "sorted and unique"),
    (dict(indices=np.array([1, 1])), ValueError, "sorted and unique"),
    (dict(indices=np.array([1, 2], np.int32)), TypeError, "int64"),
    (dict(indices=np.array([[1, 2]])), ValueError, "1-D"),
    (dict(indices=np.array([0, 1, 2, 3])[::2]), ValueError, "C-contiguous"),
    (dict(rows=np.ones((2, 4))), ValueError, "shape (2, 3)"),
    (dict(rows=np.ones((3, 3))), ValueError, "shape (2, 3)"),
    (dict(rows=np.ones((2, 6))[:, ::2]), ValueError, "C-contiguous"),
    (dict(rows=np.ones((2, 3), np.float32)), TypeError, "does not match"),
    (dict(states=[np.zeros((5, 2)), np.ones((5, 3))]), ValueError, "shape"),
    (dict(states=[np.zeros((5, 3), np.float32), np.ones((5, 3))]), TypeError, "dtype"),
    (dict(states=[np.zeros((5, 3))]), ValueError, "takes 2 state arrays"),
    (dict(step=0), ValueError, "step must be >= 1"),
])
def test_apply_rows_refuses_bad_input_before_writing(change: dict, error, words: str) -> None:
    """The C++ entry checks on its own (bounds above all: an index out of range never writes)."""
    from pyopt import _core

    p, states, kw = _apply_rows_args()
    args = dict(indices=np.array([1, 3]), rows=np.ones((2, 3)), states=states, **kw)
    args.update(change)
    before = p.copy(), [s.copy() for s in args["states"]]
    with pytest.raises(error, match=re.escape(words)):
        _core.apply_rows("sparse_adam", p, args["indices"], args["rows"], args["states"], args["step"],
                         args["hyper"], args["scalars"])
    assert np.array_equal(p, before[0]) and all(np.array_equal(s, b) for s, b in zip(args["states"], before[1]))


def test_apply_rows_indices_aliasing_a_state_are_read_before_the_step() -> None:
    """Indices in a state array the step overwrites: the entry steps the rows they held when checked."""
    from pyopt import _core

    p, states, kw = _apply_rows_args()
    states[0][3, :2] = np.array([1, 3], np.int64).view(np.float64)  # in row 3 of exp_avg, which steps
    idx = states[0].view(np.int64)[3, :2]
    expected_p, expected_states = p.copy(), [s.copy() for s in states]
    gather_apply_scatter("sparse_adam", kw["hyper"], expected_p, dict(zip(("exp_avg", "exp_avg_sq"), expected_states)),
                         pyopt.RowSparse(np.array([1, 3]), np.ones((2, 3))).coalesced(p, "grad"), 1)
    _core.apply_rows("sparse_adam", p, idx, np.ones((2, 3)), states, **kw)
    assert not np.array_equal(states[0].view(np.int64)[3, :2], [1, 3])  # the step overwrote them
    assert np.array_equal(p, expected_p) and all(np.array_equal(s, e) for s, e in zip(states, expected_states))


def test_apply_rows_refuses_aliases_and_whole_tensor_rules() -> None:
    from pyopt import _core

    p, states, kw = _apply_rows_args()
    before = p.copy()

    def call(param, idx, rows, st, name="sparse_adam", **over):
        _core.apply_rows(name, param, idx, rows, st, **{**kw, **over})

    with pytest.raises(ValueError, match="rows share memory"):
        call(p, np.array([0]), p[1:2], states)
    with pytest.raises(ValueError, match="2-D"):
        call(np.ones(4), np.array([0]), np.ones((1, 1)), [np.zeros(4), np.ones(4)])
    with pytest.raises(ValueError, match="cannot step rows"):
        call(p, np.array([1]), np.ones((1, 3)), [np.zeros_like(p), np.zeros_like(p)], name="lamb",
             hyper=pyopt.create("lamb", [p.copy()])._flat_hypers()[0])
    assert np.array_equal(p, before) and np.all(states[0] == 0) and np.all(states[1] == 1)


# ----- rowwise_adagrad against a float64 model of FBGEMM's EXACT_ROWWISE_ADAGRAD ----------------------
def fbgemm_rowwise_adagrad(p: np.ndarray, acc: np.ndarray, idx: np.ndarray, rows: np.ndarray, lr: float, eps: float,
                           maximize: bool) -> None:
    """FBGEMM's rowwise_adagrad (fbgemm_gpu/codegen/genscript/optimizers.py), weight_decay_mode 0,
    in float64: the backward sums duplicate indices, then per unique row
    momentum1 += sum(g²)/D; multiplier = lr / (sqrt(momentum1) + eps); weight -= multiplier·g."""
    grad = np.zeros_like(p)
    np.add.at(grad, idx, rows.astype(np.float64))
    if maximize:
        grad = -grad
    for r in np.unique(idx):
        g = grad[r]
        acc[r] += np.sum(g * g) / g.size
        p[r] -= lr / (np.sqrt(acc[r]) + eps) * g


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("ncols", NCOLS)
@pytest.mark.parametrize("seed", [0, 1])
def test_rowwise_adagrad_matches_fbgemm_model(dtype_name: str, ncols: int, seed: int) -> None:
    rng = np.random.default_rng([seed, ncols, 77])
    dtype = DTYPES[dtype_name]
    lr, eps = float(10 ** rng.uniform(-3, 0)), (0.0 if seed else float(10 ** rng.uniform(-10, -4)))
    maximize = bool(seed)
    nrows = 9
    param = rng.standard_normal((nrows, ncols)).astype(dtype)
    steps = make_steps(rng, nrows, ncols, dtype, STEPS, 1.0)
    p = param.copy()
    opt = pyopt.RowwiseAdagrad([p], lr=lr, eps=eps, maximize=maximize)
    model_p, model_acc = param.astype(np.float64), np.zeros(nrows)
    for t, (idx, rows) in enumerate(steps, start=1):
        if t % 7 == 0:  # a dense gradient now and then: every row steps
            dense = np.zeros_like(p)
            np.add.at(dense, idx, rows)
            opt.step([dense])
            idx, rows = np.arange(nrows), dense
        else:
            opt.step([pyopt.RowSparse(idx, rows)])
        fbgemm_rowwise_adagrad(model_p, model_acc, idx, rows, lr, eps, maximize)
    key = (f"rowwise_adagrad-{ncols}-{seed}", dtype_name)
    tol = {"float32": 1e-4, "float64": 1e-12}[dtype_name]  # float32 rounding compounds over STEPS steps
    rel_p = np.max(np.abs(p - model_p)) / np.max(np.abs(model_p))
    rel_acc = np.max(np.abs(opt.state[0]["sum"] - model_acc)) / max(np.max(model_acc), 1e-300)
    OBSERVED[key] = max(rel_p, rel_acc)
    assert rel_p <= tol and rel_acc <= tol, (rel_p, rel_acc)
    assert opt.state[0]["sum"].shape == (nrows,) and opt.state[0]["step"] == STEPS


# ----- checkpoints -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sparse_adam", "adagrad", "sgd", "momentum", "rowwise_adagrad"])
def test_save_load_mid_run_resumes_identically(name: str, tmp_path) -> None:
    rng = np.random.default_rng(5)
    a = rng.standard_normal((11, 7))
    steps = make_steps(rng, 11, 7, np.float64, 20, 1.0)
    opt = pyopt.create(name, [a], lr=0.05)
    for idx, rows in steps[:10]:
        opt.step([pyopt.RowSparse(idx, rows)])
    pyopt.save(opt, tmp_path / "ckpt.npz")
    b = a.copy()
    resumed = pyopt.load(tmp_path / "ckpt.npz", [b])
    for idx, rows in steps[10:]:
        opt.step([pyopt.RowSparse(idx, rows)])
        resumed.step([pyopt.RowSparse(idx, rows)])
    assert np.array_equal(a, b)
    for k, v in opt.state[0].items():
        assert np.array_equal(v, resumed.state[0][k]), k


# ----- bad input ---------------------------------------------------------------------------------------
def _stepped_pair():
    p, q = np.ones((4, 3), np.float32), np.ones(5, np.float32)
    opt = pyopt.SparseAdam({"emb": p, "bias": q}, lr=0.1)
    opt.step({"emb": pyopt.RowSparse([1], np.ones((1, 3), np.float32)), "bias": np.ones(5, np.float32)})
    return opt, p, q


@pytest.mark.parametrize("grad, error, words", [
    (pyopt.RowSparse(np.array([1.0]), np.ones((1, 3))), TypeError, "indices must be integers"),
    (pyopt.RowSparse([-1], np.ones((1, 3))), ValueError, "index -1 is out of range"),
    (pyopt.RowSparse([4], np.ones((1, 3))), ValueError, "index 4 is out of range"),
    (pyopt.RowSparse([[1]], np.ones((1, 3))), ValueError, "indices must be 1-D"),
    (pyopt.RowSparse([1, 2], np.ones((1, 3))), ValueError, "rows have shape (1, 3), expected (2, 3)"),
    (pyopt.RowSparse([1], np.ones((1, 4))), ValueError, "expected (1, 3)"),
    (pyopt.RowSparse([1], np.ones((1, 3), complex)), TypeError, "not a real number type"),
    (pyopt.RowSparse([1], np.array([["a", "b", "c"]])), TypeError, "not a real number type"),
])
def test_bad_row_sparse_is_refused_before_any_change(grad, error, words: str) -> None:
    opt, p, q = _stepped_pair()
    before = p.copy(), q.copy(), {k: np.copy(v) for k, v in opt.state[0].items()}
    with pytest.raises(error, match=r"the gradient of params\['emb'\]") as info:
        opt.step({"emb": grad, "bias": np.ones(5, np.float32)})
    assert words in str(info.value)
    assert np.array_equal(p, before[0]) and np.array_equal(q, before[1])
    assert all(np.array_equal(v, before[2][k]) for k, v in opt.state[0].items())


def test_a_bad_dense_gradient_beside_a_row_sparse_one_changes_nothing() -> None:
    opt, p, q = _stepped_pair()
    before = p.copy(), q.copy(), opt.state[0]["step"]
    with pytest.raises(ValueError, match="bias"):
        opt.step({"emb": pyopt.RowSparse([2], np.ones((1, 3), np.float32)), "bias": np.ones(6, np.float32)})
    assert np.array_equal(p, before[0]) and np.array_equal(q, before[1]) and opt.state[0]["step"] == before[2]


@pytest.mark.parametrize("make, error, words", [
    (lambda p: pyopt.Adam([p]), TypeError, "adam does not take"),
    (lambda p: pyopt.Muon([p]), TypeError, "muon does not take"),
    (lambda p: pyopt.Adagrad([p], weight_decay=0.1), ValueError, "weight_decay must be 0"),
    (lambda p: pyopt.SGD([p], lr=0.1, weight_decay=0.1), ValueError, "weight_decay must be 0"),
    (lambda p: pyopt.SparseAdam([p], state_dtype="bfloat16"), ValueError, "storage options"),
    (lambda p: pyopt.RowwiseAdagrad([p[0, 0, ...]]), ValueError, "a 0-d param has none"),
])
def test_optimizers_and_options_that_refuse_row_sparse(make, error, words: str) -> None:
    p = np.ones((4, 3), np.float32)
    before = p.copy()
    with pytest.raises(error, match=words) as info:
        make(p).step([pyopt.RowSparse([1], np.ones((1, 3), np.float32))])
    if error is TypeError:
        assert "sparse_adam, adagrad, rowwise_adagrad and sgd" in str(info.value)
    assert np.array_equal(p, before)


def test_clipping_options_refuse_row_sparse() -> None:
    p = np.ones((4, 3))
    with pytest.raises(ValueError, match="clip_norm"):
        pyopt.SparseAdam([p]).step([pyopt.RowSparse([1], np.ones((1, 3)))], clip_norm=1.0)
    assert np.array_equal(p, np.ones((4, 3)))


@pytest.mark.parametrize("name", ["sparse_adam", "rowwise_adagrad"])
def test_one_dimensional_param_refuses_row_sparse(name: str) -> None:
    p = np.ones(4)
    with pytest.raises(ValueError, match="2-D param"):
        pyopt.create(name, [p]).step([pyopt.RowSparse([1], np.ones((1, 1)))])
    assert np.array_equal(p, np.ones(4))


def test_rowwise_adagrad_on_a_vector_is_elementwise_adagrad() -> None:
    """Rows along axis 0: a 1-D param has one element per row, so it steps as Adagrad (no lr_decay)."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal(17)
    b = a.copy()
    oa, ob = pyopt.RowwiseAdagrad([a], lr=0.1, eps=1e-10), pyopt.Adagrad([b], lr=0.1, eps=1e-10)
    for _ in range(20):
        g = rng.standard_normal(17)
        oa.step([g])
        ob.step([g])
    np.testing.assert_allclose(a, b, rtol=1e-14)
    np.testing.assert_allclose(oa.state[0]["sum"], ob.state[0]["sum"], rtol=1e-15)


# ----- pyopt.torch: nn.Embedding(sparse=True) ----------------------------------------------------------
@pytest.mark.parametrize("cls, hyper", [("SparseAdam", dict(lr=1e-2)), ("Adagrad", dict(lr=0.1, lr_decay=0.01)),
                                        ("SGD", dict(lr=0.1)), ("SGD", dict(lr=0.1, momentum=0.9))])
def test_torch_adapter_trains_a_sparse_embedding_as_torch(cls: str, hyper: dict, one_torch_thread) -> None:
    import pyopt.torch

    torch.manual_seed(0)
    models = [torch.nn.EmbeddingBag(50, 8, mode="sum", sparse=True) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    opts = [getattr(pyopt.torch, cls)(models[0].parameters(), **hyper),
            getattr(torch.optim, cls)(models[1].parameters(), **hyper)]
    gen = torch.Generator().manual_seed(1)
    for _ in range(30):
        x = torch.randint(0, 50, (16, 4), generator=gen)  # repeated ids: duplicate rows in the grad
        target = torch.randn(16, 8, generator=gen)
        for model, opt in zip(models, opts):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), target).backward()
            assert model.weight.grad.is_sparse
            opt.step()
    torch.testing.assert_close(models[0].weight, models[1].weight, rtol=2e-5, atol=2e-6)


# ----- docs/torch.md, "Sparse embedding gradients" -----------------------------------------------------
def test_docs_examples_print_what_they_say(capsys) -> None:
    import markdown

    docs = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "torch.md")
    if not os.path.exists(docs):
        pytest.skip("needs the source tree")
    text = open(docs, encoding="utf-8").read()
    exec(compile(markdown.block_containing(text, "python", "SparseAdam(emb", "docs/torch.md"), "docs/torch.md", "exec"),
         {"__name__": "__docs__"})
    looked_up, changed = map(int, re.findall(r"rows looked up: (\d+), rows changed: (\d+)", capsys.readouterr().out)[0])
    assert looked_up == changed and 0 < changed < 10_000
    exec(compile(markdown.block_containing(text, "python", "RowwiseAdagrad({", "docs/torch.md"), "docs/torch.md",
                 "exec"), {"__name__": "__docs__"})
    assert capsys.readouterr().out.strip() == "[ 3 17] (1000,)"


@pytest.mark.parametrize("first, second", [("pyopt", "torch"), ("torch", "pyopt")])
def test_torch_adapter_sparse_adam_checkpoints_load_into_torch_and_back(first: str, second: str,
                                                                         one_torch_thread) -> None:
    """Half a run with one side, its state_dict loaded into the other, the rest there: the run of
    torch.optim.SparseAdam alone (float32 rounding of the duplicate sums apart)."""
    import copy

    import pyopt.torch

    make = {"pyopt": pyopt.torch.SparseAdam, "torch": torch.optim.SparseAdam}
    torch.manual_seed(0)
    emb = torch.nn.EmbeddingBag(30, 4, mode="sum", sparse=True)
    ref = copy.deepcopy(emb)
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randint(0, 30, (8, 3), generator=gen), torch.randn(8, 4, generator=gen)) for _ in range(12)]

    def one_step(model, opt, batch):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(batch[0]), batch[1]).backward()
        opt.step()

    opt, ref_opt = make[first](emb.parameters(), lr=0.01), torch.optim.SparseAdam(ref.parameters(), lr=0.01)
    for batch in batches[:6]:
        one_step(emb, opt, batch)
        one_step(ref, ref_opt, batch)
    resumed = make[second](emb.parameters(), lr=0.01)
    resumed.load_state_dict(opt.state_dict())
    for batch in batches[6:]:
        one_step(emb, resumed, batch)
        one_step(ref, ref_opt, batch)
    assert not torch.equal(emb.weight, torch.zeros_like(emb.weight))
    torch.testing.assert_close(emb.weight, ref.weight, rtol=1e-5, atol=1e-6)
    assert float(resumed.state_dict()["state"][0]["step"]) == 12
