"""pyopt bench: the CLI's outputs, the RMW probe's semantics and the fairness of the peers.
No timing assertions: only that the runner runs and the things it times do the right work."""
from __future__ import annotations

import csv
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

QUICK = ["--quick", "--cases", "3x100", "--peers", "numpy,torch-foreach,torch-fused,probe"]


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

    with open(cs, newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["date", "cpu", "isa"] + bench.FIELDS
        csv_rows = list(reader)
    assert len(csv_rows) == len(rows)
    assert {(r["optimizer"], r["impl"], r["status"]) for r in csv_rows} == {
        (r["optimizer"], r["impl"], r["status"]) for r in rows}


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
@pytest.mark.parametrize("arrays", [(1, 0), (1, 1), (3, 1), (5, 2)])
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
    untouched(lambda x: probe([x] + [good.copy() for _ in range(5)], [nan]), ValueError, "at most")
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
