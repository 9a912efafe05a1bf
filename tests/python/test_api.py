"""The Python API of SPEC §3: params forms, groups, grads forms, state, checkpoints, info."""
import inspect
import json
import os

import numpy as np
import pytest

import pyopt
from pyopt._spec import spec
from pyopt.optimizers import CLASSES

RNG = np.random.default_rng(1234)


def params_like(dtype=np.float32):
    return {
        "w": RNG.standard_normal((17, 9)).astype(dtype),
        "b": RNG.standard_normal(9).astype(dtype),
        "s": RNG.standard_normal(()).astype(dtype).reshape(()),
    }


def grads_like(params, rng):
    return {k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in params.items()}


def copy(params):
    return {k: v.copy() for k, v in params.items()}


def run(opt, params, steps, seed):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        opt.step(grads_like(params, rng))


def test_available_matches_classes_and_create():
    """available() is every name create() accepts: the C++ rules (CLASSES), then the Python ones."""
    assert pyopt._spec.rule_optimizers() == list(CLASSES)
    python_written = [n for n in pyopt.available() if n not in CLASSES]
    assert pyopt.available() == list(CLASSES) + python_written
    assert {"muon", "adafactor", "lbfgs"} <= set(python_written)
    for name in pyopt.available():
        cls = getattr(pyopt, pyopt._spec.record(name).class_name)
        assert isinstance(pyopt.create(name, [np.zeros((3, 2))]), cls), name
    with pytest.raises(ValueError, match="unknown optimizer 'adamz'; available: sgd, .*muon"):
        pyopt.create("adamz", [np.zeros(3)])


@pytest.mark.parametrize("name", list(CLASSES))
def test_class_signature_defaults_match_the_core(name):
    """The C++ rule is the one source of defaults; the Python signatures must agree with it."""
    sig = inspect.signature(CLASSES[name].__init__)
    storage = {"master_weights": False, "state_dtype": "float32", "stochastic_rounding": False}
    extras = getattr(CLASSES[name], "_extra_keywords", {})  # (not hyperparameters: MARS's mars_type)
    shown = {k: p.default for k, p in sig.parameters.items() if k not in ("self", "params", *storage, *extras)}
    assert shown == spec(name).defaults
    assert {k: sig.parameters[k].default for k in storage} == storage
    group = pyopt.create(name, [np.zeros(2)]).param_groups[0]
    assert {k: v for k, v in group.items() if k != "params"} == spec(name).defaults


def test_params_as_list_dict_array_and_groups_give_the_same_result():
    base = params_like()
    forms = {
        "dict": copy(base),
        "list": copy(base),
        "groups": copy(base),
    }
    opts = {
        "dict": pyopt.AdamW(forms["dict"], lr=1e-2),
        "list": pyopt.AdamW(list(forms["list"].values()), lr=1e-2),
        "groups": pyopt.AdamW([{"params": [forms["groups"]["w"]]}, {"params": [forms["groups"]["b"], forms["groups"]["s"]]}],
                              lr=1e-2),
    }
    rng = np.random.default_rng(5)
    for _ in range(20):
        g = grads_like(base, rng)
        opts["dict"].step(g)
        opts["list"].step(list(g.values()))
        opts["groups"].step(tuple(g.values()))
    for form in ("list", "groups"):
        for k in base:
            np.testing.assert_array_equal(forms["dict"][k], forms[form][k])
    single = base["w"].copy()
    opt = pyopt.SGD(single, lr=0.5)
    opt.step(np.ones_like(single))
    np.testing.assert_allclose(single, base["w"] - 0.5, rtol=1e-6)


def test_param_groups_have_their_own_hyperparameters():
    frozen, trained = np.ones(5), np.ones(5)
    opt = pyopt.SGD([{"params": [frozen], "lr": 0.0}, {"params": [trained]}], lr=0.1)
    opt.step([np.ones(5), np.ones(5)])
    np.testing.assert_array_equal(frozen, 1.0)
    np.testing.assert_allclose(trained, 0.9)
    opt.add_param_group({"params": [np.ones(2)], "lr": 1.0})
    assert len(opt.param_groups) == 3 and opt.param_groups[2]["momentum"] == 0.0
    opt.step([None, None, np.ones(2)])
    assert opt.state[2]["step"] == 1 and opt.state[1]["step"] == 1


def test_editing_param_groups_between_steps_takes_effect():
    a, b = np.ones(4), np.ones(4)
    opt_a = pyopt.Adam([a], lr=0.1)
    opt_b = pyopt.Adam([b], lr=0.1)
    rng = np.random.default_rng(0)
    for step in range(10):
        g = rng.standard_normal(4)
        for group in opt_a.param_groups:
            group["lr"] = 0.1 / (step + 1)
            group["betas"] = (0.8, 0.99)
        opt_a.step([g])
        opt_b.param_groups[0].update(lr=0.1 / (step + 1), betas=(0.8, 0.99))
        opt_b.step([g])
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, 1.0)


def test_amsgrad_switched_on_later_allocates_its_state():
    w = np.ones(3)
    opt = pyopt.Adam([w])
    opt.step([np.ones(3)])
    assert "max_exp_avg_sq" not in opt.state[0]
    opt.param_groups[0]["amsgrad"] = True
    opt.step([np.ones(3)])
    assert "max_exp_avg_sq" in opt.state[0]


def test_none_grad_skips_a_param():
    a, b = np.ones(3), np.ones(3)
    opt = pyopt.Adam([a, b], lr=0.1)
    opt.step([np.ones(3), None])
    np.testing.assert_array_equal(b, 1.0)
    assert opt.state[0]["step"] == 1 and opt.state[1]["step"] == 0


def test_grads_are_converted_when_needed():
    """float64, lists, non-contiguous and integer gradients give the same step as the exact array."""
    ref, other = np.ones((4, 4), np.float32), np.ones((4, 4), np.float32)
    g = np.arange(16, dtype=np.float32).reshape(4, 4)
    for convert in (lambda x: x.astype(np.float64), lambda x: x.tolist(), lambda x: np.asfortranarray(x),
                    lambda x: x.astype(np.int64)):
        ref[...] = other[...] = 1
        pyopt.SGD([ref], lr=0.1).step([g])
        pyopt.SGD([other], lr=0.1).step([convert(g)])
        np.testing.assert_array_equal(ref, other)


def test_mixed_dtypes_and_empty_arrays_in_one_optimizer():
    a, b, e = np.ones(5, np.float32), np.ones(5, np.float64), np.ones((0, 3), np.float32)
    opt = pyopt.AdamW([a, b, e], lr=0.1)
    opt.step([np.ones(5), np.ones(5), np.ones((0, 3))])
    np.testing.assert_allclose(a, b, rtol=1e-6)
    assert a.dtype == np.float32 and b.dtype == np.float64


@pytest.mark.parametrize("name", list(CLASSES))
def test_state_dict_resume_continues_the_same_trajectory(name):
    extra = {"amsgrad": True} if name in ("adam", "adamw") else {}
    p1 = params_like(np.float64)
    opt1 = pyopt.create(name, p1, lr=1e-2, **extra)
    run(opt1, p1, 7, seed=1)
    p2 = copy(p1)
    sd = json.loads(json.dumps(opt1.state_dict(), default=lambda a: a.tolist()))  # arrays survive as lists
    opt2 = pyopt.create(name, p2)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == 1e-2
    run(opt1, p1, 5, seed=2)
    run(opt2, p2, 5, seed=2)
    for k in p1:
        np.testing.assert_array_equal(p1[k], p2[k])


def test_state_dict_returns_copies():
    w = np.ones(3)
    opt = pyopt.Adam([w])
    opt.step([np.ones(3)])
    sd = opt.state_dict()
    sd["state"][0]["exp_avg"][:] = 42
    assert not np.any(opt.state[0]["exp_avg"] == 42)


@pytest.mark.parametrize("name", ["adamw", "nadam", "sgd", "rmsprop"])
def test_save_and_load_npz(tmp_path, name):
    extra = {"momentum": 0.9, "centered": True} if name == "rmsprop" else ({"momentum": 0.9} if name == "sgd" else {})
    p1 = params_like(np.float32)
    groups = [{"params": {"w": p1["w"]}, "lr": 3e-3}, {"params": {"b": p1["b"], "s": p1["s"]}, "weight_decay": 0.0}]
    opt1 = pyopt.create(name, groups, **extra)
    run(opt1, p1, 6, seed=3)
    path = tmp_path / "opt.npz"
    pyopt.save(opt1, path)
    assert sorted(os.listdir(tmp_path)) == ["opt.npz"]  # written atomically, nothing left behind
    with np.load(path, allow_pickle=False) as data:
        assert "state/0/exp_avg" in data.files or name in ("sgd", "rmsprop")
    p2 = copy(p1)
    opt2 = pyopt.load(path, p2)
    assert type(opt2) is type(opt1)
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt1.param_groups]
    run(opt1, p1, 4, seed=4)
    run(opt2, p2, 4, seed=4)
    for k in p1:
        np.testing.assert_array_equal(p1[k], p2[k])


def test_load_rejects_wrong_params(tmp_path):
    w = np.ones(3)
    opt = pyopt.Adam([w])
    opt.step([np.ones(3)])
    pyopt.save(opt, tmp_path / "c.npz")
    with pytest.raises(ValueError, match="1 params, got 2"):
        pyopt.load(tmp_path / "c.npz", [np.ones(3), np.ones(3)])
    with pytest.raises(ValueError, match="shape"):
        pyopt.load(tmp_path / "c.npz", [np.ones(4)])
    np.savez(tmp_path / "other.npz", x=np.ones(2))
    with pytest.raises(ValueError, match="not a pyopt checkpoint"):
        pyopt.load(tmp_path / "other.npz", [np.ones(3)])


def test_threads_give_identical_results():
    n = 300_000  # above the serial threshold, so the parallel region runs
    results = []
    for threads in (1, 2):
        pyopt.set_num_threads(threads)
        w = np.linspace(-1, 1, n, dtype=np.float32)
        opt = pyopt.AdamW([w, w[:1000].copy()], lr=1e-2)
        run_rng = np.random.default_rng(0)
        for _ in range(3):
            opt.step([run_rng.standard_normal(n).astype(np.float32), np.ones(1000, np.float32)])
        results.append(w)
    pyopt.set_num_threads(os.cpu_count() or 1)
    np.testing.assert_array_equal(results[0], results[1])


def test_info_and_env_controls(python_child):
    info = pyopt.info()
    assert {"version", "isa", "isa_available", "num_threads", "compiler"} <= set(info)
    assert info["version"] == pyopt.__version__
    assert info["isa"] in info["isa_available"] and info["isa_available"][0] == "baseline"
    code = "import json, pyopt; print(json.dumps(pyopt.info()))"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYOPT_ISA": "baseline"}
    out = python_child("-c", code, env=env, check=True)
    child = json.loads(out.stdout.strip().splitlines()[-1])
    assert child["num_threads"] == 1 and child["isa"] == "baseline"
    env["PYOPT_ISA"] = "sse9"
    bad = python_child("-c", code, env=env)
    assert bad.returncode != 0 and "unknown ISA 'sse9'" in bad.stderr


def test_set_isa_caps_the_choice():
    original = pyopt.info()["isa"]
    try:
        for name in pyopt.info()["isa_available"]:
            pyopt.set_isa(name)
            assert pyopt.info()["isa"] == name
        pyopt.set_isa("scalar")  # the SPEC's name for the baseline build
        assert pyopt.info()["isa"] == "baseline"
    finally:
        pyopt.set_isa(original)


def test_import_does_not_load_optional_modules(python_child):
    code = "import sys, pyopt; print(sorted(m for m in ('torch', 'optuna', 'pyopt.demo') if m in sys.modules))"
    out = python_child("-c", code, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_typing_files_ship():
    root = os.path.dirname(pyopt.__file__)
    assert os.path.exists(os.path.join(root, "py.typed"))
    assert os.path.exists(os.path.join(root, "_core.pyi"))


def test_functional_matches_the_class():
    w1 = RNG.standard_normal(33).astype(np.float32)
    w2 = w1.copy()
    m, v = np.zeros_like(w2), np.zeros_like(w2)
    opt = pyopt.AdamW([w1], lr=1e-2, weight_decay=0.1)
    rng = np.random.default_rng(9)
    for t in range(1, 20):
        g = rng.standard_normal(33).astype(np.float32)
        opt.step([g])
        pyopt.functional.adamw_(w2, g, m, v, step=t, lr=1e-2, weight_decay=0.1)
    np.testing.assert_array_equal(w1, w2)
    np.testing.assert_array_equal(opt.state[0]["exp_avg"], m)
    assert pyopt.functional.state_slots("adam", amsgrad=True) == [
        ("exp_avg", 0.0), ("exp_avg_sq", 0.0), ("max_exp_avg_sq", 0.0)]


@pytest.mark.parametrize("name, extra", [("adamw", {"amsgrad": True}), ("nadam", {"decoupled_weight_decay": True,
                                                                                 "weight_decay": 0.1}),
                                         ("rmsprop", {"centered": True, "momentum": 0.5}), ("radam", {})])
def test_every_isa_and_thread_count_gives_the_same_bits(name, extra):
    """Fused multiply-adds are explicit (no compiler contraction), so the vector body, the tail and
    the chunking round alike: every thread count gives the same bits on every ISA path, and the
    paths with FMA (avx2, avx512) give the same bits as each other. The baseline path has no FMA,
    rounds those multiply-adds twice and differs by ulps."""
    sizes = [1, 7, 17, 1023, 100003, 33]
    original_isa = pyopt.info()["isa"]
    isas = pyopt.info()["isa_available"]
    results = {}
    try:
        for isa in isas:
            for threads in (1, 2):
                pyopt.set_isa(isa)
                pyopt.set_num_threads(threads)
                rng = np.random.default_rng(42)
                params = [rng.standard_normal(n).astype(np.float32) for n in sizes]
                opt = pyopt.create(name, params, lr=1e-2, **extra)
                for _ in range(5):
                    opt.step([rng.standard_normal(n).astype(np.float32) for n in sizes])
                results[(isa, threads)] = np.concatenate(params)
    finally:
        pyopt.set_isa(original_isa)
        pyopt.set_num_threads(os.cpu_count() or 1)
    for isa in isas:
        np.testing.assert_array_equal(results[(isa, 2)], results[(isa, 1)], err_msg=f"{isa}: 2 threads vs 1")
    fma = [isa for isa in ("avx2", "avx512") if isa in isas]
    for isa in fma[1:]:
        np.testing.assert_array_equal(results[(isa, 1)], results[(fma[0], 1)], err_msg=f"{isa} vs {fma[0]}")
    for isa in isas:  # the paths differ in rounding only
        np.testing.assert_allclose(results[(isa, 1)], results[(isas[0], 1)], rtol=1e-5, atol=1e-5, err_msg=isa)


def test_hyperparameter_edits_refresh_the_engine_without_rebuilding_it():
    w = np.ones(4)
    opt = pyopt.Adam([w], lr=0.1)
    opt.step([np.ones(4)])
    engine = opt._engine
    opt.param_groups[0]["lr"] = 0.0
    before = w.copy()
    opt.step([np.ones(4)])
    assert opt._engine is engine  # same engine, new lr
    np.testing.assert_array_equal(w, before)  # lr = 0 took effect
    opt.param_groups[0].update(amsgrad=True)  # needs a new state slot: rebuilt
    opt.step([np.ones(4)])
    assert opt._engine is not engine and "max_exp_avg_sq" in opt.state[0]
