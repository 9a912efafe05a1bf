"""Checkpoints of 16-bit params and the storage options across the two languages (pyopt/io.py,
csrc/include/pyopt/checkpoint.hpp): bfloat16 arrays as uint16 bits named in the meta's
"array_dtypes", 8-bit codes (uint8) with float32 scales, master copies, the "storage" meta; and
malformed files that are clear ValueErrors."""
import json
import os
import subprocess
import zlib

import numpy as np
import pytest

import pyopt

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = ml_dtypes.bfloat16


def bf16_params(rng):
    """A bfloat16 param large enough for 8-bit states (partial last block), a float16 one, a float32 one."""
    return [rng.standard_normal((17, 300)).astype(BF16), rng.standard_normal((50,)).astype(np.float16),
            rng.standard_normal((4100,)).astype(np.float32)]


def grads_for(params, rng, steps):
    return [[rng.standard_normal(p.shape).astype(p.dtype) for p in params] for _ in range(steps)]


def cpp_steps(cpp_build, tmp_path, name, hyper, params, grads, load=None, save=None, tag="run", storage=None):
    """tests/cpp/step_driver.cpp over these arrays (as test_cmake_package.cpp_steps, with storage
    options); its params after the steps. A failing driver raises RuntimeError with its stderr."""
    spec = {"optimizer": name, "hyperparameters": hyper, "steps": len(grads)}
    for key, value in (("load", load), ("save", save)):
        if value:
            spec[key] = str(value)
    if storage:
        spec["storage"] = storage
    arrays = {"__driver__": np.array(json.dumps(spec))}
    arrays.update({f"param/{i}": p for i, p in enumerate(params)})
    arrays.update({f"grad/{t}/{i}": x for t, g in enumerate(grads) for i, x in enumerate(g)})
    src, out = tmp_path / f"{tag}-in.npz", tmp_path / f"{tag}-out.npz"
    np.savez(src, **arrays)
    driver = cpp_build / "tests" / "cpp" / "pyopt_step_driver"
    # The ISA path this Python module runs (a baseline-only editable build next to a full C++ build
    # would otherwise compare float32 steps with and without FMA).
    env = {**os.environ, "PYOPT_ISA": pyopt._core.isa()}
    result = subprocess.run([str(driver), str(src), str(out)], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    with np.load(out) as data:
        return [data[f"param/{i}"] for i in range(len(params))]


def as_driver_arrays(arrays):
    """The step driver reads bfloat16 as its uint16 bits (numpy would write ml_dtypes' as |V2)."""
    return [a.view(np.uint16) if a.dtype == BF16 else a for a in arrays]


def saved(path):
    with np.load(path, allow_pickle=False) as data:
        return json.loads(str(data["__pyopt_meta__"])), {k: data[k] for k in data.files if k != "__pyopt_meta__"}


@pytest.mark.parametrize("state_dtype", ["float32", "bfloat16", "int8"])
def test_cpp_checkpoint_format_and_python_reader(cpp_build, tmp_path, state_dtype):
    """What C++ writes for each state_dtype (a fresh adagrad with a nonzero initial sum, so codes
    and bits are not zero) and what pyopt.io.load_state_dict makes of it: bfloat16 states come back
    as ml_dtypes.bfloat16 with the same bits, 8-bit codes as uint8 with float32 scales."""
    rng = np.random.default_rng(3)
    params = bf16_params(rng)
    ckpt = tmp_path / "c.npz"
    storage = {"master_weights": False, "state_dtype": state_dtype, "stochastic_rounding": False}
    hyper = {"initial_accumulator_value": 0.3}
    cpp_steps(cpp_build, tmp_path, "adagrad", hyper, as_driver_arrays(params), [], save=ckpt, storage=storage)
    meta, arrays = saved(ckpt)
    if state_dtype == "float32":
        assert "storage" not in meta and "array_dtypes" not in meta  # the defaults: as before the options
    else:
        assert meta["storage"] == storage
    sd = pyopt.io.load_state_dict(ckpt)
    assert "array_dtypes" not in sd
    states = [sd["state"][i]["sum"] for i in range(3)]
    if state_dtype == "bfloat16":
        assert meta["array_dtypes"] == {f"state/{i}/sum": "bfloat16" for i in range(3)}
        for i in range(3):
            assert arrays[f"state/{i}/sum"].dtype == np.dtype("<u2")  # np.load: plain uint16 bits
            assert states[i].dtype == BF16 and states[i].shape == params[i].shape
            assert np.all(states[i].view(np.uint16) == np.array(0.3, np.float32).astype(BF16).view(np.uint16))
    elif state_dtype == "int8":
        codes, absmax = states[0], sd["state"][0]["sum_absmax"]
        assert codes.dtype == np.uint8 and codes.shape == (17, 300) and np.all(codes == 255)
        assert absmax.dtype == np.float32 and absmax.shape == (20,) and np.all(absmax == np.float32(0.3))
        assert states[1].dtype == np.float32 and "sum_absmax" not in sd["state"][1]  # 50 < 4096: float32
        assert states[2].dtype == np.uint8 and sd["state"][2]["sum_absmax"].shape == (17,)
    else:
        assert all(s.dtype == np.float32 and np.all(s == np.float32(0.3)) for s in states)


def test_cpp_steps_16bit_params_like_python(cpp_build, tmp_path):
    """bfloat16 and float16 params (grads in their dtype or float32) with float32 states: C++
    steps equal Python's bit for bit, and the C++ checkpoint resumes in Python bit for bit."""
    rng = np.random.default_rng(11)
    params = bf16_params(rng)
    grads = grads_for(params, rng, 4)
    grads[1][0] = grads[1][0].astype(np.float32)  # a float32 gradient of the bfloat16 param
    expected = [p.copy() for p in params]
    opt = pyopt.create("adamw", expected, lr=0.01)
    for g in grads:
        opt.step([x.copy() for x in g])
    got = cpp_steps(cpp_build, tmp_path, "adamw", {"lr": 0.01}, as_driver_arrays(params),
                    [as_driver_arrays(g) for g in grads])
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(g.view(e.dtype) if e.dtype == BF16 else g, e)

    ckpt = tmp_path / "half.npz"
    middle = cpp_steps(cpp_build, tmp_path, "adamw", {"lr": 0.01}, as_driver_arrays(params),
                       [as_driver_arrays(g) for g in grads[:2]], save=ckpt, tag="half")
    middle = [m.view(BF16) if p.dtype == BF16 else m for m, p in zip(middle, params)]
    resumed = pyopt.load(ckpt, middle)
    for g in grads[2:]:
        resumed.step([x.copy() for x in g])
    for e, g in zip(expected, middle):
        assert e.dtype == g.dtype
        np.testing.assert_array_equal(g, e)


STORAGES = [
    {"state_dtype": "bfloat16"},
    {"state_dtype": "int8", "master_weights": True},
    {"state_dtype": "int8"},
    {"state_dtype": "bfloat16", "stochastic_rounding": True},
]


def checkpoint_arrays(path):
    meta, arrays = saved(path)
    return meta.get("storage"), meta.get("array_dtypes"), {k: v for k, v in arrays.items() if v.size}


@pytest.mark.parametrize("storage", STORAGES, ids=lambda s: "+".join(f"{k}={v}" for k, v in s.items()))
def test_storage_options_cross_languages(cpp_build, tmp_path, storage):
    """bfloat16/float16/float32 params under each storage option set: C++ steps equal Python's bit
    for bit (same rounding seeds); C++ save -> Python load -> continue, and Python save -> C++ load
    (into a default-built optimizer: it takes the saved options) -> continue, equal the
    uninterrupted run; C++ save -> Python load -> Python save -> C++ load -> C++ save gives the
    same arrays bit for bit (8-bit codes and scales, bfloat16 bits, masters)."""
    rng = np.random.default_rng(zlib.crc32(json.dumps(storage).encode()))
    params = bf16_params(rng)
    grads = grads_for(params, rng, 6)
    hyper = {"lr": 0.01, "weight_decay": 0.05}
    drv = [as_driver_arrays(g) for g in grads]

    def from_driver(arrays):
        return [a.view(BF16) if p.dtype == BF16 else a for a, p in zip(arrays, params)]

    full = [p.copy() for p in params]
    opt = pyopt.create("adamw", full, **hyper, **storage)
    for g in grads:
        opt.step([x.copy() for x in g])
    got = from_driver(cpp_steps(cpp_build, tmp_path, "adamw", hyper, as_driver_arrays(params), drv,
                                storage=storage, tag="full"))
    for e, g in zip(full, got):
        np.testing.assert_array_equal(g, e)

    # C++ 3 steps -> save -> Python load -> 3 steps.
    ckpt = tmp_path / "cpp.npz"
    middle = from_driver(cpp_steps(cpp_build, tmp_path, "adamw", hyper, as_driver_arrays(params), drv[:3], save=ckpt,
                                   storage=storage, tag="first"))
    resumed = pyopt.load(ckpt, middle)
    assert resumed.storage == {"master_weights": False, "stochastic_rounding": False, **storage}
    for g in grads[3:]:
        resumed.step([x.copy() for x in g])
    for e, g in zip(full, middle):
        np.testing.assert_array_equal(g, e)

    # The same checkpoint: Python load -> Python save -> C++ load -> C++ save, bit for bit.
    half = from_driver(cpp_steps(cpp_build, tmp_path, "adamw", hyper, as_driver_arrays(params), drv[:3],
                                 storage=storage, tag="half"))
    again = pyopt.load(ckpt, [h.copy() for h in half])
    pyckpt, back = tmp_path / "py.npz", tmp_path / "back.npz"
    pyopt.save(again, pyckpt)
    cpp_steps(cpp_build, tmp_path, "adamw", {}, as_driver_arrays(half), [], load=pyckpt, save=back, tag="back")
    for path in (pyckpt, back):
        saved_storage, dtypes, arrays = checkpoint_arrays(path)
        first_storage, first_dtypes, first_arrays = checkpoint_arrays(ckpt)
        assert saved_storage == first_storage and dtypes == first_dtypes
        assert arrays.keys() == first_arrays.keys()
        for key, value in first_arrays.items():
            assert arrays[key].dtype == value.dtype and arrays[key].shape == value.shape, key
            np.testing.assert_array_equal(arrays[key].view(np.uint8), value.view(np.uint8), err_msg=key)

    # Python 3 steps -> save -> C++ (built with the defaults) load -> 3 steps.
    py_half = [p.copy() for p in params]
    opt = pyopt.create("adamw", py_half, **hyper, **storage)
    for g in grads[:3]:
        opt.step([x.copy() for x in g])
    pyopt.save(opt, pyckpt)
    resumed_cpp = from_driver(cpp_steps(cpp_build, tmp_path, "adamw", {}, as_driver_arrays(py_half), drv[3:],
                                        load=pyckpt, tag="second"))
    for e, g in zip(full, resumed_cpp):
        np.testing.assert_array_equal(g, e)


def rewrite(path, mutate):
    """Rewrites a checkpoint with mutate(meta, arrays) applied (a plain np.savez, as pyopt.save)."""
    meta, arrays = saved(path)
    mutate(meta, arrays)
    np.savez(path, __pyopt_meta__=np.array(json.dumps(meta)), **arrays)


@pytest.mark.parametrize("case", ["void", "unknown_dtype", "missing_entry", "not_uint16", "not_object"])
def test_malformed_array_dtypes_are_value_errors(cpp_build, tmp_path, case):
    """The "array_dtypes" meta and raw |V2 entries: ValueError naming the file, from both readers."""
    rng = np.random.default_rng(5)
    params = bf16_params(rng)
    ckpt = tmp_path / "c.npz"
    storage = {"master_weights": True, "state_dtype": "bfloat16", "stochastic_rounding": False}
    cpp_steps(cpp_build, tmp_path, "adagrad", {"initial_accumulator_value": 0.5}, as_driver_arrays(params), [],
              save=ckpt, storage=storage)

    def mutate(meta, arrays):
        if case == "void":  # what np.savez makes of an ml_dtypes array
            arrays["state/0/sum"] = arrays["state/0/sum"].view(BF16)
            del meta["array_dtypes"]["state/0/sum"]
        elif case == "unknown_dtype":
            meta["array_dtypes"]["state/0/sum"] = "float8"
        elif case == "missing_entry":
            meta["array_dtypes"]["state/7/sum"] = "bfloat16"
        elif case == "not_uint16":
            arrays["state/0/sum"] = arrays["state/0/sum"].astype(np.int16)
        else:
            meta["array_dtypes"] = ["state/0/sum"]

    rewrite(ckpt, mutate)
    expected = {"void": "raw |V2 records", "unknown_dtype": "only 'bfloat16' is known",
                "missing_entry": "names entry 'state/7/sum', which the file lacks",
                "not_uint16": "is bfloat16 stored as <i2", "not_object": "'array_dtypes' must be a JSON object"}[case]
    with pytest.raises(ValueError, match=str(ckpt.name)) as info:
        pyopt.io.load_state_dict(ckpt)
    assert expected in str(info.value)
    with pytest.raises(RuntimeError, match=str(ckpt.name)):  # the C++ reader refuses it too
        cpp_steps(cpp_build, tmp_path, "adagrad", {}, as_driver_arrays(params), [], load=ckpt, tag="cpp")


@pytest.mark.parametrize("case", ["codes_dtype", "codes_shape", "absmax_length", "absmax_missing", "storage_value",
                                  "master_without_option"])
def test_malformed_8bit_state_changes_nothing(cpp_build, tmp_path, case):
    """Wrong dtype or shape of 8-bit codes, scales of the wrong length or missing, bad storage
    options: pyopt.load raises ValueError naming the file, C++ refuses it, and a Python
    optimizer's load_state_dict leaves it as it was."""
    rng = np.random.default_rng(6)
    params = bf16_params(rng)
    grads = grads_for(params, rng, 2)
    ckpt = tmp_path / "c.npz"
    storage = {"state_dtype": "int8"}
    cpp_steps(cpp_build, tmp_path, "adam", {}, as_driver_arrays(params), [as_driver_arrays(g) for g in grads],
              save=ckpt, storage=storage)

    def mutate(meta, arrays):
        if case == "codes_dtype":
            arrays["state/0/exp_avg"] = arrays["state/0/exp_avg"].astype(np.float32)
        elif case == "codes_shape":
            arrays["state/0/exp_avg"] = arrays["state/0/exp_avg"].reshape(300, 17)
        elif case == "absmax_length":
            arrays["state/0/exp_avg_sq_absmax"] = arrays["state/0/exp_avg_sq_absmax"][:-1]
        elif case == "absmax_missing":
            del arrays["state/2/exp_avg_absmax"]
        elif case == "storage_value":
            meta["storage"]["state_dtype"] = "int4"
        else:
            arrays["state/2/master"] = np.zeros(4100, np.float32)

    rewrite(ckpt, mutate)
    with pytest.raises(ValueError, match=str(ckpt.name)):
        pyopt.load(ckpt, [p.copy() for p in params])
    with pytest.raises(RuntimeError, match=str(ckpt.name)):
        cpp_steps(cpp_build, tmp_path, "adam", {}, as_driver_arrays(params), [], load=ckpt, tag="cpp")
    opt = pyopt.create("adam", [p.copy() for p in params], state_dtype="int8")
    opt.step([g.copy() for g in grads[0]])
    before = opt.state_dict()
    with pytest.raises((TypeError, ValueError)):
        opt.load_state_dict(pyopt.io.load_state_dict(ckpt))
    after = opt.state_dict()
    assert after["storage"] == before["storage"]
    for i, entry in before["state"].items():
        for key, value in entry.items():
            np.testing.assert_array_equal(after["state"][i][key], value)


@pytest.mark.parametrize("storage", STORAGES, ids=lambda s: "+".join(f"{k}={v}" for k, v in s.items()))
def test_python_round_trip_is_bit_identical(tmp_path, storage):
    """pyopt.save -> pyopt.load -> pyopt.save writes the same arrays and meta, and the loaded
    optimizer continues exactly as the original."""
    rng = np.random.default_rng(21)
    params = bf16_params(rng)
    grads = grads_for(params, rng, 4)
    opt = pyopt.create("adamw", params, lr=0.01, **storage)
    for g in grads[:2]:
        opt.step([x.copy() for x in g])
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    pyopt.save(opt, first)
    copies = [p.copy() for p in params]
    loaded = pyopt.load(first, copies)
    pyopt.save(loaded, second)
    meta_a, arrays_a = saved(first)
    meta_b, arrays_b = saved(second)
    assert meta_a == meta_b and arrays_a.keys() == arrays_b.keys()
    for key, value in arrays_a.items():
        assert arrays_b[key].dtype == value.dtype, key
        np.testing.assert_array_equal(arrays_b[key].view(np.uint8), value.view(np.uint8), err_msg=key)
    for g in grads[2:]:
        opt.step([x.copy() for x in g])
        loaded.step([x.copy() for x in g])
    for p, c in zip(params, copies):
        assert p.dtype == c.dtype
        np.testing.assert_array_equal(c, p)
