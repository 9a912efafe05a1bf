"""The records (csrc/include/pyopt/records.def) as _core.optimizers() shows them: the schema, and
the Python-written optimizers' defaults."""
import inspect
import math

import pyopt
from pyopt import _core

# The optimizers of optax written in Python (pyopt/sm3.py, fromage.py, polyak_sgd.py, dog.py, momo.py).
OPTAX_FAMILY = ["sm3", "fromage", "polyak_sgd", "dog", "momo"]

RECORDS = _core.optimizers()


def test_schema():
    keys = {"name", "rule", "alias_of", "class_name", "summary", "reference", "paper", "paper_url", "lr_range",
            "demo_lr", "fixed", "slots", "scalars", "hyper", "int8_slots", "nonnegative_slots",
            "state_dtypes", "per_tensor", "cxx"}
    hyper_keys = {"name", "default", "kind", "range", "search", "low", "high", "keyword_only", "doc", "range_note"}
    for name, d in RECORDS.items():
        assert set(d) == keys, name
        for h in d["hyper"]:
            assert set(h) == hyper_keys, (name, h)
            assert h["kind"] in ("real", "bool", "int")
            assert h["search"] in ("fixed", "log", "one_minus_log", "flag", "weight_decay")
    assert [n for n, d in RECORDS.items() if d["rule"] is None] == ["muon", "adafactor", "rowwise_adagrad", "lbfgs",
                                                                  "prodigy", "dadapt_adam",
                                                                  "dadapt_sgd", *OPTAX_FAMILY, "adamp", "came",
                                                                  "adam_mini", "normuon", "adamuon", "soap", "shampoo", "kron",
                                                                  "noisy_sgd", "mars_shampoo"]
    # The C++ pyopt::Optimizer runs every rule, Adafactor, and Muon when the build found a BLAS.
    assert {n for n, d in RECORDS.items() if d["cxx"]} == {*pyopt._spec.rule_optimizers(), "adafactor",
                                                           *(["muon"] if _core.have_blas() else [])}
    assert RECORDS["adamw"]["alias_of"] == "adam" and RECORDS["adam"]["alias_of"] is None
    assert set(_core.hyper_tuples()) >= {"betas", "etas", "step_sizes", "nus"}


def test_8bit_slots_are_the_issues_list_with_second_moments_unsigned():
    int8 = {name for name, d in RECORDS.items() if d["int8_slots"]}
    assert int8 >= {"adam", "adamw", "amsgrad", "lion", "sgd", "momentum", "adan", "ademamix", "rmsprop", "adagrad"}
    for d in RECORDS.values():
        assert set(d["nonnegative_slots"]) <= set(d["int8_slots"]) <= set(d["slots"])
    assert RECORDS["adamw"]["nonnegative_slots"] == ["exp_avg_sq", "max_exp_avg_sq"]
    assert RECORDS["adan"]["int8_slots"] == ["exp_avg", "exp_avg_sq", "exp_avg_diff"]
    assert RECORDS["lion"]["nonnegative_slots"] == [] and RECORDS["adagrad"]["nonnegative_slots"] == ["sum"]
    assert RECORDS["adamw"]["state_dtypes"] == ["float32", "bfloat16", "int8"]
    assert RECORDS["lamb"]["state_dtypes"] == RECORDS["muon"]["state_dtypes"] == ["float32"]
    assert RECORDS["nadam"]["state_dtypes"] == ["float32", "bfloat16"]


def test_per_tensor_optimizers_are_those_with_reductions_and_the_python_ones():
    per_tensor = [name for name, d in RECORDS.items() if d["per_tensor"]]
    assert per_tensor == ["lamb", "lars", "stableadamw", "novograd", "mars", "mars_lion", "muon", "adafactor",
                          "rowwise_adagrad", "lbfgs", "prodigy", "dadapt_adam", "dadapt_sgd", *OPTAX_FAMILY, "adamp", "came", "adam_mini",
                          "normuon", "adamuon", "soap", "shampoo", "kron", "noisy_sgd", "mars_shampoo"]
    for name in per_tensor:  # their reduction pass keeps the states float32
        assert RECORDS[name]["state_dtypes"] == ["float32"], name


# That the classes, papers, demo lrs and search spaces derived from the records are what the
# Python side stated before: tests/python/test_generated_classes.py, test_catalog.py, test_tuner.py
# (test_search_spaces_from_the_records_follow_the_old_rules) and the reference tests.


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
    lbfgs = {h["name"]: h["default"] for h in RECORDS["lbfgs"]["hyper"]}
    sig = inspect.signature(pyopt.LBFGS.__init__).parameters
    assert math.isnan(lbfgs.pop("max_eval")) and sig["max_eval"].default is None
    assert lbfgs == {key: sig[key].default for key in lbfgs}
    assert sig["line_search_fn"].default is None  # (a choice of string: not in the record)
    for name, cls in (("soap", pyopt.SOAP), ("shampoo", pyopt.Shampoo), ("kron", pyopt.Kron)):
        record = {h["name"]: h["default"] for h in RECORDS[name]["hyper"]}
        sig = inspect.signature(cls.__init__).parameters
        for key, value in record.items():
            if key in ("beta1", "beta2"):
                assert value == sig["betas"].default[int(key[-1]) - 1], (name, key)
            elif math.isnan(value):
                assert sig[key].default is None, (name, key)
            else:
                assert value == sig[key].default, (name, key)
