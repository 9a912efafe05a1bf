"""Hostile input: corrupt checkpoints, malformed state dicts, refused steps, NaN hyperparameters,
aliased arrays and concurrent steps. Every failure is a clear TypeError / ValueError (or
FileNotFoundError) and leaves everything as it was."""
import io
import json
import math
import struct
import threading
import zipfile

import numpy as np
import pytest

import pyopt
from pyopt._spec import TUPLES, spec


def trained(name="adam", steps=3, **hyper):
    rng = np.random.default_rng(0)
    params = [rng.standard_normal((3, 4)), rng.standard_normal(4)]
    opt = pyopt.create(name, params, **hyper)
    for _ in range(steps):
        opt.step([rng.standard_normal(p.shape) for p in params])
    return params, opt


def snapshot(opt, params):
    """Everything a refused call must leave alone."""
    state = {i: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in s.items()} for i, s in opt.state.items()}
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    schedules = [s.state_dict() for s in opt.schedules]
    return [p.copy() for p in params], state, groups, schedules


def assert_same(before, after):
    (p0, s0, g0, sch0), (p1, s1, g1, sch1) = before, after
    for a, b in zip(p0, p1):
        np.testing.assert_array_equal(a, b)
    assert g0 == g1 and sch0 == sch1
    assert set(s0) == set(s1)
    for i in s0:
        assert set(s0[i]) == set(s1[i])
        for k in s0[i]:
            np.testing.assert_array_equal(s0[i][k], s1[i][k])


# ----- pyopt.load on files that are not (valid) checkpoints ------------------------------------
@pytest.fixture
def checkpoint(tmp_path):
    params, opt = trained("adam")
    path = tmp_path / "good.npz"
    pyopt.save(opt, path)
    return path, params


def rewrite_meta(src, dst, change):
    with zipfile.ZipFile(src) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    meta_entry = "__pyopt_meta__.npy"
    with zipfile.ZipFile(src) as z, z.open(meta_entry) as f:
        meta = json.loads(str(np.lib.format.read_array(f)))
    meta = change(meta)
    arrays = {n[:-4]: np.lib.format.read_array(io.BytesIO(b)) for n, b in entries.items()
              if n != meta_entry}
    if meta is not None:
        arrays["__pyopt_meta__"] = np.array(json.dumps(meta))
    np.savez(dst, **arrays)


def bad_files(path, tmp):
    data = path.read_bytes()
    rng = np.random.default_rng(1)
    out = {}

    def write(name, content):
        p = tmp / name
        p.write_bytes(content)
        out[name] = p

    for cut in (10, len(data) // 3, len(data) // 2, len(data) - 30, len(data) - 1):
        write(f"truncated{cut}.npz", data[:cut])
    write("random.npz", rng.bytes(4000))
    write("empty.npz", b"")
    corrupt = bytearray(data)
    corrupt[len(data) // 2] ^= 0xFF
    write("flipped.npz", bytes(corrupt))
    np.save(tmp / "plain.npy", np.ones(3))
    out["plain.npy"] = tmp / "plain.npy"
    np.savez(tmp / "pickled.npz", x=np.array([{"a": 1}], dtype=object), __pyopt_meta__=np.array("{}"))
    out["pickled.npz"] = tmp / "pickled.npz"
    np.savez_compressed(tmp / "compressed.npz", __pyopt_meta__=np.array("{}"))
    out["compressed.npz"] = tmp / "compressed.npz"
    rewrite_meta(path, tmp / "nometa.npz", lambda m: None)
    out["nometa.npz"] = tmp / "nometa.npz"
    for i, change in enumerate([
        lambda m: [1, 2],
        lambda m: {**m, "state": [1]},
        lambda m: {**m, "param_groups": {"a": 1}},
        lambda m: {**m, "param_groups": [{"params": 3}]},
        lambda m: {**m, "optimizer": 7},
        lambda m: {**m, "state": {"zero": {}}},
        lambda m: {**m, "state": {"0": {"step": 1.5}}},
        lambda m: {**m, "state": {"0": {"step": "3"}}},
        lambda m: {**m, "format": 99},
        lambda m: {**m, "param_groups": [{**g, "lr": "fast"} for g in m["param_groups"]]},
        lambda m: {**m, "lookahead": 5},
    ]):
        rewrite_meta(path, tmp / f"meta{i}.npz", change)
        out[f"meta{i}.npz"] = tmp / f"meta{i}.npz"
    with open(tmp / "notjson.npz", "wb") as f:
        np.savez(f, __pyopt_meta__=np.array("{not json"))
    out["notjson.npz"] = tmp / "notjson.npz"
    with open(tmp / "deep.npz", "wb") as f:
        np.savez(f, __pyopt_meta__=np.array("[" * 100000 + "]" * 100000))
    out["deep.npz"] = tmp / "deep.npz"
    return out


def test_load_rejects_every_bad_file_with_a_value_error(checkpoint, tmp_path):
    path, params = checkpoint
    for name, bad in bad_files(path, tmp_path).items():
        with pytest.raises(ValueError, match=name.replace(".", r"\.")) as info:
            pyopt.load(bad, [p.copy() for p in params])
        assert str(bad) in str(info.value), name
        if name not in ("meta6.npz", "meta7.npz", "meta9.npz"):  # values the optimizer checks, not the reader
            with pytest.raises(ValueError, match=name.replace(".", r"\.")):
                pyopt.load_state_dict(bad)
    with pytest.raises(FileNotFoundError):
        pyopt.load(tmp_path / "missing.npz", params)


def stored_zip(entries):
    """A zip of stored entries: [(name, payload)], patched afterwards to lie."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, payload in entries:
            z.writestr(name, payload)
    return bytearray(buf.getvalue())


def npy_bytes(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def write(path, data):
    path.write_bytes(bytes(data))
    return path


def test_load_bounds_crafted_zips(tmp_path):
    meta = npy_bytes(np.array(json.dumps({"format": 1, "optimizer": "sgd", "state": {}, "param_groups": [{"params": [0]}]})))
    assert type(pyopt.load_state_dict(write(tmp_path / "ok.npz", stored_zip([("__pyopt_meta__.npy", meta)])))) is dict
    payload = npy_bytes(np.zeros(1000))
    # 1. A central directory of many entries all pointing at one payload.
    data = stored_zip([("__pyopt_meta__.npy", meta)] + [(f"state/0/s{i}.npy", payload) for i in range(50)])
    cd_sig = b"PK\x01\x02"
    first = None
    pos = data.find(cd_sig)
    while pos >= 0:
        name_len = struct.unpack("<H", data[pos + 28: pos + 30])[0]
        name = bytes(data[pos + 46: pos + 46 + name_len])
        if name.startswith(b"state/"):
            offset = struct.unpack("<L", data[pos + 42: pos + 46])[0]
            if first is None:
                first = offset
            data[pos + 42: pos + 46] = struct.pack("<L", first)
        pos = data.find(cd_sig, pos + 4)
    (tmp_path / "overlap.npz").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="overlap"):
        pyopt.load(tmp_path / "overlap.npz", [np.zeros(3)])
    # 2. An entry claiming far more bytes than the file has (central directory and local header).
    data = stored_zip([("__pyopt_meta__.npy", meta), ("state/0/x.npy", payload)])
    pos = data.rfind(cd_sig)
    data[pos + 20: pos + 28] = struct.pack("<LL", 2**31, 2**31)
    (tmp_path / "huge.npz").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="huge.npz.*runs past the end of the file"):
        pyopt.load(tmp_path / "huge.npz", [np.zeros(3)])
    # 3. A .npy header declaring a huge shape over a few bytes of data.
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (10**13,)})
    lying = buf.getvalue() + bytes(16)
    data = stored_zip([("__pyopt_meta__.npy", meta), ("state/0/x.npy", lying)])
    (tmp_path / "shape.npz").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"shape.npz.*needs 80000000000000 bytes, the entry has 16"):
        pyopt.load(tmp_path / "shape.npz", [np.zeros(3)])


def test_load_checks_the_optimizer_name(checkpoint, tmp_path):
    path, params = checkpoint
    for wrong in ("sgd", "adamw", "amsgrad", pyopt.AdamW, "muon"):
        with pytest.raises(ValueError, match="'adam'"):
            pyopt.load(path, [p.copy() for p in params], optimizer=wrong)
    assert type(pyopt.load(path, [p.copy() for p in params], optimizer="adam")) is pyopt.Adam
    assert type(pyopt.load(path, [p.copy() for p in params], optimizer=pyopt.Adam)) is pyopt.Adam
    with pytest.raises(ValueError, match="unknown optimizer"):
        pyopt.load(path, params, optimizer="adamm")
    with pytest.raises(TypeError):
        pyopt.load(path, params, optimizer=3)
    _, amsgrad = trained("amsgrad")
    pyopt.save(amsgrad, tmp_path / "ams.npz")
    assert type(pyopt.load(tmp_path / "ams.npz", [p.copy() for p in params], optimizer="amsgrad")) is pyopt.AMSGrad
    with pytest.raises(ValueError, match="'amsgrad' optimizer, not 'adam'"):
        pyopt.load(tmp_path / "ams.npz", [p.copy() for p in params], optimizer="adam")


# ----- load_state_dict: strict, whole, before anything changes ---------------------------------
def bad_state_dicts(sd):
    def with_state(**entry):
        return {**sd, "state": {**sd["state"], 0: {**sd["state"][0], **entry}}}

    def with_group(**changes):
        return {**sd, "param_groups": [{**sd["param_groups"][0], **changes}, *sd["param_groups"][1:]]}

    return [
        (with_state(step=1.5), TypeError, "step"),
        (with_state(step="3"), TypeError, "step"),
        (with_state(step=True), TypeError, "step"),
        (with_state(step=1e30), TypeError, "step"),
        (with_state(step=10**30), ValueError, "step"),
        (with_state(step=-1), ValueError, "step"),
        (with_state(exp_avg=[["0.0"] * 4] * 3), TypeError, "exp_avg"),
        (with_state(exp_avg=[[0.0] * 4, [0.0]]), TypeError, "exp_avg"),
        (with_state(exp_avg="abc"), TypeError, "exp_avg"),
        (with_state(exp_avg=np.zeros((3, 4), np.int64)), TypeError, "exp_avg"),
        (with_state(exp_avg=np.zeros((4, 3))), ValueError, "exp_avg"),
        (with_state(bogus=np.zeros((3, 4))), ValueError, "bogus"),
        ({**sd, "state": {"x": {}}}, ValueError, "param index"),
        ({**sd, "state": {1.0: {}}}, ValueError, "param index"),
        ({**sd, "state": {True: {}}}, ValueError, "param index"),
        ({**sd, "state": {5: {}}}, ValueError, "param 5"),
        ({**sd, "state": {0: {}, "0": {}}}, ValueError, "twice"),
        ({**sd, "state": {0: [1]}}, TypeError, "param 0"),
        ({**sd, "state": [1]}, TypeError, "'state'"),
        ({**sd, "format": 2}, ValueError, "format"),
        ({**sd, "format": "1"}, ValueError, "format"),
        ({**sd, "format": True}, ValueError, "format"),
        ({**sd, "surprise": 1}, ValueError, "surprise"),
        ({**sd, "optimizer": 3}, TypeError, "optimizer"),
        ({**sd, "param_groups": "abc"}, TypeError, "param_groups"),
        ({**sd, "param_groups": [sd["param_groups"][0]] * 2}, ValueError, "param groups"),
        (with_group(lr="0.1"), TypeError, "lr"),
        (with_group(lr=float("nan")), ValueError, "lr"),
        (with_group(betas=(0.9,)), TypeError, "betas"),
        (with_group(momentum=0.9), ValueError, "momentum"),
        (with_group(params=[0, 7]), ValueError, "params"),
        (with_group(params=[0.0, 1.0]), TypeError, "params"),
        (with_group(params=None), TypeError, "params"),
        (with_group(param_names=[1, 2]), TypeError, "param_names"),
        ({**sd, "schedules": [{"kind": "cosine", "count": -1}]}, ValueError, "count"),
        ({**sd, "schedules": [{"kind": "cosine", "count": 1.5}]}, TypeError, "count"),
        ({**sd, "schedules": [{"kind": "cosine", "count": 1, "mode": "up"}]}, ValueError, "mode"),
        ({**sd, "schedules": [{"kind": "cosine", "count": 1, "extra": 2}]}, ValueError, "extra"),
        ({**sd, "schedules": [{"count": 1}]}, ValueError, "schedule"),
        ({**sd, "schedules": 3}, ValueError, "schedules"),
    ]


@pytest.mark.parametrize("name", ["adam", "adafactor"])
def test_load_state_dict_rejects_and_changes_nothing(name):
    params, opt = trained(name)
    sd = opt.state_dict()
    opt.load_state_dict(sd)
    cases = bad_state_dicts(sd)
    if name == "adafactor":  # no betas, no exp_avg: adafactor's own spellings
        cases = [c for c in cases if c[2] not in ("betas", "exp_avg")]
        entry = sd["state"][0]
        cases += [({**sd, "state": {0: {**entry, "row_var": np.zeros((4, 1), np.int32)}}}, TypeError, "row_var"),
                  ({**sd, "state": {0: {**entry, "variance": np.zeros((3, 4))}}}, ValueError, "variance")]
    before = snapshot(opt, params)
    steps = {i: s.get("step") for i, s in opt.state.items()}
    for bad, exc, match in cases:
        with pytest.raises(exc, match=match):
            opt.load_state_dict(bad)
        assert_same(before, snapshot(opt, params))
        assert {i: s.get("step") for i, s in opt.state.items()} == steps


def test_load_state_dict_keeps_named_params_in_place():
    w, b = np.ones(3), np.ones(2)
    opt = pyopt.SGD({"w": w, "b": b}, momentum=0.9)
    opt.step({"w": np.ones(3), "b": np.ones(2)})
    sd = opt.state_dict()
    sd["param_groups"][0]["param_names"] = ["b", "w"]
    with pytest.raises(ValueError, match="named"):
        opt.load_state_dict(sd)


def test_ema_and_lookahead_state_dicts_are_strict():
    w = np.ones(3)
    ema = pyopt.EMA([w])
    sd = ema.state_dict()
    for bad, exc in [({**sd, "format": 9}, ValueError), ({**sd, "extra": 1}, ValueError),
                     ({**sd, "num_updates": 1.0}, ValueError), ({**sd, "averages": [["1.0", "2.0", "3.0"]]}, TypeError),
                     ({**sd, "averages": [object()]}, TypeError)]:
        with pytest.raises(exc):
            ema.load_state_dict(bad)
        assert ema.num_updates == 0
    la = pyopt.Lookahead(pyopt.SGD([np.ones(3)], lr=0.1), k=2)
    la.step([np.ones(3)])
    sd = la.state_dict()
    for bad in [{**sd["lookahead"], "format": 5}, {**sd["lookahead"], "extra": 1}]:
        with pytest.raises(ValueError):
            la.load_state_dict({**sd, "lookahead": bad})
        assert la.counters == [1]


# ----- all-or-nothing steps --------------------------------------------------------------------
def test_adafactor_steps_an_empty_matrix_and_a_failing_step_changes_nothing():
    rng = np.random.default_rng(2)
    params = [rng.standard_normal((2, 3)), np.zeros((2, 0, 3)), rng.standard_normal(5)]
    opt = pyopt.Adafactor(params, lr=0.1)
    grads = [rng.standard_normal(p.shape) for p in params]
    opt.step(grads)  # torch's Adafactor steps an empty param (its state keeps its shape)
    assert opt.state[1]["step"] == 1 and opt.state[1]["col_var"].shape == (2, 1, 3)
    before = snapshot(opt, params)
    params[2].flags.writeable = False  # made read-only after construction
    with pytest.raises(ValueError, match=r"params\[2\].*read-only"):
        opt.step(grads)
    params[2].flags.writeable = True
    assert_same(before, snapshot(opt, params))
    with pytest.raises(ValueError, match=r"params\[2\].*shape"):
        opt.step([grads[0], grads[1], np.zeros(4)])
    assert_same(before, snapshot(opt, params))
    with pytest.raises(ValueError, match="share memory"):
        opt.step([grads[0], grads[1], params[0].reshape(-1)[:5]])  # the grad of param 2 is a view of param 0
    assert_same(before, snapshot(opt, params))


@pytest.mark.parametrize("name", ["sgd", "adam", "adafactor"])
def test_a_refused_step_does_not_advance_schedules(name):
    params, opt = trained(name, steps=1)
    sched = pyopt.schedules.cosine(100, lr=1.0).attach(opt)
    good = [np.ones(p.shape) for p in params]
    opt.step(good)
    before = snapshot(opt, params)
    refused = [
        [good[0], np.ones(5)],  # wrong shape
        [good[0], params[1]],  # a grad aliasing its param
        [good[0], params[0].reshape(-1)[:4]],  # the grad of param 1 is a view of param 0
        [good[0]],  # too few
    ]
    for grads in refused:
        with pytest.raises(ValueError):
            opt.step(grads)
        assert sched.count == 1
        assert_same(before, snapshot(opt, params))
    opt.step(good)
    assert sched.count == 2


# ----- NaN hyperparameters ---------------------------------------------------------------------
def nan_cases():
    for name in [*pyopt._spec.rule_optimizers(), "adafactor"]:
        defaults = pyopt.Adafactor([np.zeros(2)]).defaults if name == "adafactor" else spec(name).defaults
        for key, default in defaults.items():
            if isinstance(default, bool):
                continue
            if isinstance(default, tuple):
                for k in range(len(default)):
                    value = list(default)
                    value[k] = math.nan
                    yield name, key, tuple(value), TUPLES.get(key, ())[k] if key in TUPLES else f"{key}\\[{k}\\]"
            else:
                yield name, key, math.nan, key


@pytest.mark.parametrize("name,key,value,label", list(nan_cases()))
def test_nan_is_rejected_for_every_hyperparameter(name, key, value, label):
    w = np.zeros(3)
    with pytest.raises(ValueError, match=f"({key}|{label})"):
        pyopt.create(name, [w], **{key: value})
    opt = pyopt.create(name, [w])
    opt.param_groups[0][key] = value
    with pytest.raises(ValueError, match=f"({key}|{label})"):
        opt.step([np.ones(3)])
    assert not w.any()


def test_nan_rejected_by_the_functional_api():
    w, v = np.zeros(3), np.zeros(3)
    with pytest.raises(ValueError, match="lambd"):
        pyopt.functional.asgd_(w, np.ones(3), v, step=1, lambd=math.nan)
    with pytest.raises(ValueError, match="step_size"):
        pyopt.functional.rprop_(w, np.ones(3), np.zeros(3), np.ones(3), step=1, step_sizes=(1e-6, math.nan))
    assert not w.any()


# ----- overlapping arrays ----------------------------------------------------------------------
def test_a_grad_may_not_alias_any_array_the_step_writes():
    buf = np.zeros(20)
    p0, p1 = buf[:10], buf[10:]
    opt = pyopt.Adam([p0, p1])
    opt.step([np.ones(10), np.ones(10)])
    before = snapshot(opt, [p0, p1])
    state = opt.state
    for grads, match in [
        ([None, p0], r"params\[1\].*params\[0\]"),  # the grad of param 1 is param 0
        ([buf[5:15], np.ones(10)], r"params\[0\]: gradient shares memory"),  # straddles both params
        ([np.ones(10), state[0]["exp_avg"]], r"params\[1\].*params\[0\] state 'exp_avg'"),
        ([state[1]["exp_avg_sq"], None], r"params\[0\].*params\[1\] state 'exp_avg_sq'"),
    ]:
        with pytest.raises(ValueError, match=match):
            opt.step(grads)
        assert_same(before, snapshot(opt, [p0, p1]))
    shared = np.ones(10)
    opt.step([shared, shared])  # grads sharing memory with each other are only read: fine


def test_functional_states_may_not_overlap():
    w = np.zeros(4)
    m = np.zeros(8)
    with pytest.raises(ValueError, match="share memory"):
        pyopt.functional.adam_(w, np.ones(4), m[:4], m[2:6], step=1)
    with pytest.raises(ValueError, match="grad shares memory"):
        pyopt.functional.adam_(w, m[:4], m[:4], np.zeros(4), step=1)
    assert not w.any() and not m.any()


# ----- threads ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["adamw", "adafactor"])
def test_two_threads_stepping_one_optimizer_give_the_serial_result(name):
    rng = np.random.default_rng(3)
    init = [rng.standard_normal(200_000).astype(np.float32), rng.standard_normal((300, 40)).astype(np.float32)]
    grads = [rng.standard_normal(p.shape).astype(np.float32) for p in init]
    steps = 60
    serial = [p.copy() for p in init]
    opt = pyopt.create(name, serial, lr=1e-3)
    for _ in range(2 * steps):
        opt.step(grads)
    shared = [p.copy() for p in init]
    opt = pyopt.create(name, shared, lr=1e-3)
    errors = []

    def work():
        try:
            for _ in range(steps):
                opt.step(grads)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(s["step"] == 2 * steps for s in opt.state.values())
    for a, b in zip(serial, shared):
        np.testing.assert_array_equal(a, b)
