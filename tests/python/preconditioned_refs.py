"""Reference runs for tests/python/test_preconditioned.py: pyopt's SOAP, Shampoo and Kron and
pytorch-optimizer 4.1.0's on the same params, gradients and (for Kron) random draws.

How the two runs are made to see the same things:

- SOAP: ``torch.linalg.eigh`` is replaced, inside the reference run only, by numpy's eigh (the
  call pyopt makes). Where a factor has a repeated eigenvalue (always at the first step of a
  non-square or 1-D param: its Gram matrix has rank < n) the eigenvectors spanning that
  eigenspace are any orthonormal basis of it; torch's LAPACK and numpy's pick different ones,
  and Adam's elementwise second moment in that basis is not invariant to the pick. Everything
  else (the lerps, rotations, QR refreshes, permutations) is the reference's own code.
  ``soap_without_patch`` runs a case with distinct eigenvalues unpatched: the column signs
  torch and numpy pick may differ, and the params must still agree.
- Kron: pyopt draws from its own Generator; the test records every draw (``Kron._draw_uniform``
  and ``Kron._draw_normal`` wrapped) and the reference run replays them in order through
  ``numpy.random.random`` and ``torch.randn_like``, patched for that run only.
- Shampoo: deterministic, nothing to patch.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable
from unittest import mock

import numpy as np

import pyopt

torch = __import__("pytest").importorskip("torch")
pto = __import__("pytest").importorskip("pytorch_optimizer")

TORCH_NAMES = {"soap": "SOAP", "shampoo": "Shampoo", "kron": "Kron"}


def numpy_eigh(matrix: Any) -> Any:
    values, vectors = np.linalg.eigh(matrix.numpy())
    return torch.from_numpy(values), torch.from_numpy(np.ascontiguousarray(vectors))


def run_pyopt(name: str, hyper: dict, params: list[np.ndarray], grads: list[list[np.ndarray | None]],
              seed: int = 0) -> tuple[list[np.ndarray], Any, list]:
    """pyopt's params after the steps, the optimizer, and (Kron) its draws in order."""
    params = [p.copy() for p in params]
    cls = pyopt._pybase.python_optimizer(name)
    extra = {"seed": seed} if name == "kron" else {}
    opt = cls(params, **hyper, **extra)
    draws: list = []
    if name == "soap":
        eigh, qr = opt._eigh, opt._qr

        def recorded_eigh(matrix: np.ndarray) -> Any:
            draws.append(("eigh", eigh(matrix)))
            return draws[-1][1]

        def recorded_qr(matrix: np.ndarray) -> Any:
            draws.append(("qr", qr(matrix)))
            return draws[-1][1]
        opt._eigh, opt._qr = recorded_eigh, recorded_qr
    if name == "kron":
        uniform, normal = opt._draw_uniform, opt._draw_normal

        def draw_uniform() -> float:
            draws.append(("uniform", uniform()))
            return draws[-1][1]

        def draw_normal(shape: tuple, dtype: Any) -> np.ndarray:
            draws.append(("normal", normal(shape, dtype)))
            return draws[-1][1]
        opt._draw_uniform, opt._draw_normal = draw_uniform, draw_normal
    for step_grads in grads:
        opt.step(step_grads)
    return params, opt, draws


@contextlib.contextmanager
def replayed(draws: list):
    """numpy.random.random and torch.randn_like return ``draws`` in order (and fail on a mismatch)."""
    queue = list(draws)

    def take(kind: str) -> Any:
        assert queue, f"the reference drew a {kind} more than pyopt did"
        got, value = queue.pop(0)
        assert got == kind, f"the reference drew a {kind} where pyopt drew a {got}"
        return value

    def random() -> float:
        return take("uniform")

    def randn_like(t: Any, dtype: Any = None, **_: Any) -> Any:
        value = take("normal")
        assert value.shape == tuple(t.shape), (value.shape, t.shape)
        out = torch.from_numpy(np.array(value))
        return out.to(dtype if dtype is not None else t.dtype)

    with mock.patch("numpy.random.random", random), mock.patch("torch.randn_like", randn_like):
        yield
    assert not queue, f"pyopt drew {len(queue)} more values than the reference"


@contextlib.contextmanager
def replayed_decompositions(draws: list, check: bool = True):
    """torch.linalg.eigh and torch.linalg.qr return pyopt's results in order, after checking that
    each is a valid decomposition of the reference's own input: M Q = Q diag(w) for eigh, QᵀA upper
    triangular for QR (to a tolerance of the dtype's precision times the matrix's norm)."""
    queue = list(draws)

    def take(kind: str) -> Any:
        assert queue, f"the reference computed an {kind} more than pyopt did"
        got, value = queue.pop(0)
        assert got == kind, f"the reference computed an {kind} where pyopt computed a {got}"
        return value

    def tolerance(a: np.ndarray) -> float:
        return (1e-10 if a.dtype == np.float64 else 1e-4) * max(float(np.abs(a).max(initial=0.0)), 1e-300)

    def eigh(matrix: Any) -> Any:
        values, vectors = take("eigh")
        m = matrix.numpy()
        if check and np.isfinite(m).all():
            assert np.abs(m @ vectors - vectors * values).max(initial=0.0) <= tolerance(m) * m.shape[0]
        return torch.from_numpy(values.copy()), torch.from_numpy(np.ascontiguousarray(vectors))

    def qr(matrix: Any) -> Any:
        q, r = take("qr")
        a = matrix.numpy()
        if check and np.isfinite(a).all():
            assert np.abs(np.tril(q.T @ a, -1)).max(initial=0.0) <= tolerance(a) * a.shape[0]
        return torch.from_numpy(q.copy()), torch.from_numpy(r.copy())

    with mock.patch.object(torch.linalg, "eigh", eigh), mock.patch.object(torch.linalg, "qr", qr):
        yield
    assert not queue, f"pyopt computed {len(queue)} more decompositions than the reference"


def torch_hyper(name: str, hyper: dict) -> dict:
    out = dict(hyper)
    if name == "kron":
        for key in ("mu_dtype", "precondition_dtype"):
            if out.get(key) is not None:
                out[key] = getattr(torch, out[key])
    return out


def run_reference(name: str, hyper: dict, params: list[np.ndarray], grads: list[list[np.ndarray | None]],
                  draws: list = (), patch_eigh: bool = True) -> list[np.ndarray]:
    cls = getattr(pto, TORCH_NAMES[name])
    tparams = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
    hyper = torch_hyper(name, hyper)
    if "precondition_dtype" not in hyper and name == "kron":
        hyper["precondition_dtype"] = torch.float32
    # (the reference's Kron takes precondition_lr and precondition_init_scale from its param groups
    # only: its constructor swallows them in **kwargs)
    group_only = {k: hyper.pop(k) for k in ("precondition_lr", "precondition_init_scale") if k in hyper}
    opt = cls([{"params": tparams, **group_only}], **hyper)
    with contextlib.ExitStack() as stack:
        if name == "soap" and patch_eigh:
            stack.enter_context(replayed_decompositions(list(draws)))
        if name == "kron":
            stack.enter_context(replayed(list(draws)))
        for step_grads in grads:
            for p, g in zip(tparams, step_grads):
                p.grad = None if g is None else torch.from_numpy(g.copy())
            opt.step()
    return [p.detach().numpy().copy() for p in tparams]


def max_relative_error(ours: list[np.ndarray], theirs: list[np.ndarray], floor: float = 1.0) -> float:
    """max |ours - theirs| / max(|theirs|, floor) over all elements (NaN where exactly one is NaN)."""
    worst = 0.0
    for a, b in zip(ours, theirs):
        if a.size == 0:
            continue
        nan_a, nan_b = np.isnan(a), np.isnan(b)
        if (nan_a != nan_b).any():
            return float("nan")
        keep = ~nan_a
        if keep.any():
            err = np.abs(a[keep].astype(np.float64) - b[keep]) / np.maximum(np.abs(b[keep].astype(np.float64)), floor)
            worst = max(worst, float(np.max(err)))
    return worst


def make_case(shapes: list[tuple[int, ...]], dtype: Any, steps: int, seed: int,
              scale: Callable[[np.random.Generator], float] | None = None) -> tuple[list, list]:
    """Initial params and per-step grads (grad scales 1e-3 .. 1e2 per step when ``scale`` is None)."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = []
    for _ in range(steps):
        factor = float(np.exp(rng.uniform(np.log(1e-3), np.log(1e2)))) if scale is None else scale(rng)
        grads.append([(rng.standard_normal(s) * factor).astype(dtype) for s in shapes])
    return params, grads
