"""Checkpoints of 16-bit params and the storage options across the two languages (pyopt/io.py,
csrc/include/pyopt/checkpoint.hpp): bfloat16 arrays as uint16 bits named in the meta's
"array_dtypes", 8-bit codes (uint8) with float32 scales, master copies, the "storage" meta; and
malformed files that are clear ValueErrors."""
import json
import subprocess

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
    result = subprocess.run([str(driver), str(src), str(out)], capture_output=True, text=True)
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


def rewrite(path, mutate):
    """Rewrites a checkpoint with mutate(meta, arrays) applied (a plain np.savez, as pyopt.save)."""
    meta, arrays = saved(path)
    mutate(meta, arrays)
    np.savez(path, __pyopt_meta__=np.array(json.dumps(meta)), **arrays)


@pytest.mark.parametrize("case", ["void", "unknown_dtype", "missing_entry", "not_uint16", "not_object",
                                  "storage_key", "storage_type", "storage_value"])
def test_malformed_storage_in_a_file_is_a_value_error(cpp_build, tmp_path, case):
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
        elif case == "not_object":
            meta["array_dtypes"] = ["state/0/sum"]
        elif case == "storage_key":
            meta["storage"]["fast"] = True
        elif case == "storage_type":
            meta["storage"]["master_weights"] = 1
        else:
            meta["storage"]["state_dtype"] = "int4"

    rewrite(ckpt, mutate)
    expected = {"void": "raw |V2 records", "unknown_dtype": "only 'bfloat16' is known",
                "missing_entry": "names entry 'state/7/sum', which the file lacks",
                "not_uint16": "is bfloat16 stored as <i2", "not_object": "'array_dtypes' must be a JSON object",
                "storage_key": "bad 'storage'", "storage_type": "bad 'storage'", "storage_value": "bad 'storage'"}[case]
    with pytest.raises(ValueError, match=str(ckpt.name)) as info:
        pyopt.io.load_state_dict(ckpt)
    assert expected in str(info.value)


def test_save_refuses_void_arrays_it_could_not_read_back(tmp_path):
    class Holder:  # pyopt.save only asks for a state_dict
        def state_dict(self):
            return {"format": 1, "optimizer": "sgd", "state": {0: {"x": np.zeros(2, "V2")}}, "param_groups": []}

    with pytest.raises(TypeError, match="'state/0/x' has dtype"):
        pyopt.save(Holder(), tmp_path / "x.npz")
    assert not list(tmp_path.iterdir())


def test_cpp_storage_options_cross_languages_checked(cpp_build, tmp_path):
    """C++ refuses a checkpoint saved with other storage options, naming both."""
    rng = np.random.default_rng(9)
    params = bf16_params(rng)
    ckpt = tmp_path / "c.npz"
    cpp_steps(cpp_build, tmp_path, "adam", {}, as_driver_arrays(params), [], save=ckpt,
              storage={"state_dtype": "int8"})
    with pytest.raises(RuntimeError, match="saved with storage .*\"state_dtype\": \"int8\""):
        cpp_steps(cpp_build, tmp_path, "adam", {}, as_driver_arrays(params), [], load=ckpt, tag="again")
