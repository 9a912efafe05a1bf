"""L-BFGS as torch.optim.LBFGS 2.13 computes it, in numpy.

L-BFGS is not a rule applied to each param: every params' element is one coordinate of a single
flat vector (dot products over all of them), and a step evaluates the loss and gradient several
times (a line search, or ``max_iter`` inner iterations), so it takes a closure, ``step(closure)``,
where the other optimizers take gradients. The algorithm is Nocedal's two-loop recursion with
the initial Hessian scaled by ``s·y / y·y`` (Liu & Nocedal, 1989), and the strong-Wolfe line
search with cubic interpolation of minFunc (Mark Schmidt) as torch ported it from Lua torch's
``optim`` package (``lswolfe.lua``, ``polyinterp.lua``): same iterations, step sizes, stopping
tests and evaluation counts as torch.optim.LBFGS; the code here is pyopt's own.

torch's scalars are kept as torch has them, so that a run follows torch's to the last bits where
numpy can: the values torch holds in 0-d tensors (``y·s``, ``ro``, ``H_diag``, the directional
derivatives, a step size computed from them) are numpy scalars of the params' dtype here, and
those torch holds as Python floats (the losses, ``lr``, step sizes from Python arithmetic) are
Python floats, so float32 params compute in float32 exactly where torch does (numpy 2's
promotion of Python scalars is torch's). torch divides a Python number by a 0-d tensor as the
tensor's reciprocal times the number; ``_divide`` does the same. What still differs is rounding
only, in four kernels (``_dot``, ``_add_scaled``, ``_abs_sum``, ``_sqrt``): torch's dot products
are MKL's (another summation order), its ``add_(y, alpha=a)`` is a fused multiply-add where numpy
rounds the product first, its sums are summed in another order, and its square root of a float64
is Sleef's (within 0.5001 ulp: not always the correctly rounded one numpy gives).
tests/python/test_torch_optim_db.py swaps torch's kernels in for these four and compares the rest
bit for bit.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

from . import _core
from ._pybase import PyOptimizer, real
from .optimizer import ParamsLike, _as_param_list, _float_array, _locked, restore_schedules, save_schedules

__all__ = ["LBFGS"]

LINE_SEARCH_FNS = (None, "strong_wolfe")
# torch's strong-Wolfe constants (not hyperparameters of torch.optim.LBFGS): sufficient decrease
# c1, curvature c2, and the bracket width at which the zoom stops (torch passes no
# tolerance_change of the group here: its line search keeps the default 1e-9).
WOLFE_C1, WOLFE_C2, LINE_SEARCH_TOLERANCE = 1e-4, 0.9, 1e-9
# The curvature y·s below which an iteration does not enter the history (torch's 1e-10).
MIN_CURVATURE = 1e-10
# The state torch keeps once an iteration has run (on the first param), besides the counters.
ITERATION_STATE = ("d", "t", "old_dirs", "old_stps", "ro", "H_diag", "prev_flat_grad", "prev_loss")
COUNTERS = ("func_evals", "n_iter")


# ----- the vector arithmetic of a step (see the module docstring) ------------------------------
def _dot(a: np.ndarray, b: np.ndarray) -> Any:
    """a·b, a numpy scalar of their dtype (torch: ``a.dot(b)``)."""
    return np.dot(a, b)


def _add_scaled(x: np.ndarray, y: np.ndarray, alpha: Any) -> None:
    """x += alpha * y, in place (torch: ``x.add_(y, alpha=alpha)``)."""
    x += y * alpha


def _abs_sum(x: np.ndarray) -> Any:
    """sum |x|, a numpy scalar of x's dtype (torch: ``x.abs().sum()``)."""
    return np.abs(x).sum()


def _sqrt(x: Any) -> Any:
    """The square root of a numpy scalar (torch: ``x.sqrt()`` of a 0-d tensor)."""
    return np.sqrt(x)


class LBFGS(PyOptimizer):
    r"""L-BFGS (Liu & Nocedal, 1989; torch.optim.LBFGS 2.13): quasi-Newton steps along
    :math:`d = -H g`, with :math:`H` the inverse Hessian estimate of the last ``history_size``
    curvature pairs (two-loop recursion), a step of ``lr`` (the first ever:
    ``min(1, 1/‖g‖₁)·lr``) or one found by a strong-Wolfe line search
    (``line_search_fn="strong_wolfe"``).

    ``step(closure)``: ``closure()`` evaluates the loss and its gradient at the params' current
    values and returns ``(loss, grads)``, the grads as ``step(grads)`` of the other optimizers
    takes them (a list in param order, ``None`` for a zero gradient, a dict by name, a lone
    array). A step runs up to ``max_iter`` iterations and ``max_eval`` closure calls
    (``None``: ``max_iter * 5 // 4``), and stops early when the gradient's largest magnitude is at
    most ``tolerance_grad`` or the loss or the params change by less than ``tolerance_change``.
    It returns the loss of its first closure call (as the closure returned it).

    As torch's: one param group only; all params are one flat vector (float32 or float64, all of
    the same dtype); the state lives in the first param's entry, with torch's keys
    (``func_evals``, ``n_iter``, ``d``, ``t``, ``old_dirs``, ``old_stps``, ``ro``, ``H_diag``,
    ``prev_flat_grad``, ``prev_loss``, ``al``): ``opt.state[0]`` holds torch's lists (of arrays
    and of numbers; ``al``'s ``None`` are the entries no iteration has written yet), the
    ``state_dict()`` stacks them into arrays (``old_dirs`` and ``old_stps`` of shape
    ``(len, n)``, ``ro`` and ``al`` 1-D, ``al``'s ``None`` as NaN), and ``load_state_dict`` takes
    either form. Memory: ``2 · history_size + 2`` vectors of all the params' size.

    A closure that raises stops the step where it is: the params are then those of that
    evaluation, as in torch.
    """

    name = "lbfgs"
    lr_range = (1e-2, 1.0)
    step_requires_closure: ClassVar[bool] = True

    def __init__(self, params: ParamsLike, lr: float = 1.0, max_iter: int = 20, max_eval: int | None = None,
                 tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9, history_size: int = 100,
                 line_search_fn: str | None = None) -> None:
        super().__init__(params, dict(lr=lr, max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
                                      tolerance_change=tolerance_change, history_size=history_size,
                                      line_search_fn=line_search_fn))

    # ----- hyperparameters and params ------------------------------------------------------
    def _check_hypers(self, group: dict[str, Any], where: str) -> dict[str, Any]:
        out = dict(group)
        out["lr"] = real(where, "lr", group["lr"])
        if not out["lr"] >= 0.0:
            raise ValueError(f"{where}: invalid lr: {out['lr']} (must be >= 0)")
        for key in ("tolerance_grad", "tolerance_change"):
            out[key] = real(where, key, group[key])
            if not out[key] >= 0.0:
                raise ValueError(f"{where}: invalid {key}: {out[key]} (must be >= 0)")
        for key in ("max_iter", "history_size"):
            out[key] = _positive_int(where, key, group[key])
        if group["max_eval"] is None:  # torch's default, resolved as its constructor does
            out["max_eval"] = out["max_iter"] * 5 // 4
        else:
            out["max_eval"] = _positive_int(where, "max_eval", group["max_eval"], "an int or None")
        if group["line_search_fn"] not in LINE_SEARCH_FNS:
            raise ValueError(f"{where}: invalid line_search_fn: {group['line_search_fn']!r} "
                             "(must be None or 'strong_wolfe')")
        return out

    @_locked
    def add_param_group(self, param_group: Mapping[str, Any]) -> None:
        """As torch's LBFGS: the params of the first (and only) group, all of one dtype."""
        who = self._owner_label
        if self.param_groups:
            raise ValueError(f"{who}: LBFGS doesn't support per-parameter options (parameter groups): it steps "
                             "all params as one vector; give them as one group")
        if isinstance(param_group, Mapping) and "params" in param_group:
            arrays = [p for p in _as_param_list(param_group["params"], who)[0] if isinstance(p, np.ndarray)]
            dtypes = sorted({str(p.dtype) for p in arrays})
            if len(dtypes) > 1:
                raise ValueError(f"{who}: the params are {' and '.join(dtypes)}; LBFGS steps them as one vector, "
                                 "of one dtype")
        super().add_param_group(param_group)

    # ----- stepping ------------------------------------------------------------------------
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One L-BFGS step (up to ``max_iter`` iterations); returns the loss of the first closure
        call. ``closure()`` returns ``(loss, grads)`` at the params' current values."""
        who = self._owner_label
        if closure is None or not callable(closure):
            raise TypeError(f"{who}: step needs a closure, LBFGS evaluates the loss and gradient several times "
                            "per step: opt.step(closure) with closure() -> (loss, grads), got "
                            f"{type(closure).__name__}")
        with self._lock:
            hypers = self._groups_checked()
            saved = save_schedules(self)
            try:
                for schedule in self._schedules:
                    schedule._before_step(self)
                if self._schedules:
                    hypers = self._groups_checked()  # the lr the schedules set
                self._check_params()
            except BaseException:
                restore_schedules(self, saved)
                raise
            settings = np.geterr()

            def users_closure() -> Any:  # (under the caller's numpy error settings)
                with np.errstate(**settings):
                    return closure()

            with np.errstate(all="ignore"):  # inf and NaN propagate silently, as in torch
                return self._run(users_closure, hypers[0])

    def _check_params(self) -> None:
        """The params are still steppable (e.g. not made read-only since they were added) and have
        elements (the state was checked against them when loaded)."""
        for p, label in zip(self._params, self._labels):
            _core.check_param(p, f"{self._owner_label}: {label}")
        if not sum(p.size for p in self._params):
            raise ValueError(f"{self._owner_label}: the params have no elements")

    def _evaluate(self, closure: Callable[[], Any]) -> tuple[Any, float, np.ndarray]:
        """One closure call: (the loss as returned, as a float, the flat gradient, a new array)."""
        who = self._owner_label
        result = closure()
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise TypeError(f"{who}: the closure must return (loss, grads), got {type(result).__name__}")
        loss, grads = result
        try:
            value = float(loss)
        except (TypeError, ValueError):
            raise TypeError(f"{who}: the closure's loss must be a real number, got {loss!r:.80}") from None
        glist = self._grad_list(grads)
        if len(glist) != len(self._params):
            raise ValueError(f"{who}: the closure returned {len(glist)} gradients for {len(self._params)} params")
        parts = []
        for p, g, label in zip(self._params, glist, self._labels):
            if g is None:
                parts.append(np.zeros(p.size, p.dtype))
            else:
                parts.append(self._check_grad(g, p, f"{who}: {label}").reshape(-1))
        return loss, value, np.concatenate(parts)  # (a copy: a closure may reuse its arrays)

    def _add_to_params(self, step_size: Any, direction: np.ndarray) -> None:
        """params += step_size * direction (torch's ``_add_grad``)."""
        offset = 0
        for p in self._params:
            _add_scaled(p, direction[offset : offset + p.size].reshape(p.shape), step_size)
            offset += p.size

    def _set_params(self, values: list[np.ndarray]) -> None:
        for p, value in zip(self._params, values):
            p[...] = value

    def _run(self, closure: Callable[[], Any], group: Mapping[str, Any]) -> Any:
        lr, max_iter, max_eval = group["lr"], group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        history_size, line_search_fn = group["history_size"], group["line_search_fn"]
        state = self._state[0]  # torch keeps LBFGS's global state on its first param
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)

        first_loss, loss, flat_grad = self._evaluate(closure)
        evals = 1
        state["func_evals"] += 1
        if np.abs(flat_grad).max() <= tolerance_grad:
            return first_loss

        d, t = state.get("d"), state.get("t")
        old_dirs, old_stps, ro = state.get("old_dirs"), state.get("old_stps"), state.get("ro")
        H_diag, prev_flat_grad, prev_loss = state.get("H_diag"), state.get("prev_flat_grad"), state.get("prev_loss")
        iterations = 0
        while iterations < max_iter:
            iterations += 1
            state["n_iter"] += 1

            # the direction: steepest descent at first, then the two-loop recursion
            if state["n_iter"] == 1:
                d = -flat_grad
                old_dirs, old_stps, ro = [], [], []
                H_diag = 1
            else:
                y = flat_grad - prev_flat_grad
                s = d * t
                ys = _dot(y, s)
                if ys > MIN_CURVATURE:
                    while len(old_dirs) >= history_size:  # (torch: == ; the same unless history_size was lowered)
                        old_dirs.pop(0)
                        old_stps.pop(0)
                        ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1.0 / ys)
                    H_diag = ys / _dot(y, y)
                al = state.setdefault("al", [None] * history_size)
                if len(al) < len(old_dirs):  # (history_size raised since: torch would fail here)
                    al.extend([None] * (len(old_dirs) - len(al)))
                q = -flat_grad
                for i in range(len(old_dirs) - 1, -1, -1):
                    al[i] = _dot(old_stps[i], q) * ro[i]
                    _add_scaled(q, old_dirs[i], -al[i])
                d = r = q * H_diag
                for i in range(len(old_dirs)):
                    be_i = _dot(old_dirs[i], r) * ro[i]
                    _add_scaled(r, old_stps[i], al[i] - be_i)

            if prev_flat_grad is None:
                prev_flat_grad = flat_grad.copy()
            else:
                prev_flat_grad[...] = flat_grad
            prev_loss = loss

            # the step length
            t = min(1.0, 1.0 / _abs_sum(flat_grad)) * lr if state["n_iter"] == 1 else lr
            gtd = _dot(flat_grad, d)
            if gtd > -tolerance_change:  # not a descent direction (any more)
                break

            evals_here = 0
            if line_search_fn is not None:  # "strong_wolfe"
                start = [p.copy() for p in self._params]

                def at(step_size: Any) -> tuple[float, np.ndarray]:
                    self._add_to_params(step_size, d)
                    _, value, grad = self._evaluate(closure)
                    self._set_params(start)
                    return value, grad

                loss, flat_grad, t, evals_here = _strong_wolfe(at, t, d, loss, flat_grad, gtd,
                                                               max_ls=max_eval - evals)
                self._add_to_params(t, d)
                optimal = np.abs(flat_grad).max() <= tolerance_grad
            else:
                self._add_to_params(t, d)
                optimal = False
                if iterations != max_iter:  # torch does not evaluate after the last iteration
                    _, loss, flat_grad = self._evaluate(closure)
                    optimal = np.abs(flat_grad).max() <= tolerance_grad
                    evals_here = 1
            evals += evals_here
            state["func_evals"] += evals_here

            if iterations == max_iter or evals >= max_eval or optimal:
                break
            if np.abs(d * t).max() <= tolerance_change or abs(loss - prev_loss) < tolerance_change:
                break  # no progress

        state.update(d=d, t=t, old_dirs=old_dirs, old_stps=old_stps, ro=ro, H_diag=H_diag,
                     prev_flat_grad=prev_flat_grad, prev_loss=prev_loss)
        return first_loss

    # ----- state ---------------------------------------------------------------------------
    @_locked
    def state_dict(self) -> dict[str, Any]:
        """As every pyopt state_dict (arrays and plain numbers): torch's lists stacked into arrays
        (see the class docstring), scalars as Python numbers."""
        out = super().state_dict()
        out["state"] = {i: _packed(entry) for i, entry in out["state"].items()}
        return out

    def _restore_state(self, entries: dict[int, Mapping[str, Any]],
                       state_dict: Mapping[str, Any]) -> Callable[[], None]:
        who = self._owner_label
        for i in entries:
            if i != 0 and entries[i]:
                raise ValueError(f"{who}: state_dict has state for param {i}; LBFGS keeps its state on param 0")
        entry = entries.get(0, {})
        restored = _unpacked(entry, sum(p.size for p in self._params), self._params[0].dtype,
                             f"{who}: state_dict param 0")

        def put_in_place() -> None:
            self._state = [restored if i == 0 else {} for i in range(len(self._params))]
        return put_in_place

    @_locked
    def memory(self) -> dict[str, int]:
        """Bytes this optimizer holds, by part: ``params``, the state's vectors (``d``,
        ``prev_flat_grad``, ``old_dirs``, ``old_stps``), ``total``."""
        out = {"params": sum(int(p.nbytes) for p in self._params)}
        state = self._state[0] if self._state else {}
        for key in ("d", "prev_flat_grad", "old_dirs", "old_stps"):
            value = state.get(key)
            if value is not None:
                out[key] = sum(int(a.nbytes) for a in value) if isinstance(value, list) else int(value.nbytes)
        out["total"] = sum(out.values())
        return out


# ----- the strong-Wolfe line search (torch's _strong_wolfe and _cubic_interpolate) -------------
def _divide(numerator: Any, denominator: Any) -> Any:
    """``numerator / denominator`` as torch computes it: a Python number divided by a 0-d tensor
    (a numpy scalar here) is the tensor's reciprocal times the number (Tensor.__rtruediv__)."""
    if isinstance(denominator, np.generic) and not isinstance(numerator, np.generic):
        return (denominator.dtype.type(1) / denominator) * numerator
    return numerator / denominator


def _cubic_minimizer(x1: Any, f1: float, g1: Any, x2: Any, f2: float, g2: Any,
                     bounds: tuple[Any, Any] | None = None) -> Any:
    """The minimizer of the cubic through (x1, f1) and (x2, f2) with slopes g1 and g2, clamped to
    ``bounds`` (default: between x1 and x2); the bounds' midpoint when the cubic has none."""
    low, high = bounds if bounds is not None else ((x1, x2) if x1 <= x2 else (x2, x1))
    d1 = g1 + g2 - _divide(3 * (f1 - f2), x1 - x2)
    d2_square = d1**2 - g1 * g2
    if d2_square >= 0:
        d2 = _sqrt(d2_square)
        if x1 <= x2:
            minimizer = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            minimizer = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(minimizer, low), high)
    return (low + high) / 2.0


def _strong_wolfe(at: Callable[[Any], tuple[float, np.ndarray]], t: Any, d: np.ndarray, f: float,
                  g: np.ndarray, gtd: Any, max_ls: int) -> tuple[float, np.ndarray, Any, int]:
    """A step size t along d meeting the strong Wolfe conditions (sufficient decrease, curvature),
    from f, g, gtd at t = 0; ``at(t)`` evaluates (loss, flat gradient) there. A bracketing phase
    (steps grown by cubic extrapolation) and a zoom phase (cubic interpolation, moved away from
    the bracket's ends when it makes too little progress). Returns (loss, gradient, t, closure
    calls) of the best point found."""
    c1, c2 = WOLFE_C1, WOLFE_C2
    d_norm = np.abs(d).max()
    f_new, g_new = at(t)
    evals = 1
    gtd_new = _dot(g_new, d)

    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    bracket: list[Any] = []
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f, bracket_g = [t_prev, t], [f_prev, f_new], [g_prev, g_new]
            bracket_gtd = [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f, bracket_g = [t_prev, t], [f_prev, f_new], [g_prev, g_new]
            bracket_gtd = [gtd_prev, gtd_new]
            break
        # extrapolate, at least 1% beyond t and at most to 10 t
        step_min = t + 0.01 * (t - t_prev)
        step_max = t * 10
        t_prev, t = t, _cubic_minimizer(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(step_min, step_max))
        f_prev, g_prev, gtd_prev = f_new, g_new, gtd_new
        f_new, g_new = at(t)
        evals += 1
        gtd_new = _dot(g_new, d)
        ls_iter += 1
    if ls_iter == max_ls:  # no bracket within max_ls evaluations
        bracket, bracket_f, bracket_g = [0, t], [f, f_new], [g, g_new]

    # zoom: shrink the bracket [low, high] (low: the lower loss) around a Wolfe point
    insufficient_progress = False
    low, high = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < LINE_SEARCH_TOLERANCE:
            break
        t = _cubic_minimizer(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1])
        # a t too close to an end of the bracket (twice in a row, or at an end) moves to 10% of
        # the bracket's width from that end
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insufficient_progress or t >= max(bracket) or t <= min(bracket):
                t = max(bracket) - eps if abs(t - max(bracket)) < abs(t - min(bracket)) else min(bracket) + eps
                insufficient_progress = False
            else:
                insufficient_progress = True
        else:
            insufficient_progress = False

        f_new, g_new = at(t)
        evals += 1
        gtd_new = _dot(g_new, d)
        ls_iter += 1
        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low]:
            # not a sufficient decrease, or not below the bracket's low end: the new high end
            bracket[high], bracket_f[high], bracket_g[high], bracket_gtd[high] = t, f_new, g_new, gtd_new
            low, high = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high] - bracket[low]) >= 0:
                # the old low end becomes the high end
                bracket[high], bracket_f[high] = bracket[low], bracket_f[low]
                bracket_g[high], bracket_gtd[high] = bracket_g[low], bracket_gtd[low]
            bracket[low], bracket_f[low], bracket_g[low], bracket_gtd[low] = t, f_new, g_new, gtd_new
    return bracket_f[low], bracket_g[low], bracket[low], evals


# ----- checks and the state_dict form ---------------------------------------------------------
def _positive_int(where: str, key: str, value: Any, kind: str = "an int") -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: {key} must be {kind}, got {value!r}")
    if value < 1:
        raise ValueError(f"{where}: invalid {key}: {value} (must be >= 1)")
    return int(value)


def _packed(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The live state (torch's lists and scalars) as a state_dict entry: arrays and plain numbers."""
    out: dict[str, Any] = {}
    n = entry["d"].size if "d" in entry else 0
    dtype = entry["d"].dtype if "d" in entry else np.float64
    for key, value in entry.items():
        if key in ("old_dirs", "old_stps"):
            out[key] = np.stack(value) if value else np.empty((0, n), dtype)
        elif key in ("ro", "al"):
            out[key] = np.array([np.nan if v is None else v for v in value], dtype)
        elif key in COUNTERS:
            out[key] = int(value)
        elif isinstance(value, np.ndarray):
            out[key] = value.copy()
        else:  # t, H_diag, prev_loss
            out[key] = float(value)
    return out


def _unpacked(entry: Mapping[str, Any], n: int, dtype: np.dtype, where: str) -> dict[str, Any]:
    """A state_dict entry (the stacked form or torch's lists) as the live state, checked."""
    unknown = sorted(set(entry) - set(COUNTERS) - set(ITERATION_STATE) - {"al"})
    if unknown:
        raise ValueError(f"{where} has unknown state {', '.join(map(repr, unknown))} for lbfgs; it may hold "
                         f"{', '.join(COUNTERS + ITERATION_STATE + ('al',))}")
    out: dict[str, Any] = {}
    for key in COUNTERS:
        value = entry.get(key, 0)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 0:
            raise TypeError(f"{where} state {key!r} must be an int >= 0, got {value!r:.80}")
        out[key] = int(value)
    present = [k for k in ITERATION_STATE if k in entry]
    if not present:
        if "al" in entry:
            raise ValueError(f"{where}: state 'al' comes without the state of an iteration ('d', 'old_dirs', ...)")
        return out if entry else {}
    missing = [k for k in ITERATION_STATE if k not in entry]
    if missing:
        raise ValueError(f"{where}: the state of an iteration lacks {', '.join(map(repr, missing))}")
    for key in ("d", "prev_flat_grad"):
        out[key] = _vector(entry[key], n, dtype, f"{where} state {key!r}")
    for key in ("t", "prev_loss", "H_diag"):
        out[key] = _number(entry[key], f"{where} state {key!r}")
    out["H_diag"] = dtype.type(out["H_diag"])  # (a 0-d tensor in torch)
    for key in ("old_dirs", "old_stps"):
        value = entry[key]
        if isinstance(value, np.ndarray) and value.ndim == 2:
            value = list(value)
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{where} state {key!r} must be a 2-D array or a list of vectors, got "
                            f"{type(value).__name__}")
        out[key] = [_vector(v, n, dtype, f"{where} state {key!r}[{k}]") for k, v in enumerate(value)]
    out["ro"] = _scalars(entry["ro"], dtype, f"{where} state 'ro'", none_allowed=False)
    if not len(out["old_dirs"]) == len(out["old_stps"]) == len(out["ro"]):
        raise ValueError(f"{where}: 'old_dirs', 'old_stps' and 'ro' must have one entry per stored pair, got "
                         f"{len(out['old_dirs'])}, {len(out['old_stps'])} and {len(out['ro'])}")
    if "al" in entry:
        out["al"] = _scalars(entry["al"], dtype, f"{where} state 'al'", none_allowed=True)
    return out


def _vector(value: Any, n: int, dtype: np.dtype, what: str) -> np.ndarray:
    arr = _float_array(value, what)
    if arr.shape != (n,):
        raise ValueError(f"{what} has shape {arr.shape}, expected ({n},) (all the params' elements)")
    return np.array(arr, dtype=dtype, order="C", copy=True)


def _number(value: Any, what: str) -> float:
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a real number, got {value!r:.80}")
    return float(value)


def _scalars(value: Any, dtype: np.dtype, what: str, none_allowed: bool) -> list[Any]:
    """A list of numbers (None allowed where ``none_allowed``; NaN in an array stands for None
    there) as numpy scalars of the params' dtype (torch's 0-d tensors)."""
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise ValueError(f"{what} must be 1-D, got shape {value.shape}")
        items: Sequence[Any] = list(_float_array(value, what))
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        raise TypeError(f"{what} must be a 1-D array or a list of numbers, got {type(value).__name__}")
    out: list[Any] = []
    for k, v in enumerate(items):
        if v is None and none_allowed:
            out.append(None)
            continue
        number = _number(v, f"{what}[{k}]")
        out.append(None if none_allowed and np.isnan(number) else dtype.type(number))
    return out
