"""pyopt bench: the CLI's outputs, the RMW probe's semantics and the fairness of the peers.
No timing assertions: only that the runner runs and the things it times do the right work."""
from __future__ import annotations

import csv
import sys
import json

import numpy as np
import pytest

import pyopt
from pyopt import _core, bench

probe = _core.rmw_probe


@pytest.fixture
def threads():
    before = _core.num_threads()
    yield pyopt.set_num_threads
    pyopt.set_num_threads(before)


# --------------------------------------------------------------------------- CLI / runner

QUICK = ["--quick", "--cases", "3x100", "--peers", "pyopt-torch,numpy,torch-foreach,torch-fused,probe"]


def test_cli_writes_json_and_csv(tmp_path, capsys):
    js, cs = tmp_path / "out.json", tmp_path / "new" / "dir" / "out.csv"  # missing folders are made
    assert bench.main(QUICK + ["--optimizers", "adamw,lion", "--json", str(js), "--csv", str(cs)]) == 0
    out = capsys.readouterr().out
    assert "cpu:" in out and "adamw" in out and "lion" in out and "probe/pyopt" in out

    report = json.loads(js.read_text())
    machine = report["machine"]
    for key in ("date", "cpu", "cores", "isa", "pyopt", "pyopt_threads", "torch", "numpy", "loadavg"):
        assert key in machine
    assert machine["isa"] == pyopt.info()["isa"]
    assert report["settings"]["cases"] == ["3x100"]
    assert report["settings"]["case_sizes"] == {"3x100": [3, 100]}
    rows = report["results"]
    assert {r["optimizer"] for r in rows} == {"adamw", "lion"}
    for r in rows:
        assert set(bench.FIELDS) <= set(r)
        assert (r["tensors"], r["size"], r["dtype"]) == (3, 100, "float32")
        if r["status"] == "ok":
            assert r["median_s"] > 0 and r["gbps"] > 0 and r["pyopt_speedup"] > 0
            assert len(r["samples_s"]) == 3 and r["steps_per_block"] >= 1
        else:
            assert r["status"] == "n/a" or r["status"].startswith("unavailable: ")
            assert r["median_s"] is None
    by = {(r["optimizer"], r["impl"]): r for r in rows}
    assert by["adamw", "pyopt"]["probe_fraction"] > 0
    assert by["adamw", "pyopt"]["bytes_per_step"] == 4 * 3 * 100 * 7  # p, m, v read+written, g read
    assert by["lion", "pyopt"]["bytes_per_step"] == 4 * 3 * 100 * 5   # p, m read+written, g read
    assert by["lion", "torch-fused"]["status"] == "n/a"
    assert by["lion", "numpy"]["status"] == "ok"
    assert by["adamw", "probe"]["status"] == "ok"
    for name in ("adamw", "lion"):
        adapter, ours = by[name, "pyopt-torch"], by[name, "pyopt"]
        if adapter["status"] != "ok":  # (no torch here)
            assert adapter["status"].startswith("unavailable: torch not importable")
            continue
        assert adapter["bytes_per_step"] == ours["bytes_per_step"]  # the same work, through pyopt.torch
        assert adapter["adapter_overhead"] == pytest.approx(adapter["median_s"] / ours["median_s"] - 1)
        assert ours["adapter_overhead"] is None

    with open(cs, newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["date", "cpu", "isa"] + bench.FIELDS
        csv_rows = list(reader)
    assert len(csv_rows) == len(rows)
    assert {(r["optimizer"], r["impl"], r["status"]) for r in csv_rows} == {
        (r["optimizer"], r["impl"], r["status"]) for r in rows}


def test_table_shows_pyopt_torch_time_and_adapter_overhead(tmp_path, capsys):
    pytest.importorskip("torch")
    js = tmp_path / "t.json"
    assert bench.main(["--quick", "--cases", "3x100", "--optimizers", "adamw,sgd", "--peers", "pyopt-torch,probe",
                       "--markdown", "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "adapter = pyopt-torch time / pyopt time - 1" in out
    table = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("| ")]
    cols = [c.strip() for c in table[0]]
    assert cols[cols.index("pyopt-torch") + 1] == "adapter"
    by = {(r["optimizer"], r["impl"]): r for r in json.loads(js.read_text())["results"]}
    for cells in table[1:]:
        cell = dict(zip(cols, (c.strip() for c in cells)))
        adapter = by[cell["optimizer"], "pyopt-torch"]
        assert adapter["status"] == "ok" and adapter["median_s"] > 0
        assert cell["pyopt-torch"] == bench._fmt_time(adapter["median_s"])
        assert cell["adapter"] == f"{adapter['adapter_overhead']:+.1%}"
    assert {c[0].strip() for c in table[1:]} == {"adamw", "sgd"}


def test_pyopt_bench_subcommand_and_module(tmp_path, python_child):
    js = tmp_path / "b.json"
    from pyopt import cli

    assert cli.main(["bench", "--quick", "--cases", "1x64", "--peers", "probe", "--json", str(js)]) == 0
    assert [r["impl"] for r in json.loads(js.read_text())["results"]] == ["pyopt", "probe"]
    done = python_child("-m", "pyopt.bench", "--help")  # outside the source tree
    assert done.returncode == 0 and "--optimizers" in done.stdout and "--threads" in done.stdout


def test_cli_rejects_bad_arguments(capsys):
    assert bench.main(["--quick", "--optimizers", "nosuch"]) == 2
    assert bench.main(["--quick", "--cases", "ten"]) == 2
    assert bench.main(["--quick", "--peers", "jax"]) == 2
    assert "error" in capsys.readouterr().err


def test_run_returns_structured_results(threads):
    report = bench.run(["momentum"], ["2x50"], ["float64"], peers=["numpy", "probe"], threads=1, repeats=2,
                       warmup=1, block_ms=0.5, gap_ms=0.0)
    assert _core.num_threads() == 1
    assert [r["impl"] for r in report["results"]] == ["pyopt", "numpy", "probe"]
    assert all(r["status"] == "ok" for r in report["results"])
    assert report["settings"]["threads"] == 1


def test_parse_case():
    assert bench.parse_case("10x1k") == (10, 1_000)
    assert bench.parse_case("100x33k") == (100, 33_000)
    assert bench.parse_case("1x64M") == (1, 64_000_000)
    assert bench.parse_case("4x7") == (4, 7)
    for bad in ("x1k", "1x", "0x5", "2x3G"):
        with pytest.raises(ValueError):
            bench.parse_case(bad)


def test_traffic_from_slots():
    assert bench.traffic("adamw") == (["exp_avg", "exp_avg_sq"], 3)
    assert bench.traffic("sgd") == ([], 1)          # momentum 0: no buffer
    assert bench.traffic("momentum") == (["momentum_buffer"], 2)
    assert bench.traffic("amsgrad")[1] == 4
    assert bench.bytes_per_step("adam", 2, 10, 8) == 8 * 2 * 10 * 7


# --------------------------------------------------------------------------- the probe

def _bits(a):
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64).copy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("sizes", [[5], [1000] * 3, [3, 70_000, 17, 0, 40_001]])
@pytest.mark.parametrize("arrays", [(1, 0), (1, 1), (3, 1), (5, 2), (6, 1)])
def test_probe_copies_unchanged_and_reads_everything(dtype, nthreads, sizes, arrays, threads):
    threads(nthreads)
    a, b = arrays
    rng = np.random.default_rng(1)
    rw = [rng.standard_normal(n).astype(dtype) for n in sizes for _ in range(a)]
    ro = [rng.standard_normal(n).astype(dtype) for n in sizes for _ in range(b)]
    special = np.array([-0.0, 0.0, np.inf, -np.inf, np.nan, 1e-45, -3.0], dtype=dtype)
    for x in rw:
        x[: len(special)] = special[: len(x)]
    before = [_bits(x) for x in rw]
    ro_before = [_bits(x) for x in ro]
    probe(rw, ro, len(sizes))
    for x, bits in zip(rw, before):
        np.testing.assert_array_equal(_bits(x), bits)  # bit for bit, -0.0 and NaN included
    for x, bits in zip(ro, ro_before):
        np.testing.assert_array_equal(_bits(x), bits)
    if b:
        # A NaN in a read-only array reaches every read-write element at its index: the probe
        # reads every element of every array and writes every read-write element.
        for x in ro[::b]:
            x[:] = np.nan
        probe(rw, ro, len(sizes))
        assert all(np.isnan(x).all() for x in rw)


def test_probe_nan_only_where_it_is(threads):
    threads(2)
    n = 100_000
    p, m = np.ones(n, np.float32), np.full(n, 2.0, np.float32)
    g = np.zeros(n, np.float32)
    g[[0, 12_345, n - 1]] = [np.nan, np.inf, np.nan]
    probe([p, m], [g])
    assert np.flatnonzero(np.isnan(p)).tolist() == [0, 12_345, n - 1]
    assert np.flatnonzero(np.isnan(m)).tolist() == [0, 12_345, n - 1]
    assert (p[~np.isnan(p)] == 1).all() and (m[~np.isnan(m)] == 2).all()


def test_probe_errors_before_touching_anything():
    good = np.ones(10, np.float32)
    nan = np.full(10, np.nan, np.float32)

    def untouched(call, exc, match):
        x = np.ones(10, np.float32)
        with pytest.raises(exc, match=match):
            call(x)
        assert (x == 1).all(), "the probe ran before the error"

    untouched(lambda x: probe([x, [1.0] * 10], [nan, nan], 2), TypeError, r"read_write\[1\].*numpy.ndarray")
    untouched(lambda x: probe([x, np.ones(10, np.int32)], [nan, nan], 2), TypeError, r"read_write\[1\].*int32")
    untouched(lambda x: probe([x, np.ones(10, np.float16)], [nan, nan], 2), TypeError, "float16")
    untouched(lambda x: probe([x, np.ones(10)], [nan, nan], 2), TypeError, r"read_write\[1\].*float64")
    untouched(lambda x: probe([x, np.ones(9, np.float32)], [nan]), ValueError, r"read_write\[1\].*9 elements")
    untouched(lambda x: probe([x], [np.full(11, np.nan, np.float32)]), ValueError, r"read_only\[0\].*11 elements")
    untouched(lambda x: probe([x, np.ones(20, np.float32)[::2]], [nan, nan], 2), ValueError, "C-contiguous")
    ro = np.ones(10, np.float32)
    ro.flags.writeable = False
    untouched(lambda x: probe([x, ro], [nan, nan], 2), ValueError, r"read_write\[1\].*read-only")
    untouched(lambda x: probe([x, x], [nan, nan], 2), ValueError, "share memory")
    untouched(lambda x: probe([x], [x]), ValueError, "share memory")
    big = np.ones(20, np.float32)
    untouched(lambda x: probe([x, big[5:15]], [big[:10], nan], 2), ValueError, "share memory")
    untouched(lambda x: probe([x, good.copy(), good.copy()], [nan, nan], 2), ValueError, "do not split")
    untouched(lambda x: probe([x] + [good.copy() for _ in range(6)], [nan]), ValueError, "at most")  # 1 + 5 slots
    untouched(lambda x: probe([x], [nan, nan, nan]), ValueError, "at most")
    untouched(lambda x: probe([x], [nan], 0), ValueError, "tensors must be >= 1")
    with pytest.raises(ValueError):
        probe([], [])
    with pytest.raises(TypeError):
        probe("abc", [])
    probe([good], [np.full(10, 3.0, np.float32)])  # read-only arrays may be read-only
    frozen = np.ones(10, np.float32)
    frozen.flags.writeable = False
    probe([good], [frozen])
    assert (good == 1).all()


def test_probe_impl_mirrors_the_optimizer_arrays():
    params = [np.ones(7, np.float32), np.ones(9, np.float32)]
    grads = [np.ones(7, np.float32), np.ones(9, np.float32)]
    fn = bench.make_impl("probe", "adamw", params, grads)
    fn()
    assert all((p == 1).all() for p in params)


# --------------------------------------------------------------------------- fair peers

@pytest.mark.parametrize("name", sorted(bench.NUMPY_PEERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_peer_matches_pyopt(name, dtype):
    rng = np.random.default_rng(2)
    params = [rng.standard_normal(n).astype(dtype) for n in (33, 1000)]
    grads = [np.empty_like(p) for p in params]
    ours = pyopt.create(name, [p.copy() for p in params])
    theirs_params = [p.copy() for p in params]
    theirs = bench.numpy_peer(name, theirs_params, grads)
    for _ in range(6):
        for g in grads:
            g[:] = rng.standard_normal(g.size)
        ours.step(grads)
        theirs.step()
    rtol, atol = (2e-5, 1e-6) if dtype == np.float32 else (1e-12, 1e-14)
    for a, b in zip(_params(ours), theirs_params):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
    assert not all(np.array_equal(a, b) for a, b in zip(params, theirs_params)), "nothing moved"


def _params(opt):
    return [p for group in opt.param_groups for p in group["params"]]


def test_numpy_peer_na_for_the_rest():
    with pytest.raises(NotImplementedError):
        bench.numpy_peer("adan", [np.ones(3)], [np.ones(3)])
    with pytest.raises(bench.Unavailable, match="n/a"):
        bench.make_impl("numpy", "nadam", [np.ones(3)], [np.ones(3)])


@pytest.mark.parametrize("name,mode", [("adamw", "fused"), ("adam", "foreach"), ("momentum", "fused"),
                                       ("adagrad", "fused"), ("rmsprop", "foreach"), ("nadam", "foreach")])
def test_torch_peer_is_one_step_at_pyopt_defaults(name, mode):
    pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    params = [rng.standard_normal(n).astype(np.float32) for n in (5, 300)]
    grads = [rng.standard_normal(n).astype(np.float32) for n in (5, 300)]
    ours = pyopt.create(name, [p.copy() for p in params])
    theirs = [p.copy() for p in params]
    step = bench.make_impl(f"torch-{mode}", name, theirs, grads)  # updates `theirs` in place
    for _ in range(3):
        ours.step(grads)
        step()
    for a, b in zip(_params(ours), theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", pyopt._spec.rule_optimizers())
def test_pyopt_torch_peer_is_pyopt_bit_for_bit(name):
    """pyopt-torch runs pyopt's step (same defaults, same kernels) on torch tensors viewing its params."""
    pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    params = [rng.standard_normal(n).astype(np.float32) for n in (5, 300)]
    grads = [rng.standard_normal(n).astype(np.float32) for n in (5, 300)]
    ours = pyopt.create(name, [p.copy() for p in params])
    theirs = [p.copy() for p in params]
    step = bench.make_impl("pyopt-torch", name, theirs, grads)  # updates `theirs` in place
    for _ in range(3):
        ours.step(grads)
        step()
    for start, a, b in zip(params, _params(ours), theirs):
        assert not np.array_equal(b, start), "pyopt-torch did not step the caller's params"
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("name", ["adamw", "lion", "adan"])
@pytest.mark.parametrize("text", ["float64", "bf16", "bf16+bf16", "bf16+master", "bf16+master+int8", "int8",
                                  "f16+master"])
def test_pyopt_torch_peer_takes_the_dtype_specs_storage_options(name, text):
    pytest.importorskip("torch")
    dspec = bd.parse_dtype_spec(text)
    rng = np.random.default_rng(8)
    # small params: a 16-bit param of about 1 could not move by lion's lr = 1e-4
    params = [(0.01 * rng.standard_normal(n)).astype(np.float32).astype(dspec.param_dtype) for n in (5, 5000)]
    grads = [rng.standard_normal(n).astype(np.float32).astype(dspec.param_dtype) for n in (5, 5000)]
    ours = pyopt.create(name, [p.copy() for p in params], **dspec.storage_options())
    theirs = [p.copy() for p in params]
    step = bench.make_impl("pyopt-torch", name, theirs, grads, dspec)
    for _ in range(3):
        ours.step(grads)
        step()
    for start, a, b in zip(params, _params(ours), theirs):
        assert b.dtype == dspec.param_dtype and not np.array_equal(b, start)
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))  # master and 8-bit states included


def test_pyopt_torch_peer_refuses_what_pyopt_refuses():
    pytest.importorskip("torch")
    bf16 = [np.ones(5000, bd.BF16)]
    with pytest.raises(ValueError, match="LAMB: lamb keeps its states as 'float32' only"):
        bench.make_impl("pyopt-torch", "lamb", bf16, bf16, bd.parse_dtype_spec("bf16+bf16"))
    rows = bench.run_case("sophia", "1x100", "bf16", peers=["pyopt-torch"], repeats=1, warmup=1, block_ms=0.1,
                          gap_ms=0.0)
    assert [(r.impl, r.status.split(":")[0]) for r in rows] == [("pyopt", "unavailable"),
                                                                ("pyopt-torch", "unavailable")]


def test_pyopt_torch_peer_unavailable_without_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import raises ImportError
    with pytest.raises(bench.Unavailable, match="unavailable: torch not importable"):
        bench.make_impl("pyopt-torch", "adamw", [np.ones(3, np.float32)], [np.ones(3, np.float32)])
    report = bench.run(["adamw"], ["2x50"], ["float32"], peers=["pyopt-torch"], repeats=1, warmup=1, block_ms=0.1,
                       gap_ms=0.0)
    ours, adapter = report["results"]
    assert ours["status"] == "ok" and adapter["status"].startswith("unavailable: torch not importable")
    assert adapter["median_s"] is None and adapter["adapter_overhead"] is None
    cells = bench.table_lines(report["results"], ["pyopt-torch"])[1].split()
    assert cells[-2:] == ["unavailable", "-"]  # (statuses cut to 11 characters in the text table)


def test_torch_fused_only_where_torch_has_it():
    pytest.importorskip("torch")
    with pytest.raises(bench.Unavailable, match="n/a"):
        bench.make_impl("torch-fused", "rmsprop", [np.ones(3, np.float32)], [np.ones(3, np.float32)])
    with pytest.raises(bench.Unavailable, match="n/a"):
        bench.make_impl("torch-foreach", "lion", [np.ones(3, np.float32)], [np.ones(3, np.float32)])


def test_deepspeed_row_is_na_or_a_step():
    with pytest.raises(bench.Unavailable, match="n/a"):
        bench.make_impl("deepspeed", "lion", [np.ones(3, np.float32)], [np.ones(3, np.float32)])
    with pytest.raises(bench.Unavailable, match="n/a"):
        bench.make_impl("deepspeed", "adamw", [np.ones(3)], [np.ones(3)])  # float64


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_deepspeed_peer_matches_pyopt_when_installed(name):
    pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    params = [rng.standard_normal(n).astype(np.float32) for n in (5, 300)]
    grads = [rng.standard_normal(n).astype(np.float32) for n in (5, 300)]
    theirs = [p.copy() for p in params]
    try:
        step = bench.make_impl("deepspeed", name, theirs, grads)  # runs one step to build/load the op
    except bench.Unavailable as exc:
        assert str(exc).startswith("unavailable: ")
        pytest.skip(str(exc))
    ours = pyopt.create(name, [p.copy() for p in params])
    ours.step(grads)
    for _ in range(2):
        ours.step(grads)
        step()
    for a, b in zip(_params(ours), theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- dtype specs (--dtypes)

from pyopt import bench_dtypes as bd  # noqa: E402


@pytest.mark.parametrize("text,name,param,master,state", [
    ("float32", "float32", "float32", False, "float32"),
    ("float64", "float64", "float64", False, "float32"),
    ("f32", "float32", "float32", False, "float32"),
    ("f64+f32", "float64", "float64", False, "float32"),
    ("bf16", "bf16", "bfloat16", False, "float32"),
    ("bfloat16+f32", "bf16", "bfloat16", False, "float32"),
    ("f16+bf16", "f16+bf16", "float16", False, "bfloat16"),
    ("bf16+bf16", "bf16+bf16", "bfloat16", False, "bfloat16"),
    ("bf16+master", "bf16+master", "bfloat16", True, "float32"),
    ("bf16+master+int8", "bf16+master+int8", "bfloat16", True, "int8"),
    ("bf16+int8", "bf16+int8", "bfloat16", False, "int8"),
    ("int8", "f32+int8", "float32", False, "int8"),
    (" f32+int8 ", "f32+int8", "float32", False, "int8"),
    ("bf16+int8+master", "bf16+master+int8", "bfloat16", True, "int8"),
    ("float16+master", "f16+master", "float16", True, "float32"),
])
def test_parse_dtype_spec(text, name, param, master, state):
    d = bd.parse_dtype_spec(text)
    assert (d.name, d.param, d.master, d.state) == (name, param, master, state)
    assert bd.parse_dtype_spec(d.name) == d  # the canonical name parses to the same spec
    assert d.plain == (param in ("float32", "float64") and state == "float32")
    options = d.storage_options()
    assert options.get("master_weights", False) == master and options.get("state_dtype", "float32") == state


@pytest.mark.parametrize("text,why", [
    ("bf8", "unexpected 'bf8'"), ("bf16+int4", "unexpected 'int4'"), ("", "expected e.g."),
    ("bf16++int8", "unexpected ''"), ("bf16+bf16+int8", "unexpected 'int8'"),
    ("bf16+master+master", "unexpected 'master'"), ("f32+master", "master weights are for f16/bf16 params"),
    ("int8+int8", "unexpected 'int8'"), ("f64+bf16", "float64 params keep float64 states"),
    ("master", "master weights are for f16/bf16 params"), ("bf16+sr", "stochastic rounding (sr) is not benchmarked"),
])
def test_malformed_dtype_specs_are_errors_naming_the_spec(text, why):
    with pytest.raises(ValueError, match="bad dtype spec " + repr(text).replace("+", r"\+")) as info:
        bd.parse_dtype_spec(text)
    assert why in str(info.value)


@pytest.mark.parametrize("argv", [["--dtypes", "bf16,bf16+int4"], ["--dtypes", "float16x"]])
def test_cli_bad_dtype_spec_exits_2_argparse_style(argv, capsys):
    with pytest.raises(SystemExit) as info:
        bench.main(["--quick"] + argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    bad = argv[1].split(",")[-1]
    assert "usage:" in err and "error: argument --dtypes: bad dtype spec " + repr(bad) in err


def test_cli_int8_spec_for_an_optimizer_without_8bit_states(capsys):
    no_int8 = next(n for n in pyopt._spec.rule_optimizers() if not bd.int8_slots(n))
    assert bench.main(["--quick", "--optimizers", f"adamw,{no_int8}", "--dtypes", "bf16,int8"]) == 2
    err = capsys.readouterr().err
    assert "dtype spec 'f32+int8'" in err and no_int8 in err


def _model_bytes(name, dspec, n):
    """The contract's storage rules, written out: per slot float32 (float64 for float64 params),
    2 B for bfloat16 states, n + 4*ceil(n/256) for an 8-bit-capable slot of a tensor >= 4096."""
    param = dspec.param_dtype.itemsize
    slots = bench.traffic(name)[0]
    int8 = set(_core.optimizers()[name]["int8_slots"])
    total = param * n  # the param, read and written
    if dspec.master and param == 2:
        total += 4 * n
    for slot in slots:
        if dspec.state == "int8" and slot in int8 and n >= 4096:
            total += n + 4 * -(-n // 256)
        elif dspec.state == "bfloat16" and param != 8:
            total += 2 * n
        else:
            total += max(param, 4) * n
    return total, param * n  # read-write, read-only (the grad)


@pytest.mark.parametrize("name", ["adamw", "lion", "momentum", "adagrad", "adan", "nadam"])
@pytest.mark.parametrize("text", ["float32", "float64", "bf16", "f16", "bf16+bf16", "bf16+master", "bf16+int8",
                                  "bf16+master+int8", "int8", "f16+master+bf16"])
@pytest.mark.parametrize("n", [1, 4095, 4096, 4097, 1_000_000])
def test_step_bytes_follow_the_storage_rules(name, text, n):
    dspec = bd.parse_dtype_spec(text)
    rw, ro = _model_bytes(name, dspec, n)
    got = bd.step_bytes(name, dspec, 3, n)
    assert (got.read_write, got.read_only) == (3 * rw, 3 * ro)
    assert got.moved == 3 * (2 * rw + ro)
    if dspec.plain:
        assert got.moved == bench.bytes_per_step(name, 3, n, dspec.param_dtype.itemsize)


def test_int8_bytes_only_for_the_rules_8bit_slots():
    n = 10_000
    blocks = -(-n // 256)
    int8 = bd.parse_dtype_spec("bf16+master+int8")
    assert bd.slot_bytes("adamw", int8, n) == {"master": 4 * n, "exp_avg": n + 4 * blocks, "exp_avg_sq": n + 4 * blocks}
    assert bd.slot_bytes("adamw", int8, 4095) == {"master": 4 * 4095, "exp_avg": 4 * 4095, "exp_avg_sq": 4 * 4095}
    no_int8 = next(x for x in pyopt._spec.rule_optimizers() if not bd.int8_slots(x) and bench.traffic(x)[0])
    assert set(bd.slot_bytes(no_int8, int8, n).values()) == {4 * n}


@pytest.mark.parametrize("rw,ro", [(12, 4), (10, 2), (6, 2), (8 * 1000 + 32, 2000), (4 * 1000 + 32, 2000),
                                   (6 * 999 + 4, 4 * 999), (7, 3), (400, 4), (4 * 4097, 4 * 4097)])
def test_probe_layout_moves_the_bytes_of_the_step(rw, ro):
    layout = bd.probe_layout(bd.StepBytes(rw, ro))
    assert 1 <= len(layout) <= 2
    assert all(1 <= k <= 5 and b in (0, 1) and n >= 1 for k, b, n in layout)
    arrays = sum(k + b for k, b, _ in layout)
    got_rw = sum(4 * k * n for k, _, n in layout)
    got_ro = sum(4 * b * n for _, b, n in layout)
    assert rw <= got_rw < rw + 4 * arrays and ro <= got_ro < ro + 4  # whole float32 elements, rounded up
    bd.make_probe(bd.StepBytes(rw, ro))()  # the probe accepts every layout


def test_plain_probe_layout_is_the_optimizer_arrays():
    # f32 adamw: param, m, v read-write and the grad read-only, one call of 3 + 1 arrays of n elements
    assert bd.probe_layout(bd.step_bytes("adamw", bd.parse_dtype_spec("float32"), 1, 1000)) == [(3, 1, 1000)]


DTYPE_PEERS = "pyopt-torch,torch-fused,torch-fused-f32,bnb-8bit,torchao-8bit,probe"


def test_cli_dtype_specs_end_to_end(tmp_path, capsys):
    js = tmp_path / "d.json"
    specs = ["bf16", "bf16+bf16", "bf16+master+int8", "int8"]
    assert bench.main(["--quick", "--cases", "1x5000", "--dtypes", ",".join(specs), "--peers", DTYPE_PEERS,
                       "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "vs torch-f32" in out and "bf16+master+int8" in out and "f32+int8" in out
    report = json.loads(js.read_text())
    assert report["settings"]["dtypes"] == ["bf16", "bf16+bf16", "bf16+master+int8", "f32+int8"]
    rows = {(r["dtype"], r["impl"]): r for r in report["results"]}
    assert len(rows) == len(report["results"]) == 4 * 7
    for text in report["settings"]["dtypes"]:
        dspec = bd.parse_dtype_spec(text)
        ours = rows[text, "pyopt"]
        assert ours["status"] == "ok", ours["status"]
        assert ours["bytes_per_step"] == bd.step_bytes("adamw", dspec, 1, 5000).moved
        assert ours["probe_fraction"] > 0 and rows[text, "probe"]["status"] == "ok"
        adapter = rows[text, "pyopt-torch"]  # pyopt.torch on the spec's tensors and storage options
        assert adapter["status"] == "ok", adapter["status"]
        assert adapter["adapter_overhead"] == pytest.approx(adapter["median_s"] / ours["median_s"] - 1)
        reference = rows[text, "torch-fused-f32" if dspec.low_precision_param else "torch-fused"]
        if reference["status"] == "ok":
            assert ours["vs_torch_fused_f32"] == pytest.approx(reference["median_s"] / ours["median_s"])
        if not dspec.low_precision_param:
            assert rows[text, "torch-fused-f32"]["status"] == "n/a"  # torch-fused is on float32 params itself
        for peer in ("bnb-8bit", "torchao-8bit"):
            status = rows[text, peer]["status"]
            if dspec.state != "int8":
                assert status == "n/a"
            else:
                assert status == "ok" or status.startswith("unavailable: ")
        if dspec.state == "int8":  # 5000 is not a multiple of 256: torchao would keep float32 states
            assert "multiple of 256" in rows[text, "torchao-8bit"]["status"]

    # benchmarks/issue12_goals.py reads the report: one row per goal, measured where the case ran
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parents[2] / "benchmarks" / "issue12_goals.py"
    loader = importlib.util.spec_from_file_location("issue12_goals", path)
    goals = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(goals)
    table = goals.goal_rows(report)
    assert [r[:3] for r in table if r[1] == "1x5000" and r[2] == "vs bnb-8bit"] == [["f32+int8", "1x5000", "vs bnb-8bit"]]
    assert {r[0] for r in table if r[2] == "probe / pyopt"} == {"bf16", "bf16+bf16", "bf16+master+int8", "f32+int8"}
    assert all(r[3] == "not measured" for r in table if r[1] == "1x64M")


def test_missing_8bit_peers_are_reported_unavailable(monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "torchao", None)
    monkeypatch.setitem(sys.modules, "torchao.optim", None)
    int8 = bd.parse_dtype_spec("bf16+int8")
    params, grads = [np.ones(4096, bd.BF16)], [np.ones(4096, bd.BF16)]
    for impl, package in (("bnb-8bit", "bitsandbytes"), ("torchao-8bit", "torchao")):
        with pytest.raises(bench.Unavailable, match=f"unavailable: {package} not importable"):
            bench.make_impl(impl, "adamw", params, grads, int8)
        with pytest.raises(bench.Unavailable, match="^n/a$"):
            bench.make_impl(impl, "adamw", params, grads, bd.parse_dtype_spec("bf16+bf16"))
        with pytest.raises(bench.Unavailable, match="^n/a$"):
            bench.make_impl(impl, "adagrad", params, grads, int8)  # no such 8-bit optimizer there


def test_torch_peers_on_bf16_params_update_them_in_place():
    pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    params = [rng.standard_normal(n).astype(np.float32).astype(bd.BF16) for n in (5, 3000)]
    grads = [rng.standard_normal(n).astype(np.float32).astype(bd.BF16) for n in (5, 3000)]
    dspec = bd.parse_dtype_spec("bf16")
    ours = pyopt.create("adamw", [p.copy() for p in params])
    theirs = [p.copy() for p in params]
    step = bench.make_impl("torch-fused", "adamw", theirs, grads, dspec)
    for _ in range(3):
        ours.step(grads)
        step()
    for start, a, b in zip(params, _params(ours), theirs):
        assert b.dtype == bd.BF16 and not np.array_equal(b, start)
        # torch keeps bfloat16 moments, pyopt float32 ones: the same steps within bfloat16 rounding
        np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), rtol=2e-2, atol=1e-3)


def _int8_peer_matches_pyopt(impl, name, n, dtype_text):
    rng = np.random.default_rng(6)
    dspec = bd.parse_dtype_spec(dtype_text)
    # small params: a bfloat16 param of about 1 could not move by lr = 1e-3 (its spacing there is 2^-7)
    params = [(0.01 * rng.standard_normal(n)).astype(np.float32).astype(dspec.param_dtype)]
    grads = [np.zeros_like(params[0])]
    ours = pyopt.create(name, [p.copy() for p in params], **dspec.storage_options())
    theirs = [p.copy() for p in params]
    try:
        step = bench.make_impl(impl, name, theirs, grads, dspec)  # one step at zero grads: states start
    except bench.Unavailable as exc:
        pytest.skip(str(exc))
    ours.step(grads)
    lr = bench.spec(name).defaults["lr"]
    for _ in range(3):
        grads[0][:] = rng.standard_normal(n).astype(np.float32).astype(dspec.param_dtype)
        ours.step(grads)
        step()
    moved = np.abs(theirs[0].astype(np.float32) - params[0].astype(np.float32))
    assert moved.mean() > lr  # the peer ran its steps on the caller's params
    diff = np.abs(_params(ours)[0].astype(np.float32) - theirs[0].astype(np.float32))
    assert diff.mean() < 0.05 * lr * 3  # quantization noise, not another update rule or learning rate


@pytest.mark.parametrize("name,dtype_text", [("adamw", "int8"), ("adamw", "bf16+master+int8"), ("lion", "int8")])
def test_bitsandbytes_peer_is_pyopt_step_within_8bit_noise(name, dtype_text):
    pytest.importorskip("torch")
    _int8_peer_matches_pyopt("bnb-8bit", name, 8192, dtype_text)


def test_torchao_peer_is_pyopt_step_within_8bit_noise():
    pytest.importorskip("torch")
    _int8_peer_matches_pyopt("torchao-8bit", "adamw", 8192, "int8")  # torch.compile: ~20 s the first time


@pytest.mark.parametrize("name", ["adamw", "lion", "momentum", "adan"])
@pytest.mark.parametrize("text", ["bf16", "bf16+bf16", "bf16+master", "bf16+int8", "bf16+master+int8", "int8",
                                  "f16+master+bf16", "float32"])
@pytest.mark.parametrize("n", [1000, 4096, 70_001])
def test_bytes_model_is_what_the_optimizer_holds(name, text, n):
    """The probe's bytes per array are the bytes pyopt really keeps (opt.memory())."""
    dspec = bd.parse_dtype_spec(text)
    p = np.ones(n, dspec.param_dtype)
    opt = pyopt.create(name, [p], **dspec.storage_options())
    opt.step([np.full(n, 0.5, dspec.param_dtype)])
    held = opt.memory()
    assert held["params"] == p.nbytes
    parts = {k: v for k, v in held.items() if k not in ("params", "total") and v}
    assert parts == bd.slot_bytes(name, dspec, n)
    assert bd.step_bytes(name, dspec, 1, n).read_write == sum(parts.values()) + p.nbytes
