"""Diagonal Hessian estimators for Sophia (Liu et al., 2023), framework-free.

Sophia keeps an EMA of a diagonal Hessian estimate, ``h = β2·h + (1 − β2)·ĥ``, refreshed every
few steps (``opt.update_hessian(estimates)``). Two estimators:

- **Gauss-Newton-Bartlett** (SophiaG), as the official code does it: sample labels from the
  model's own predicted distribution (``sample_labels``), compute the gradient of the mean loss
  over the batch on those sampled labels, and pass it to ``gnb_estimate``, which returns ĝ⊙ĝ.
  (The paper's estimator is B·ĝ⊙ĝ for a batch of B; the official code, like SophiaG, leaves the
  factor B to the update, which divides by ``rho · bs · h``.)
- **Hutchinson** (SophiaH): ``hutchinson_estimate(hvp, params, rng)`` with Rademacher probes u,
  returning the mean over probes of u⊙(H·u), an unbiased estimate of diag(H).

Params and estimates are numpy float arrays, as a list or a dict name → array (the estimates
come back in the same form, as new arrays of the same dtypes).
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np

__all__ = ["gnb_estimate", "hutchinson_estimate", "sample_labels"]

ArraysLike = Union[Sequence[np.ndarray], Mapping[str, np.ndarray]]


def _float_array(who: str, label: str, value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind != "f":
        raise TypeError(f"{who}: {label} has dtype {arr.dtype}; use a float dtype")
    return arr


def _split(who: str, arrays: Any, what: str) -> tuple[list[Any], list[str] | None]:
    if isinstance(arrays, Mapping):
        names = list(arrays)
        return [arrays[n] for n in names], names
    if isinstance(arrays, (list, tuple)):
        return list(arrays), None
    raise TypeError(f"{who}: {what} must be a list or a dict name -> array, got {type(arrays).__name__}")


def _labels(names: list[str] | None, count: int, what: str) -> list[str]:
    return [f"{what}[{n!r}]" for n in names] if names is not None else [f"{what}[{i}]" for i in range(count)]


def _join(values: list[np.ndarray], names: list[str] | None) -> Any:
    return dict(zip(names, values)) if names is not None else values


def _check_rng(who: str, rng: Any) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{who}: rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {rng!r}")
    return rng


def sample_labels(logits: Any, rng: np.random.Generator) -> np.ndarray:
    """One label per row of ``logits`` (classes on the last axis), drawn from softmax(logits).

    Gumbel-max in float64 (argmax of logits + Gumbel noise): exact in distribution, and stable for
    any logit scale, since no exponential is taken; a class with logit −inf is never drawn.
    Returns int64 labels of shape ``logits.shape[:-1]``.
    """
    who = "sample_labels"
    rng = _check_rng(who, rng)
    z = _float_array(who, "logits", logits).astype(np.float64, copy=False)
    if z.ndim < 1 or z.shape[-1] == 0:
        raise ValueError(f"{who}: logits need a non-empty class axis (the last), got shape {z.shape}")
    if np.isnan(z).any() or (z == np.inf).any():
        raise ValueError(f"{who}: logits hold NaN or +inf")
    if z.size and (z == -np.inf).all(axis=-1).any():
        raise ValueError(f"{who}: a row of logits is all -inf (no class can be drawn)")
    u = rng.random(z.shape)
    with np.errstate(divide="ignore"):
        gumbel = -np.log(-np.log(u))  # u == 0 gives -inf: that class just cannot win
    return np.argmax(z + gumbel, axis=-1).astype(np.int64)


def gnb_estimate(sampled_grads: ArraysLike) -> Any:
    """Gauss-Newton-Bartlett: ĝ⊙ĝ for each gradient ĝ of the mean loss on labels sampled from the
    model (``sample_labels``). Same form (list or dict) and dtypes as given; new arrays."""
    who = "gnb_estimate"
    grads, names = _split(who, sampled_grads, "sampled_grads")
    labels = _labels(names, len(grads), "sampled_grads")
    arrays = [_float_array(who, label, g) for g, label in zip(grads, labels)]
    return _join([np.multiply(g, g) for g in arrays], names)


def hutchinson_estimate(
    hvp: Callable[[Any], Any], params: ArraysLike, rng: np.random.Generator, n_samples: int = 1
) -> Any:
    """Hutchinson's diagonal estimate: the mean over ``n_samples`` Rademacher probes u (±1, the
    params' shapes and dtypes) of u⊙(H·u).

    ``hvp(u)`` gets the probes in the params' form (a list, or a dict with the params' names) and
    returns H·u in that form (a list in the same order, or a dict with the same names). Only the
    params' shapes and dtypes are used. The mean is taken in float64; the result has the params'
    dtypes. When H is diagonal every probe gives diag(H) exactly (u⊙u = 1), and so does the mean.
    """
    who = "hutchinson_estimate"
    rng = _check_rng(who, rng)
    if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) or n_samples < 1:
        raise ValueError(f"{who}: n_samples must be an int >= 1, got {n_samples!r}")
    if not callable(hvp):
        raise TypeError(f"{who}: hvp must be callable (probes -> H·probes)")
    plist, names = _split(who, params, "params")
    if not plist:
        raise ValueError(f"{who}: got no params")
    labels = _labels(names, len(plist), "params")
    specs = [(a.shape, a.dtype) for a in (_float_array(who, label, p) for p, label in zip(plist, labels))]
    means = [np.zeros(shape, np.float64) for shape, _ in specs]
    for k in range(1, int(n_samples) + 1):
        probes = [(rng.integers(0, 2, size=shape, dtype=np.int8) * 2 - 1).astype(dtype) for shape, dtype in specs]
        out = hvp(_join(probes, names))
        hu = _hvp_result(who, out, names, specs)
        for m, u, h in zip(means, probes, hu):
            # running mean: a sample equal to the mean so far leaves it exactly unchanged
            m += (u.astype(np.float64) * h.astype(np.float64) - m) / k
    return _join([m.astype(dtype) for m, (_, dtype) in zip(means, specs)], names)


def _hvp_result(who: str, out: Any, names: list[str] | None, specs: list[tuple[tuple[int, ...], np.dtype]]) -> list[np.ndarray]:
    if isinstance(out, Mapping):
        if names is None:
            raise TypeError(f"{who}: hvp returned a dict, but the params are a list; return a list")
        if set(out) != set(names):
            raise ValueError(f"{who}: hvp returned entries {sorted(out)}, the params are {sorted(names)}")
        values = [out[n] for n in names]
    elif isinstance(out, (list, tuple)):
        values = list(out)
    else:
        raise TypeError(f"{who}: hvp must return a list (or dict) of arrays, got {type(out).__name__}")
    if len(values) != len(specs):
        raise ValueError(f"{who}: hvp returned {len(values)} arrays for {len(specs)} params")
    result = []
    for v, (shape, _), label in zip(values, specs, _labels(names, len(specs), "hvp result")):
        arr = np.asarray(v)
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"{who}: {label} has dtype {arr.dtype}, expected real numbers")
        if arr.shape != shape:
            raise ValueError(f"{who}: {label} has shape {arr.shape}, its param has shape {shape}")
        result.append(arr)
    return result
