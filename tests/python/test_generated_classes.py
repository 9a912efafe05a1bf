"""The Python classes are generated from the optimizer records: names, signatures, defaults,
docstrings, lr ranges; the two optimizers written in Python agree with their records."""
from __future__ import annotations

import inspect
import math
import pathlib
import pickle
from inspect import Parameter

import numpy as np
import pytest

import pyopt
from pyopt import optimizers
from pyopt._spec import TUPLES, _core, record, records, spec
from pyopt.optimizers import CLASSES

ROOT = pathlib.Path(__file__).resolve().parents[2]
KW = Parameter.KEYWORD_ONLY
RULE_NAMES = [n for n, s in records().items() if s.rule is not None]
PYTHON_ONLY = [n for n, s in records().items() if s.rule is None]


def test_tuples_come_from_the_core() -> None:
    assert TUPLES == {k: tuple(v) for k, v in _core.hyper_tuples().items()}


@pytest.mark.parametrize("name", RULE_NAMES)
def test_class_is_generated_from_its_record(name: str) -> None:
    s = spec(name)
    cls = CLASSES[name]
    assert cls.__name__ == cls.__qualname__ == s.class_name
    assert cls.__module__ == "pyopt.optimizers" and getattr(optimizers, s.class_name) is cls
    assert getattr(pyopt, s.class_name) is cls and s.class_name in pyopt.__all__
    assert pickle.loads(pickle.dumps(cls)) is cls
    assert cls.name == name and cls.lr_range == s.lr_range
    params = list(inspect.signature(cls).parameters.values())
    assert params[0].name == "params"
    # (a hand-written base's keyword-only arguments that are not hyperparameters: MARS's mars_type)
    extras = list(getattr(cls, "_extra_keywords", {}))
    shown, extra, storage = params[1:-3 - len(extras)], params[len(params) - 3 - len(extras):-3], params[-3:]
    assert [(p.name, p.kind) for p in extra] == [(e, KW) for e in extras]
    assert [(p.name, p.default, p.kind) for p in storage] == [
        ("master_weights", False, KW), ("state_dtype", "float32", KW),
        ("stochastic_rounding", False, KW)]
    assert [p.name for p in shown] == list(s.defaults)
    assert {p.name: p.default for p in shown} == s.defaults
    keyword_only = {p.name for p in s.params if p.keyword_only}
    for p in shown:
        assert p.kind == (p.KEYWORD_ONLY if p.name in keyword_only else p.POSITIONAL_OR_KEYWORD), (name, p.name)
        default = s.defaults[p.name]
        if isinstance(default, tuple):
            assert p.annotation.startswith("tuple[") and p.annotation.count(",") == len(default) - 1, p
    # An instance's state_dict pickles (the optimizer itself holds a compiled engine).
    opt = cls([np.ones(3)])
    opt.step([np.full(3, 0.5)])
    assert pickle.loads(pickle.dumps(opt.state_dict()))["param_groups"][0]["lr"] == s.defaults["lr"]


@pytest.mark.parametrize("name", RULE_NAMES)
def test_docstring_is_generated_from_the_record(name: str) -> None:
    s = spec(name)
    doc = CLASSES[name].__doc__
    for fact in (s.summary, s.reference, s.paper, s.paper_url, f"{s.lr_range[0]:g}"):
        assert fact in doc, (name, fact)
    rule_file = next(line for line in doc.splitlines() if line.startswith("Update rule: ")).split()[2]
    assert (ROOT / rule_file).is_file(), rule_file
    for p in s.params:
        assert f"\n    {p.name} (" in doc, (name, p.name)
    for option in ("state_dtype", "master_weights", "stochastic_rounding"):
        assert f"\n    {option} (" in doc, (name, option)
    assert ("'int8' quantizes" in doc) == bool(pyopt._core.optimizers()[name]["int8_slots"]), name
    ranged = [h for h in s.specs if h.range in ("nonnegative", "positive") and h.name not in s.fixed]
    for h in ranged:
        assert (">= 0" if h.range == "nonnegative" else "> 0") in doc, (name, h.name)


def test_arguments_are_checked_as_python_checks_them() -> None:
    w = np.zeros(3)
    with pytest.raises(TypeError, match=r"^SGD.__init__\(\) got an unexpected keyword argument 'nesterov_'$"):
        pyopt.SGD([w], nesterov_=True)
    with pytest.raises(TypeError, match=r"^Adam.__init__\(\) takes from 2 to 7 positional arguments but 8"):
        pyopt.Adam([w], 1e-3, (0.9, 0.999), 1e-8, 0.0, False, True)
    with pytest.raises(TypeError, match=r"got multiple values for argument 'lr'"):
        pyopt.AdamW([w], 1e-3, lr=1e-2)
    assert pyopt.AdamW([w], 1e-2).defaults["lr"] == 1e-2


def test_extra_methods_and_aliases() -> None:
    assert pyopt.Sophia is pyopt.SophiaG and callable(pyopt.SophiaG.update_hessian)
    for cls in (pyopt.ScheduleFreeAdamW, pyopt.ScheduleFreeSGD):
        assert callable(cls.eval) and callable(cls.train)
    assert pyopt.AdEMAMix([np.zeros(2)], t_alpha_beta3=None).defaults["t_alpha_beta3"] == 0.0
    assert inspect.signature(pyopt.AdEMAMix).parameters["t_alpha_beta3"].annotation == "float | None"


# Signature entries of the Python-written classes the records spell differently: Muon's
# adjust_lr_fn, LBFGS's line_search_fn (a name or None: no number), AdamMini's blocks (a name or an
# int), NorMuon's update_scale, SOAP's data_format and Kron's dtypes, memory_save_mode and seed
# (names, or None) are not in their records, and
# Adafactor's eps pair is the record's eps1 (None there: NaN) and eps2, MARSShampoo's betas_1d its
# beta1_1d and beta2_1d.
SPELLED_APART = {"muon": {"adjust_lr_fn": ()}, "adafactor": {"eps": ("eps1", "eps2")},
                 "lbfgs": {"line_search_fn": ()}, "polyak_sgd": {"variant": ()}, "dog": {"init_step": ()},
                 "adam_mini": {"blocks": ()}, "normuon": {"update_scale": ()}, "soap": {"data_format": ()},
                 "kron": {"memory_save_mode": (), "mu_dtype": (), "precondition_dtype": (), "seed": ()},
                 "mars_shampoo": {"betas_1d": ("beta1_1d", "beta2_1d")}}
# Prodigy's beta3 stands apart from its betas pair (pytorch-optimizer's signature); its record holds
# it as betas' third member (beta3 is one of the members of betas there).
SPLIT_OFF = {"prodigy": ("betas", "beta3")}


def _none_for_nan(value: object) -> object:
    if isinstance(value, tuple):
        return tuple(_none_for_nan(v) for v in value)
    return None if isinstance(value, float) and math.isnan(value) else value


@pytest.mark.parametrize("name", PYTHON_ONLY)
def test_python_written_optimizers_agree_with_their_records(name: str) -> None:
    """The Python-written classes (Muon, Adafactor, LBFGS) are hand-written: their name, lr range,
    and every default and keyword-only marker their record states must be the class's."""
    s = record(name)
    cls = getattr(pyopt, s.class_name)
    assert cls.name == name and tuple(cls.lr_range) == s.lr_range
    assert pyopt.create(name, [np.ones((3, 4))]).__class__ is cls
    sig = {k: p for k, p in inspect.signature(cls).parameters.items() if k != "params"}
    record_defaults = {p.name: _none_for_nan(p.default) for p in s.params}
    keyword_only = {p.name for p in s.params if p.keyword_only}
    for key, members in SPELLED_APART.get(name, {}).items():
        record_defaults[key] = tuple(record_defaults.pop(m) for m in members) if members else sig[key].default
        keyword_only = (keyword_only - set(members)) | ({key} if sig[key].kind == sig[key].KEYWORD_ONLY else set())
    if name in SPLIT_OFF:
        tup, single = SPLIT_OFF[name]
        *pair, record_defaults[single] = record_defaults[tup]
        record_defaults[tup] = tuple(pair)
    assert {k: p.default for k, p in sig.items()} == record_defaults
    assert {k for k, p in sig.items() if p.kind == p.KEYWORD_ONLY} == keyword_only
