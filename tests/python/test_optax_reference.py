"""optax 0.2.8 as a second reference for the optimizers pyopt shares with torch (and for LAMB and
LARS, whose first reference is a float64 model of optax): where optax's conventions agree with
the record's, pyopt's float64 trajectory equals optax's up to rounding (optax run op by op on
jax's CPU backend with jax_enable_x64; see reference_impls.optax_package).

What agrees (the cases below), and how the hyperparameters are mapped:
  - sgd, momentum, nag: optax.sgd(lr, momentum, nesterov); optax's trace holds g + μ·b as torch's
    buffer does (no dampening, no weight decay: optax.sgd has neither).
  - adam, adamw: optax.adam / adamw (b1, b2 = betas, eps_root = 0). optax divides v by its bias
    correction inside the root, torch divides the root: same values up to rounding. adamw's decay
    is lr·wd·p in both.
  - adamax: optax.adamax (no weight decay).
  - rmsprop: optax.rmsprop(eps_in_sqrt=False), plain, centered and with momentum; optax's default
    eps_in_sqrt=True puts ε inside the root (g / √(v + ε)), torch outside (g / (√v + ε)).
  - adagrad: optax.adagrad with ε = 0 and the same initial accumulator: optax puts ε inside the
    root (g / √(G + ε)), torch outside, so only ε = 0 agrees (and optax's default accumulator is
    0.1, torch's 0).
  - lion: optax.lion (its decay is lr·wd·p, as lion-pytorch's).
  - lamb, lars: optax.lamb, optax.lars (pyopt's rules follow them).
  - adadelta: optax.adadelta (ε inside both roots, as torch).
What does not agree, and why (not tested here):
  - amsgrad: optax.amsgrad takes the maximum of the *bias-corrected* v (torch: of v, corrected
    after), so the two differ while β2^t is not negligible.
  - nadam: torch's NAdam warms β1 up (momentum_decay); optax.nadam(w) uses β1 itself: pyopt has
    that as optax_nadamw (tested against optax in the reference matrix).
  - radam: optax.radam's rectification threshold and its unrectified step (m̂, no lr·bias
    terms) differ from torch's (measured: they part at the first rectified steps).
  - adabelief: optax adds ε_root to s inside the update and has no rectification; adabelief-pytorch
    0.2.0 (pyopt's reference) adds ε to s at every step and rectifies by default.
  - signsgd/signum, yogi, novograd, adan: pyopt follows pytorch-optimizer / the official code,
    whose momentum, ε and decay conventions are not optax's.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

import pyopt
from reference_impls import optax_module, optax_package
from reference_table import dense_data

STEPS = 60
# Rounding only (op order, MKL/XLA differences): the trajectories do not amplify it.
RTOL, ATOL_SCALE = 1e-12, 1e-13


def _o() -> Any:
    return optax_module()


# (case id, pyopt name, pyopt hyperparameters, optax transformation from those, state map)
CASES: list[tuple[str, str, dict[str, Any], Callable[[dict], Any], dict[str, tuple[int, str]]]] = [
    ("sgd", "sgd", dict(lr=0.05), lambda h: _o().sgd(h["lr"]), {}),
    ("momentum", "momentum", dict(lr=0.02, momentum=0.8),
     lambda h: _o().sgd(h["lr"], momentum=h["momentum"]), {}),
    ("nag", "nag", dict(lr=0.02, momentum=0.85),
     lambda h: _o().sgd(h["lr"], momentum=h["momentum"], nesterov=True), {}),
    ("adam", "adam", dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6),
     lambda h: _o().adam(h["lr"], *h["betas"], eps=h["eps"]), {"exp_avg": (0, "mu"), "exp_avg_sq": (0, "nu")}),
    ("adamw", "adamw", dict(lr=3e-3, betas=(0.85, 0.995), eps=1e-7, weight_decay=0.05),
     lambda h: _o().adamw(h["lr"], *h["betas"], eps=h["eps"], weight_decay=h["weight_decay"]),
     {"exp_avg": (0, "mu"), "exp_avg_sq": (0, "nu")}),
    ("adamax", "adamax", dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6),
     lambda h: _o().adamax(h["lr"], *h["betas"], eps=h["eps"]), {"exp_avg": (0, "mu"), "exp_inf": (0, "nu")}),
    ("rmsprop", "rmsprop", dict(lr=1e-3, alpha=0.95, eps=1e-6),
     lambda h: _o().rmsprop(h["lr"], decay=h["alpha"], eps=h["eps"], eps_in_sqrt=False),
     {"square_avg": (0, "nu")}),
    ("rmsprop-centered-momentum", "rmsprop", dict(lr=1e-3, alpha=0.9, eps=1e-5, centered=True, momentum=0.7),
     lambda h: _o().rmsprop(h["lr"], decay=h["alpha"], eps=h["eps"], eps_in_sqrt=False, centered=True,
                            momentum=h["momentum"]),
     {"square_avg": (0, "nu"), "grad_avg": (0, "mu")}),
    ("adagrad", "adagrad", dict(lr=0.03, eps=0.0, initial_accumulator_value=0.1),
     lambda h: _o().adagrad(h["lr"], initial_accumulator_value=h["initial_accumulator_value"], eps=0.0),
     {"sum": (0, "sum_of_squares")}),
    ("lion", "lion", dict(lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1),
     lambda h: _o().lion(h["lr"], *h["betas"], weight_decay=h["weight_decay"]), {"exp_avg": (0, "mu")}),
    ("lamb", "lamb", dict(lr=3e-3, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.01),
     lambda h: _o().lamb(h["lr"], *h["betas"], eps=h["eps"], weight_decay=h["weight_decay"]),
     {"exp_avg": (0, "mu"), "exp_avg_sq": (0, "nu")}),
    ("lars", "lars", dict(lr=0.5, momentum=0.9, weight_decay=1e-3, trust_coefficient=1e-3, eps=1e-9),
     lambda h: _o().lars(h["lr"], weight_decay=h["weight_decay"], trust_coefficient=h["trust_coefficient"],
                         eps=h["eps"], momentum=h["momentum"]), {}),
    ("adadelta", "adadelta", dict(lr=1.0, rho=0.9, eps=1e-6),
     lambda h: _o().adadelta(h["lr"], rho=h["rho"], eps=h["eps"]), {"square_avg": (1, "e_g"), "acc_delta": (1, "e_x")}),
]


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_matches_optax_float64(case: str) -> None:
    pytest.importorskip("jax")
    _, name, hyper, make, slots = next(c for c in CASES if c[0] == case)
    params0, grads = dense_data(7 + len(case), np.float64, STEPS)
    trajectory = optax_package(make, slots)(hyper, params0, grads, (1, STEPS))
    params = [p.copy() for p in params0]
    opt = pyopt.create(name, params, **hyper)
    for t, gs in enumerate(grads, start=1):
        opt.step(gs)
        if t not in trajectory:
            continue
        for i, (p, q) in enumerate(zip(params, trajectory[t]["params"])):
            np.testing.assert_allclose(p, q, rtol=RTOL, atol=ATOL_SCALE * np.abs(q).max(),
                                       err_msg=f"{case}: params[{i}] after step {t}")
        for i, entry in enumerate(trajectory[t]["state"]):
            for key, value in entry.items():
                np.testing.assert_allclose(opt.state[i][key], value, rtol=RTOL, atol=ATOL_SCALE * np.abs(value).max(),
                                           err_msg=f"{case}: state[{i}][{key!r}] after step {t}")


def test_a_convention_that_differs_is_caught() -> None:
    """The comparison has teeth: optax's rmsprop with its default ε inside the root is not torch's."""
    pytest.importorskip("jax")
    hyper = dict(lr=1e-3, alpha=0.95, eps=1e-3)
    params0, grads = dense_data(3, np.float64, 5)
    trajectory = optax_package(lambda h: _o().rmsprop(h["lr"], decay=h["alpha"], eps=h["eps"]), {})(
        hyper, params0, grads, (5,))
    params = [p.copy() for p in params0]
    opt = pyopt.RMSprop(params, **hyper)
    for gs in grads:
        opt.step(gs)
    with pytest.raises(AssertionError):
        for p, q in zip(params, trajectory[5]["params"]):
            np.testing.assert_allclose(p, q, rtol=RTOL, atol=ATOL_SCALE * np.abs(q).max())
