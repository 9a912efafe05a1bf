"""The records (csrc/include/pyopt/records.def) as _core.optimizers() shows them: the schema, and
that they state what the Python side stated before them (classes, signatures, papers, demo lrs,
the tuner's name-based search rules), apart from the one fix they carry (SophiaG's rho)."""
import inspect
import math

import pytest

import pyopt
from pyopt import _core

RECORDS = _core.optimizers()
PYTHON_ONLY = {"muon": pyopt.Muon, "adafactor": pyopt.Adafactor}


def test_schema():
    keys = {"name", "rule", "alias_of", "class_name", "summary", "reference", "paper", "paper_url", "lr_range",
            "demo_lr", "fixed", "slots", "scalars", "hyper"}
    hyper_keys = {"name", "default", "kind", "range", "search", "low", "high", "keyword_only", "doc", "range_note"}
    for name, d in RECORDS.items():
        assert set(d) == keys, name
        for h in d["hyper"]:
            assert set(h) == hyper_keys, (name, h)
            assert h["kind"] in ("real", "bool", "int")
            assert h["search"] in ("fixed", "log", "one_minus_log", "flag", "weight_decay")
    assert [n for n, d in RECORDS.items() if d["rule"] is None] == ["muon", "adafactor"]
    assert RECORDS["adamw"]["alias_of"] == "adam" and RECORDS["adam"]["alias_of"] is None
    assert set(_core.hyper_tuples()) >= {"betas", "etas", "step_sizes", "nus"}


def _class(name):
    from pyopt.optimizers import CLASSES

    return CLASSES.get(name) or PYTHON_ONLY[name]


@pytest.mark.parametrize("name", list(RECORDS))
def test_records_state_what_the_python_side_states(name):
    from pyopt.catalog import PAPERS
    from pyopt.demo import DEFAULT_LR

    d = RECORDS[name]
    cls = _class(name)
    assert d["class_name"] == cls.__name__
    assert tuple(d["lr_range"]) == tuple(getattr(cls, "lr_range", (1e-5, 1e-1)))
    assert (d["paper"], d["paper_url"]) == PAPERS[name]
    if name in DEFAULT_LR:
        assert d["demo_lr"] == DEFAULT_LR[name]
    params = inspect.signature(cls.__init__).parameters
    keyword_only = {k for k, p in params.items() if p.kind is p.KEYWORD_ONLY}
    assert {h["name"] for h in d["hyper"] if h["keyword_only"]} - set(d["fixed"]) == keyword_only


def _old_dimensions(name):
    """tuner/space.py's name-based rules (as the tuner applied them before the records), budget full."""
    from tuner.space import dimensions

    return {(dim.key, dim.index): (dim.kind, dim.low, dim.high) for dim in dimensions(name, "full")}


def _record_dimensions(name):
    d = RECORDS[name]
    tuples = {m: (t, i) for t, ms in _core.hyper_tuples().items() for i, m in enumerate(ms)}
    out = {}
    for h in d["hyper"]:
        if h["search"] == "fixed" or h["name"] in d["fixed"]:
            continue
        key, index = tuples.get(h["name"], (h["name"], None))
        out[(key, index)] = (h["search"], h["low"], h["high"])
    return out


@pytest.mark.parametrize("name", list(RECORDS))
def test_search_kinds_reproduce_the_tuners_rules(name):
    old, new = _old_dimensions(name), _record_dimensions(name)
    if name == "sophia":  # the fix: rho is a clipping scale, not a momentum
        assert old.pop(("rho", None))[0] == "one_minus_log"
        assert new.pop(("rho", None)) == ("log", 0.01, 0.1)
    assert new == old  # kinds, and bounds bit for bit


def test_python_only_defaults_match_their_signatures():
    muon = {h["name"]: h["default"] for h in RECORDS["muon"]["hyper"]}
    sig = inspect.signature(pyopt.Muon.__init__).parameters
    assert (muon["ns_a"], muon["ns_b"], muon["ns_c"]) == sig["ns_coefficients"].default
    for key in ("lr", "weight_decay", "momentum", "nesterov", "eps", "ns_steps"):
        assert muon[key] == sig[key].default, key
    ada = {h["name"]: h["default"] for h in RECORDS["adafactor"]["hyper"]}
    sig = inspect.signature(pyopt.Adafactor.__init__).parameters
    assert math.isnan(ada["eps1"]) and sig["eps"].default == (None, ada["eps2"])
    for key in ("lr", "beta2_decay", "d", "weight_decay", "maximize"):
        assert ada[key] == sig[key].default, key
