"""The C++ package: C++ steps equal Python steps bit for bit, checkpoints cross between the two
languages, and outside CMake projects consume pyopt::pyopt (find_package and add_subdirectory).

All C++ comes from one session build (conftest.py cpp_build) plus small consumer projects."""
import json
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

import pyopt
from cpp_tools import ROOT, configure_and_build, env, tool

pytestmark = pytest.mark.skipif(not (ROOT / "CMakeLists.txt").exists(), reason="needs the source tree")

NAMES = pyopt._spec.rule_optimizers()
SHAPES = [((7,), np.float32), ((3, 5), np.float64), ((33,), np.float32), ((2, 2, 3), np.float64)]


def random_hyper(name, rng):
    """Random valid hyperparameters in Python's spelling: defaults scaled down or switched on."""
    from pyopt._spec import spec

    defaults = spec(name).defaults
    probe = [np.zeros(3)]
    for _ in range(50):
        hyper = {}
        for key, value in defaults.items():
            if isinstance(value, bool):
                hyper[key] = bool(rng.integers(2))
            elif isinstance(value, tuple):
                hyper[key] = [float(v * rng.uniform(0.5, 1.0)) for v in value]
            elif value == 0:
                hyper[key] = 0.0 if rng.integers(2) else float(rng.uniform(0.0, 0.1))
            else:
                hyper[key] = float(value * rng.uniform(0.5, 1.0))
        try:
            pyopt.create(name, probe, **{k: tuple(v) if isinstance(v, list) else v for k, v in hyper.items()})
        except (ValueError, TypeError):
            continue
        return hyper
    return {}


def make_data(rng, steps):
    params = [(rng.standard_normal(shape)).astype(dtype) for shape, dtype in SHAPES]
    grads = [[(rng.standard_normal(shape)).astype(dtype) for shape, dtype in SHAPES] for _ in range(steps)]
    return params, grads


def python_steps(name, hyper, params, grads, checkpoint=None):
    """Steps copies of params from best.json-style hyperparameters, or from a checkpoint."""
    params = [p.copy() for p in params]
    if checkpoint is None:
        opt = pyopt.from_config({"optimizer": name, "hyperparameters": hyper}, params)
    else:
        opt = pyopt.load(checkpoint, params)
        assert opt.name == name
    for g in grads:
        opt.step([x.copy() for x in g])
    return params, opt


def cpp_steps(cpp_build, tmp_path, name, hyper, params, grads, load=None, save=None, tag="run", step_options=None,
              outcome=None):
    """The driver's params after the steps; ``outcome`` (a dict), if given, gets its per-step
    ``applied`` and ``grad_norm`` arrays."""
    driver = cpp_build / "tests" / "cpp" / "pyopt_step_driver"
    spec = {"optimizer": name, "hyperparameters": hyper, "steps": len(grads)}
    if step_options:
        spec["step_options"] = step_options
    if load:
        spec["load"] = str(load)
    if save:
        spec["save"] = str(save)
    arrays = {"__driver__": np.array(json.dumps(spec))}
    for i, p in enumerate(params):
        arrays[f"param/{i}"] = p
    for t, g in enumerate(grads):
        for i, x in enumerate(g):
            arrays[f"grad/{t}/{i}"] = x
    src, out = tmp_path / f"{tag}-in.npz", tmp_path / f"{tag}-out.npz"
    np.savez(src, **arrays)
    result = subprocess.run([str(driver), str(src), str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    with np.load(out) as data:
        if outcome is not None:
            outcome.update(applied=data["applied"], grad_norm=data["grad_norm"])
        return [data[f"param/{i}"] for i in range(len(params))]


@pytest.mark.parametrize("name", NAMES)
def test_cpp_step_equals_python_step(cpp_build, tmp_path, name):
    """Every optimizer: 8 steps from best.json-style random hyperparameters, float32 and float64
    params of several shapes, C++ (pyopt::make_optimizer + Optimizer::step) vs Python: equal bits.
    The arrays travel through the C++ npz writer/reader both ways."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    hyper = random_hyper(name, rng)
    params, grads = make_data(rng, 8)  # 8: rectified rules (adabelief) may wait ~6 steps to move
    expected, _ = python_steps(name, hyper, params, grads)
    got = cpp_steps(cpp_build, tmp_path, name, hyper, params, grads)
    for e, g in zip(expected, got):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_array_equal(g, e)
        assert np.all(np.isfinite(g))
    assert any(not np.array_equal(p, g) for p, g in zip(params, got)), "the params did not move"


def checkpoint_state(path):
    """A pyopt .npz checkpoint's per-param state: the meta's steps and scalars, and the non-empty
    arrays (C++ allocates no state for an empty param, Python zero-size arrays)."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["__pyopt_meta__"]))
        return meta["state"], {k: data[k] for k in data.files if k.startswith("state/") and data[k].size}


@pytest.mark.parametrize("name", ["nadam", "adamw", "lamb", "sgd"])
def test_cpp_step_options_equal_python(cpp_build, tmp_path, name):
    """clip_value, clip_norm and skip_nonfinite (one C++ step pipeline under both APIs): C++ and
    Python give equal params, applied flags, global norms and state, bit for bit, an empty param
    included (it steps like any other: its count and scalar state advance, as in torch)."""
    rng = np.random.default_rng(zlib.crc32(name.encode()) + 7)
    shapes = SHAPES + [((0,), np.float32)]
    params = [rng.standard_normal(shape).astype(dtype) for shape, dtype in shapes]
    grads = [[(3.0 * rng.standard_normal(shape)).astype(dtype) for shape, dtype in shapes] for _ in range(6)]
    grads[2][1][0, 0] = np.nan  # that step is skipped
    options = {"clip_norm": 1.0, "clip_value": 2.5, "skip_nonfinite": True}

    expected = [p.copy() for p in params]
    opt = pyopt.create(name, expected)
    applied, norms = [], []
    for g in grads:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            applied.append(float(opt.step([x.copy() for x in g], **options)))
        norms.append(opt.last_grad_norm)
    pyopt.save(opt, tmp_path / "py.npz")

    outcome = {}
    got = cpp_steps(cpp_build, tmp_path, name, {}, params, grads, save=tmp_path / "cpp.npz", step_options=options,
                    outcome=outcome)
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(g, e)
    np.testing.assert_array_equal(outcome["applied"], applied)
    assert applied == [1, 1, 0, 1, 1, 1]
    np.testing.assert_array_equal(outcome["grad_norm"], norms)
    py_meta, py_arrays = checkpoint_state(tmp_path / "py.npz")
    cpp_meta, cpp_arrays = checkpoint_state(tmp_path / "cpp.npz")
    assert py_meta == cpp_meta and py_meta[str(len(shapes) - 1)]["step"] == 5
    assert py_arrays.keys() == cpp_arrays.keys()
    for key in py_arrays:
        np.testing.assert_array_equal(cpp_arrays[key], py_arrays[key], err_msg=key)


@pytest.mark.parametrize("name", NAMES)
def test_checkpoints_cross_languages(cpp_build, tmp_path, name):
    """C++ save -> Python load -> continue equals uninterrupted Python; Python save -> C++ load ->
    continue equals it too."""
    rng = np.random.default_rng(1 + zlib.crc32(name.encode()))
    hyper = random_hyper(name, rng)
    params, grads = make_data(rng, 6)
    full, _ = python_steps(name, hyper, params, grads)

    # C++ runs 3 steps and saves; Python loads that checkpoint and runs the other 3.
    ckpt = tmp_path / "cpp.npz"
    middle = cpp_steps(cpp_build, tmp_path, name, hyper, params, grads[:3], save=ckpt, tag="first")
    resumed, _ = python_steps(name, None, middle, grads[3:], checkpoint=ckpt)
    for e, g in zip(full, resumed):
        np.testing.assert_array_equal(g, e)

    # Python runs 3 steps and saves; C++ loads it and runs the other 3.
    half, opt = python_steps(name, hyper, params, grads[:3])
    pyckpt = tmp_path / "py.npz"
    pyopt.save(opt, pyckpt)
    # The C++ side starts from the defaults: load() restores the saved hyperparameters.
    cpp_resumed = cpp_steps(cpp_build, tmp_path, name, {}, half, grads[3:], load=pyckpt, tag="second")
    for e, g in zip(full, cpp_resumed):
        np.testing.assert_array_equal(g, e)


def test_cpp_checkpoint_is_a_plain_npz(cpp_build, tmp_path):
    """What C++ writes is an ordinary .npz: numpy reads it, the meta entry is pyopt's."""
    rng = np.random.default_rng(0)
    params, grads = make_data(rng, 2)
    ckpt = tmp_path / "c.npz"
    cpp_steps(cpp_build, tmp_path, "adamw", {"lr": 0.01, "betas": [0.8, 0.9]}, params, grads, save=ckpt)
    with np.load(ckpt, allow_pickle=False) as data:
        meta = json.loads(str(data["__pyopt_meta__"]))
        assert data["state/1/exp_avg"].shape == (3, 5) and data["state/1/exp_avg"].dtype == np.float64
        assert data["state/0/exp_avg"].dtype == np.float32
    assert meta["format"] == 1 and meta["optimizer"] == "adamw"
    assert meta["state"]["0"] == {"step": 2}
    group = meta["param_groups"][0]
    assert group["betas"] == [0.8, 0.9] and group["lr"] == 0.01 and group["amsgrad"] is False
    assert "decoupled_weight_decay" not in group and group["params"] == [0, 1, 2, 3]


def test_driver_reports_config_errors(cpp_build, tmp_path):
    rng = np.random.default_rng(0)
    params, grads = make_data(rng, 1)
    for hyper, words in [({"learning_rate": 1}, "unknown hyperparameter 'learning_rate'"),
                         ({"betas": [0.9]}, "betas must be a pair"),
                         ({"amsgrad": 1}, "amsgrad must be a bool"),
                         ({"lr": -1.0}, "lr")]:
        with pytest.raises(AssertionError, match=words.replace("[", r"\[")):
            cpp_steps(cpp_build, tmp_path, "adam", hyper, params, grads)
    with pytest.raises(AssertionError, match="unknown optimizer 'adamx'"):
        cpp_steps(cpp_build, tmp_path, "adamx", {}, params, grads)


def test_cpp_refuses_what_it_cannot_read(cpp_build, tmp_path):
    """np.savez_compressed archives, and a schedule-free checkpoint saved in eval mode (its params
    hold the average, not the training iterate), fail with a message saying so."""
    rng = np.random.default_rng(0)
    params, grads = make_data(rng, 1)
    driver = cpp_build / "tests" / "cpp" / "pyopt_step_driver"
    packed = tmp_path / "packed.npz"
    np.savez_compressed(packed, __driver__=np.array(json.dumps({"optimizer": "sgd", "steps": 0})))
    result = subprocess.run([str(driver), str(packed), str(tmp_path / "out.npz")], capture_output=True, text=True)
    assert result.returncode == 1 and "compressed" in result.stderr and "np.savez_compressed" in result.stderr

    opt = pyopt.create("schedulefree_adamw", [p.copy() for p in params])
    opt.step(grads[0])
    opt.eval()
    pyopt.save(opt, tmp_path / "sf.npz")
    with pytest.raises(AssertionError, match="eval mode"):
        cpp_steps(cpp_build, tmp_path, "schedulefree_adamw", {}, params, grads, load=tmp_path / "sf.npz")


# ----------------------------------------------------------------------------------------------
# The Python-written optimizers pyopt::Optimizer runs too (Adafactor; Muon when the build has a
# BLAS), and SophiaG's update_hessian, against the Python optimizers.

ADAFACTOR_SHAPES = [((7,), np.float32), ((3, 5), np.float64), ((2, 3, 4), np.float32), ((1, 17), np.float64),
                    ((9, 1), np.float32), ((33, 20), np.float32), ((), np.float64), ((4, 0), np.float32)]


def engine_data(rng, shapes, steps, scales=(1.0,)):
    params = [rng.standard_normal(shape).astype(dtype) for shape, dtype in shapes]
    grads = [[(scales[t % len(scales)] * rng.standard_normal(shape)).astype(dtype) for shape, dtype in shapes]
             for t in range(steps)]
    return params, grads


def adafactor_hyper(rng, case):
    """Defaults (case 0), then random valid hyperparameters, extremes included (eps1 = 0, eps2 = 0)."""
    if case == 0:
        return {}
    return {"lr": float(10 ** rng.uniform(-3, 0)), "beta2_decay": float(-rng.uniform(0.1, 1.0)),
            "eps": [None if case == 1 else 0.0 if case == 2 else float(10 ** rng.uniform(-40, -20)),
                    0.0 if case == 2 else float(10 ** rng.uniform(-5, -2))],
            "d": float(rng.uniform(1.0, 3.0)), "weight_decay": float(rng.uniform(0.0, 0.1)),
            "maximize": bool(case % 2)}


@pytest.mark.parametrize("case", range(4))
def test_cpp_adafactor_equals_python(cpp_build, tmp_path, case):
    """pyopt::Optimizer("adafactor") and pyopt.Adafactor (the same kernel) give equal bits over 12
    steps on vectors, matrices, batches of matrices, 1 x N, N x 1, 0-d and empty params, float32
    and float64, with gradients of 1, 1e-20 and 1e20."""
    rng = np.random.default_rng(100 + case)
    hyper = adafactor_hyper(rng, case)
    params, grads = engine_data(rng, ADAFACTOR_SHAPES, 12, scales=(1.0, 1e-20, 1.0, 1e20))
    expected, _ = python_steps("adafactor", hyper, params, grads)
    got = cpp_steps(cpp_build, tmp_path, "adafactor", hyper, params, grads)
    for e, g in zip(expected, got):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_array_equal(g, e)
    assert not np.array_equal(got[3], params[3])


def test_adafactor_checkpoints_cross_languages(cpp_build, tmp_path):
    """A C++-written Adafactor checkpoint gives pyopt.load a pyopt.Adafactor that continues with the
    bits of never stopping (its factors in Python's shapes), and the other way round."""
    rng = np.random.default_rng(7)
    hyper = adafactor_hyper(rng, 3)
    params, grads = engine_data(rng, ADAFACTOR_SHAPES[:6], 6)
    full, _ = python_steps("adafactor", hyper, params, grads)

    ckpt = tmp_path / "cpp.npz"
    middle = cpp_steps(cpp_build, tmp_path, "adafactor", hyper, params, grads[:3], save=ckpt, tag="first")
    _, py_opt = python_steps("adafactor", hyper, params, grads[:3])
    pyopt.save(py_opt, tmp_path / "py.npz")
    cpp_meta, cpp_arrays = checkpoint_state(ckpt)
    py_meta, py_arrays = checkpoint_state(tmp_path / "py.npz")
    assert cpp_meta == py_meta and cpp_arrays.keys() == py_arrays.keys()
    for key in py_arrays:
        assert cpp_arrays[key].shape == py_arrays[key].shape, key
        np.testing.assert_array_equal(cpp_arrays[key], py_arrays[key], err_msg=key)
    resumed, opt = python_steps("adafactor", None, middle, grads[3:], checkpoint=ckpt)
    assert type(opt) is pyopt.Adafactor and opt.param_groups[0]["eps"] == tuple(hyper["eps"])
    for e, g in zip(full, resumed):
        np.testing.assert_array_equal(g, e)

    cpp_resumed = cpp_steps(cpp_build, tmp_path, "adafactor", {}, middle, grads[3:], load=tmp_path / "py.npz",
                            tag="second")
    for e, g in zip(full, cpp_resumed):
        np.testing.assert_array_equal(g, e)


def test_cpp_sophia_update_hessian_equals_python(cpp_build, tmp_path):
    """pyopt::Optimizer::update_hessian and pyopt.SophiaG.update_hessian (the same map) between
    steps, a param skipped once: equal params and states, bit for bit."""
    rng = np.random.default_rng(11)
    hyper = {"lr": 1e-2, "betas": [0.9, 0.95], "rho": 0.05, "weight_decay": 0.1}
    params, grads = make_data(rng, 9)
    estimates = {t: [np.square(rng.standard_normal(p.shape)).astype(p.dtype) for p in params] for t in (0, 3, 6)}
    estimates[3][1] = None
    expected = [p.copy() for p in params]
    opt = pyopt.from_config({"optimizer": "sophia", "hyperparameters": hyper}, expected)
    for t, g in enumerate(grads):
        if t in estimates:
            opt.update_hessian([None if e is None else e.copy() for e in estimates[t]])
        opt.step([x.copy() for x in g])
    pyopt.save(opt, tmp_path / "py.npz")
    # Through the driver: hessian/<t>/<i> entries go to update_hessian before step t.
    driver = cpp_build / "tests" / "cpp" / "pyopt_step_driver"
    spec = {"optimizer": "sophia", "hyperparameters": hyper, "steps": len(grads), "save": str(tmp_path / "cpp.npz")}
    arrays = {"__driver__": np.array(json.dumps(spec))}
    arrays.update({f"param/{i}": p for i, p in enumerate(params)})
    arrays.update({f"grad/{t}/{i}": x for t, g in enumerate(grads) for i, x in enumerate(g)})
    arrays.update({f"hessian/{t}/{i}": e for t, es in estimates.items() for i, e in enumerate(es) if e is not None})
    np.savez(tmp_path / "in.npz", **arrays)
    result = subprocess.run([str(driver), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    with np.load(tmp_path / "out.npz") as data:
        for i, e in enumerate(expected):
            np.testing.assert_array_equal(data[f"param/{i}"], e)
    _, py_arrays = checkpoint_state(tmp_path / "py.npz")
    _, cpp_arrays = checkpoint_state(tmp_path / "cpp.npz")
    assert py_arrays.keys() == cpp_arrays.keys() and "state/1/hessian" in py_arrays
    for key in py_arrays:
        np.testing.assert_array_equal(cpp_arrays[key], py_arrays[key], err_msg=key)


MUON_SHAPES = [(5, 3), (3, 5), (8, 8), (1, 17), (17, 1), (40, 24), (24, 40), (1, 1), (130, 70), (70, 130)]
# Muon's C++ GEMMs sum in the BLAS's order, not numpy's: a float32 GEMM result a few ulps away can
# round to the neighbouring bfloat16 (2^-8 relative), so an element of the orthogonalized update
# may differ by one bfloat16 rounding, and that difference feeds the following Newton-Schulz
# iterations. Measured (Debian's OpenBLAS 0.3.21 vs numpy's bundled OpenBLAS, 8 steps): equal bits
# up to 64 x 64, then at most 5.3e-3 of the largest update element (256 x 512); `pytest -s -k muon`
# prints each case's error.
MUON_TOLERANCE = 5e-2
needs_blas = pytest.mark.skipif(not pyopt._core.have_blas(), reason="built without a BLAS: C++ has no Muon")


def muon_relative_error(expected, got, start):
    """max |C++ − Python| over the largest |Python − start| (the size of the update)."""
    worst = 0.0
    for e, g, p in zip(expected, got, start):
        scale = float(np.max(np.abs(e.astype(np.float64) - p))) if e.size else 0.0
        if scale:
            worst = max(worst, float(np.max(np.abs(g.astype(np.float64) - e))) / scale)
    return worst


@needs_blas
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hyper", [{}, {"nesterov": False, "adjust_lr_fn": "match_rms_adamw", "weight_decay": 0.1},
                                   {"ns_coefficients": [2.0, -1.5, 0.5], "ns_steps": 3, "momentum": 0.5,
                                    "adjust_lr_fn": "original", "eps": 0.0, "lr": 0.1}])
def test_cpp_muon_matches_python(cpp_build, tmp_path, dtype, hyper):
    """pyopt::Optimizer("muon") vs pyopt.Muon (torch.optim.Muon's semantics) over 8 steps on tall,
    wide, square, 1 x N, N x 1 and 1 x 1 params: within MUON_TOLERANCE of the update's size; the
    momentum buffers (no GEMM) are bit-identical."""
    rng = np.random.default_rng(len(json.dumps(hyper)) + (dtype == np.float64))
    shapes = [(s, dtype) for s in MUON_SHAPES]
    params, grads = engine_data(rng, shapes, 8, scales=(1.0, 1e-3, 1e3))
    expected, opt = python_steps("muon", hyper, params, grads)
    pyopt.save(opt, tmp_path / "py.npz")
    got = cpp_steps(cpp_build, tmp_path, "muon", hyper, params, grads, save=tmp_path / "cpp.npz")
    error = muon_relative_error(expected, got, params)
    print(f"muon {np.dtype(dtype).name} {hyper}: max relative error {error:.3g}")
    assert error <= MUON_TOLERANCE
    for e, g in zip(expected, got):
        assert g.dtype == e.dtype and g.shape == e.shape and np.all(np.isfinite(g))
    py_meta, py_arrays = checkpoint_state(tmp_path / "py.npz")
    cpp_meta, cpp_arrays = checkpoint_state(tmp_path / "cpp.npz")
    assert py_meta == cpp_meta and py_arrays.keys() == cpp_arrays.keys()
    for key in py_arrays:
        np.testing.assert_array_equal(cpp_arrays[key], py_arrays[key], err_msg=key)
    with np.load(tmp_path / "cpp.npz") as data:
        group = json.loads(str(data["__pyopt_meta__"]))["param_groups"][0]
    assert group["adjust_lr_fn"] == hyper.get("adjust_lr_fn") and isinstance(group["ns_steps"], int)


@needs_blas
def test_muon_checkpoints_cross_languages(cpp_build, tmp_path):
    """C++ save -> pyopt.load (a pyopt.Muon) -> continue, and Python save -> C++ load -> continue,
    both within MUON_TOLERANCE of never stopping."""
    rng = np.random.default_rng(5)
    hyper = {"lr": 0.05, "adjust_lr_fn": "match_rms_adamw", "weight_decay": 0.01}
    shapes = [((6, 4), np.float32), ((3, 9), np.float64)]
    params, grads = engine_data(rng, shapes, 6)
    full, _ = python_steps("muon", hyper, params, grads)
    middle = cpp_steps(cpp_build, tmp_path, "muon", hyper, params, grads[:3], save=tmp_path / "cpp.npz", tag="a")
    resumed, opt = python_steps("muon", None, middle, grads[3:], checkpoint=tmp_path / "cpp.npz")
    assert type(opt) is pyopt.Muon and opt.param_groups[0]["adjust_lr_fn"] == "match_rms_adamw"
    assert muon_relative_error(full, resumed, params) <= MUON_TOLERANCE
    half, opt = python_steps("muon", hyper, params, grads[:3])
    pyopt.save(opt, tmp_path / "py.npz")
    cpp_resumed = cpp_steps(cpp_build, tmp_path, "muon", {}, half, grads[3:], load=tmp_path / "py.npz", tag="b")
    assert muon_relative_error(full, cpp_resumed, params) <= MUON_TOLERANCE


# ----------------------------------------------------------------------------------------------
# Consumers: a tiny outside project links pyopt::pyopt.

CONSUMER_MAIN = r"""
#include <pyopt/pyopt.hpp>
#include <cstdio>
#include <vector>
int main() {
  pyopt::Optimizer opt = pyopt::make_optimizer_from_json(
      R"({"optimizer": "adamw", "hyperparameters": {"lr": 0.1, "betas": [0.9, 0.99]}})");
  std::vector<float> w(100, 1.0f), g(100);
  opt.add_param(w.data(), w.size());
  for (int t = 0; t < 50; ++t) {
    for (std::size_t i = 0; i < w.size(); ++i) g[i] = 2.0f * w[i];  // d/dw of w^2
    opt.step({g.data()});
  }
  std::printf("pyopt %s w0=%g\n", pyopt::version(), double(w[0]));
  return w[0] < 0.5f ? 0 : 1;
}
"""


def write_consumer(folder, how, pyopt_source=None):
    folder.mkdir(parents=True)
    (folder / "main.cpp").write_text(CONSUMER_MAIN)
    if how == "find_package":
        find = "find_package(pyopt CONFIG REQUIRED)\nmessage(STATUS \"found pyopt ${pyopt_VERSION}\")"
    else:
        find = f'add_subdirectory("{pyopt_source.as_posix()}" pyopt EXCLUDE_FROM_ALL)'
    (folder / "CMakeLists.txt").write_text(f"""cmake_minimum_required(VERSION 3.18)
project(consumer LANGUAGES CXX)
{find}
add_executable(consumer main.cpp)
target_link_libraries(consumer PRIVATE pyopt::pyopt)
""")
    return folder


def run_consumer(build):
    result = subprocess.run([str(build / "consumer")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"pyopt {pyopt.__version__}" in result.stdout


def test_find_package_against_an_install(cpp_build, tmp_path):
    prefix = tmp_path / "prefix"
    subprocess.run([tool("cmake"), "--install", str(cpp_build), "--prefix", str(prefix)], check=True, env=env())
    config = next(prefix.rglob("pyoptConfig.cmake"))
    assert (config.parent / "pyoptConfigVersion.cmake").exists()
    assert (prefix / "include" / "pyopt" / "pyopt.hpp").exists()
    assert list(prefix.rglob("libpyopt_kernels.a"))
    src = write_consumer(tmp_path / "consumer", "find_package")
    build = configure_and_build(src, tmp_path / "consumer-build", f"-DCMAKE_PREFIX_PATH={prefix}")
    run_consumer(build)

    # examples/cpp against the same install: trains an MLP from its best.json, the loss falls,
    # and the checkpoint it saves loads in Python over params of the same shapes.
    example = configure_and_build(ROOT / "examples" / "cpp", tmp_path / "example-build", f"-DCMAKE_PREFIX_PATH={prefix}")
    ckpt = tmp_path / "mlp.npz"
    result = subprocess.run([str(example / "train_mlp"), str(ROOT / "examples" / "cpp" / "best.json"), str(ckpt)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    losses = [float(line.split()[3]) for line in result.stdout.splitlines() if line.startswith("epoch")]
    assert len(losses) == 9 and losses[-1] < 0.25 * losses[0], result.stdout
    params = [np.zeros((32, 2), np.float32), np.zeros(32, np.float32), np.zeros((1, 32), np.float32),
              np.zeros(1, np.float32)]
    opt = pyopt.load(ckpt, params)
    assert opt.name == "adamw" and opt.state[0]["step"] == 400 and opt.state[0]["exp_avg"].shape == (32, 2)


def test_find_package_against_the_python_package(tmp_path):
    """`python -m pyopt --cmakedir` names the CMake config shipped inside the installed package."""
    result = subprocess.run([sys.executable, "-m", "pyopt", "--cmakedir"], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    cmakedir = Path(result.stdout.strip().splitlines()[-1])  # (an editable install may log a rebuild first)
    if not (cmakedir / "pyoptConfig.cmake").exists():
        pytest.fail(f"{cmakedir} has no pyoptConfig.cmake (reinstall the package)")
    src = write_consumer(tmp_path / "consumer", "find_package")
    build = configure_and_build(src, tmp_path / "consumer-build", f"-Dpyopt_DIR={cmakedir}")
    run_consumer(build)


def test_add_subdirectory(tmp_path):
    src = write_consumer(tmp_path / "consumer", "add_subdirectory", ROOT)
    # The whole library is compiled again here: the baseline kernels only, to keep it quick.
    build = configure_and_build(src, tmp_path / "consumer-build", "-DPYOPT_BASELINE_ONLY=ON", target="consumer")
    run_consumer(build)
