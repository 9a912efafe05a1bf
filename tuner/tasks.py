"""Training tasks for the tuner: the public ``Task`` protocol and the built-in tasks.

A task is anything with a ``name``, an ``epochs`` count and four methods (see ``Task``). The
tuner runs one trial as::

    params = task.init_params(seed)
    opt = pyopt.create(name, params, **hyper)
    for epoch in range(task.epochs):
        for batch in task.train_batches(epoch, rng):
            loss, grads = task.loss_and_grads(params, batch)
            opt.step(grads)                       # updates params in place
                                                  # (opt.step(grads, loss=loss) if opt.step_requires_loss)
    score = task.validation_loss(params)

The built-in tasks are numpy only, with analytic gradients, and need no network: the two
scikit-learn data sets they use are bundled in ``data/`` (see ``data/README.md``) and the digits
come from ``pyopt.datasets.load_digits()``. Parameters are float32; every ``loss_and_grads`` also
works on float64 parameters (the gradient checks use that) and returns gradients of the
parameters' dtype and shape. Tasks are optimizer-agnostic: no learning rates live here.

Contract kept by every built-in task: ``validation_loss`` is deterministic, ``init_params(seed)``
is a deterministic function of ``seed``, and ``train_batches`` draws randomness only from the
generator it is given.
"""
from __future__ import annotations

import functools
import importlib.util
import io
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Protocol, Tuple, runtime_checkable

import numpy as np

from pyopt.datasets import load_digits

Params = Dict[str, np.ndarray]

__all__ = [
    "Task", "TaskLoadError", "TASKS", "get_task", "load_task", "check_task", "describe_task",
    "Rosenbrock", "Beale", "NoisyQuadratic", "LogisticCancer", "SoftmaxDigits", "MLPDigits",
    "LinearDiabetes", "load_breast_cancer", "load_diabetes",
]


@runtime_checkable
class Task(Protocol):
    """What the tuner needs from a training task."""

    name: str
    epochs: int

    def init_params(self, seed: int) -> Dict[str, np.ndarray]:
        """Fresh parameters for one trial; the same seed gives the same arrays."""
        ...

    def train_batches(self, epoch: int, rng: np.random.Generator) -> Iterable[Any]:
        """The batches of one epoch, in order; randomness only from ``rng``."""
        ...

    def loss_and_grads(self, params: Dict[str, np.ndarray], batch: Any) -> Tuple[float, Dict[str, np.ndarray]]:
        """Training loss on ``batch`` and its gradient for every parameter (same keys, shapes, dtypes)."""
        ...

    def validation_loss(self, params: Dict[str, np.ndarray]) -> float:
        """The score the tuner minimizes; deterministic."""
        ...

    # Optional, for lr schedules (``pyopt tune --schedules``; not part of the runtime check):
    # ``steps_per_epoch: int`` -- the batches ``train_batches`` yields per epoch, the same every
    #     epoch; a schedule spans epochs x steps_per_epoch optimizer steps. Without it the tuner
    #     counts epoch 0's batches (with a generator of its own) once per scheduled run; either
    #     way a scheduled run fails if an epoch has a different number of batches.
    # ``schedules: bool`` -- False when lr schedules make no sense for the task: then asking for
    #     any but "constant" is a ValueError before anything runs.


_REQUIRED_METHODS = ("init_params", "train_batches", "loss_and_grads", "validation_loss")


class TaskLoadError(ValueError):
    """A task spec that names no built-in task, or a file/object that cannot serve as a task."""


# --------------------------------------------------------------------------------------------
# Data


def _data_bytes(filename: str) -> bytes:
    """A file of ``data/``, found relative to this package whatever it is called
    (``tuner`` from the repo, ``pyopt.tuner`` when installed), or beside this file."""
    if __package__:
        return resources.files(__package__).joinpath("data", filename).read_bytes()
    return (Path(__file__).resolve().parent / "data" / filename).read_bytes()  # loaded as a bare module


def _load_npz(filename: str) -> Dict[str, np.ndarray]:
    with np.load(io.BytesIO(_data_bytes(filename)), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def load_breast_cancer() -> Tuple[np.ndarray, np.ndarray]:
    """Wisconsin diagnostic breast cancer: float64 features (569, 30), uint8 target (569,), 1 = benign."""
    d = _load_npz("breast_cancer.npz")
    return d["data"], d["target"]


def load_diabetes() -> Tuple[np.ndarray, np.ndarray]:
    """Efron et al. diabetes, unscaled: float64 features (442, 10), float64 target (442,)."""
    d = _load_npz("diabetes.npz")
    return d["data"], d["target"]


def _split_indices(n: int, n_train: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[:n_train]), np.sort(order[n_train:])


def _standardize(x: np.ndarray, train: np.ndarray, val: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """float32 features standardized with the training rows' mean and std (constant columns left at 0)."""
    x = x.astype(np.float64)
    mean = x[train].mean(axis=0)
    std = x[train].std(axis=0)
    std[std == 0] = 1.0
    z = ((x - mean) / std).astype(np.float32)
    return z[train], z[val]


@functools.lru_cache(maxsize=None)
def _cancer_split() -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = load_breast_cancer()
    train, val = _split_indices(len(y), LogisticCancer.n_train, seed=0)
    x_train, x_val = _standardize(x, train, val)
    y = y.astype(np.float32)
    return x_train, y[train], x_val, y[val]


@functools.lru_cache(maxsize=None)
def _diabetes_split() -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = load_diabetes()
    train, val = _split_indices(len(y), LinearDiabetes.n_train, seed=0)
    x_train, x_val = _standardize(x, train, val)
    y_mean, y_std = y[train].mean(), y[train].std()
    t = ((y - y_mean) / y_std).astype(np.float32)  # standardized target: the loss is in units of var(y)
    return x_train, t[train], x_val, t[val]


@functools.lru_cache(maxsize=None)
def _digits_split() -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The same split and scaling as ``pyopt demo``: 1500 train / 297 validation, split seed 0."""
    images, labels = load_digits()
    order = np.random.default_rng(0).permutation(len(labels))
    train, val = order[:1500], order[1500:]
    x_train, x_val = _standardize(images, train, val)
    y = labels.astype(np.intp)
    return x_train, y[train], x_val, y[val]


def _minibatches(n: int, batch_size: int, rng: np.random.Generator, drop_last: bool = False) -> Iterator[np.ndarray]:
    order = rng.permutation(n)
    stop = n - n % batch_size if drop_last else n
    for i in range(0, stop, batch_size):
        yield order[i:i + batch_size]


def _cast(g: np.ndarray, like: np.ndarray) -> np.ndarray:
    return np.asarray(g, dtype=like.dtype).reshape(like.shape)


# --------------------------------------------------------------------------------------------
# 2-D test functions


class Rosenbrock:
    """Rosenbrock's banana valley f(x, y) = (1 - x)^2 + 100 (y - x^2)^2 from the classic start (-1.2, 1).

    Deterministic: a "batch" is the whole function, ``steps_per_epoch`` of them per epoch. The
    start does not depend on the seed. Minimum 0 at (1, 1).
    """

    name = "rosenbrock"
    epochs = 20
    steps_per_epoch = 50
    start = (-1.2, 1.0)

    def describe(self) -> str:
        return (f"Rosenbrock valley, 2-D, start {self.start}, {self.epochs} x {self.steps_per_epoch} "
                "full-function steps; score f(x, y), minimum 0 at (1, 1)")

    def init_params(self, seed: int) -> Params:
        return {"xy": np.array(self.start, dtype=np.float32)}

    def train_batches(self, epoch: int, rng: np.random.Generator) -> Iterable[Any]:
        return [None] * self.steps_per_epoch

    @staticmethod
    def _f(xy: np.ndarray) -> float:
        x, y = float(xy[0]), float(xy[1])
        return (1.0 - x) ** 2 + 100.0 * (y - x * x) ** 2

    def loss_and_grads(self, params: Params, batch: Any) -> Tuple[float, Params]:
        p = params["xy"]
        x, y = float(p[0]), float(p[1])
        gx = -2.0 * (1.0 - x) - 400.0 * x * (y - x * x)
        gy = 200.0 * (y - x * x)
        return self._f(p), {"xy": np.array([gx, gy], dtype=p.dtype)}

    def validation_loss(self, params: Params) -> float:
        return self._f(params["xy"])


class Beale:
    """Beale's function (1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2 from (1, 1).

    Deterministic like ``Rosenbrock``; minimum 0 at (3, 0.5).
    """

    name = "beale"
    epochs = 20
    steps_per_epoch = 50
    start = (1.0, 1.0)
    _c = (1.5, 2.25, 2.625)

    def describe(self) -> str:
        return (f"Beale function, 2-D, start {self.start}, {self.epochs} x {self.steps_per_epoch} "
                "full-function steps; score f(x, y), minimum 0 at (3, 0.5)")

    def init_params(self, seed: int) -> Params:
        return {"xy": np.array(self.start, dtype=np.float32)}

    def train_batches(self, epoch: int, rng: np.random.Generator) -> Iterable[Any]:
        return [None] * self.steps_per_epoch

    def _terms(self, xy: np.ndarray) -> List[Tuple[float, float, float]]:
        """(residual r_k, dr_k/dx, dr_k/dy) for k = 1, 2, 3 with r_k = c_k - x + x y^k."""
        x, y = float(xy[0]), float(xy[1])
        return [(c - x + x * y ** k, -1.0 + y ** k, k * x * y ** (k - 1)) for k, c in enumerate(self._c, start=1)]

    def loss_and_grads(self, params: Params, batch: Any) -> Tuple[float, Params]:
        p = params["xy"]
        terms = self._terms(p)
        loss = sum(r * r for r, _, _ in terms)
        gx = sum(2.0 * r * dx for r, dx, _ in terms)
        gy = sum(2.0 * r * dy for r, _, dy in terms)
        return loss, {"xy": np.array([gx, gy], dtype=p.dtype)}

    def validation_loss(self, params: Params) -> float:
        return sum(r * r for r, _, _ in self._terms(params["xy"]))


# --------------------------------------------------------------------------------------------
# Noisy quadratic (DeepOBS quadratic_deep)


def _haar_rotation(n: int, rng: np.random.RandomState) -> np.ndarray:
    """A Haar-random orthogonal matrix: QR of a Gaussian matrix with the signs of R's diagonal fixed."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


@functools.lru_cache(maxsize=None)
def _quadratic_problem(dim: int, train_size: int, noise: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fixed Hessian (float64), the fixed training draws x_i (float32) and x_i^T H x_i (float64)."""
    rng = np.random.RandomState(42)
    n_small = dim * 9 // 10
    eigenvalues = np.concatenate((rng.uniform(0.0, 1.0, n_small), rng.uniform(30.0, 60.0, dim - n_small)))
    rot = _haar_rotation(dim, rng)
    hessian = rot.T @ np.diag(eigenvalues) @ rot
    hessian = 0.5 * (hessian + hessian.T)
    data = (noise * np.random.default_rng(1).standard_normal((train_size, dim))).astype(np.float32)
    x64 = data.astype(np.float64)
    return hessian, data, np.einsum("ij,jk,ik->i", x64, hessian, x64)


class NoisyQuadratic:
    """Stochastic ill-conditioned quadratic after DeepOBS ``quadratic_deep`` (Schneider et al. 2019).

    Loss per sample 0.5 (theta - x)^T H (theta - x), H = R^T D R: 100-d, D holds 90 eigenvalues
    drawn from U(0, 1) and 10 from U(30, 60) (numpy RandomState(42), as DeepOBS), R a fixed
    Haar-random rotation. As in DeepOBS the training set is a fixed set of 1000 draws
    x ~ N(0, 0.6^2 I), shuffled each epoch into batches of 128 with the remainder dropped, and
    theta starts at all ones (for every seed). ``validation_loss`` is the exact expected loss
    over x ~ N(0, 0.6^2 I): 0.5 theta^T H theta + 0.5 * 0.6^2 * tr(H) (DeepOBS estimates it with
    1000 test draws); its floor is the second term.
    """

    name = "quadratic"
    dim = 100
    train_size = 1000
    noise = 0.6
    batch_size = 128
    epochs = 50

    def __init__(self) -> None:
        hessian, self._x, self._q = _quadratic_problem(self.dim, self.train_size, self.noise)
        self._h64 = hessian
        self._h32 = hessian.astype(np.float32)
        self.floor = 0.5 * self.noise ** 2 * float(np.trace(hessian))

    def describe(self) -> str:
        return (f"DeepOBS-style noisy quadratic, {self.dim}-d, eigenvalues U(0,1) x90 + U(30,60) x10, "
                f"{self.train_size} draws, batch {self.batch_size}, {self.epochs} epochs; score expected loss "
                f"(floor {self.floor:.2f})")

    def init_params(self, seed: int) -> Params:
        return {"theta": np.ones(self.dim, np.float32)}

    def train_batches(self, epoch: int, rng: np.random.Generator) -> Iterable[Any]:
        """Batches ``(x, q)``: the draws x (B, 100) and their precomputed x^T H x (B,) in float64."""
        for idx in _minibatches(self.train_size, self.batch_size, rng, drop_last=True):
            yield self._x[idx], self._q[idx]

    @property
    def steps_per_epoch(self) -> int:
        return self.train_size // self.batch_size

    def _h(self, dtype: np.dtype) -> np.ndarray:
        return self._h32 if dtype == np.float32 else self._h64

    def loss_and_grads(self, params: Params, batch: Any) -> Tuple[float, Params]:
        # mean_i 0.5 (theta - x_i)^T H (theta - x_i) = 0.5 theta^T H theta - theta^T H xbar + 0.5 mean_i x_i^T H x_i
        x, q = batch
        theta = params["theta"]
        h = self._h(theta.dtype)
        xbar = x.mean(axis=0, dtype=np.float64).astype(theta.dtype)
        g = h @ (theta - xbar)
        h_theta = h @ theta
        t64 = theta.astype(np.float64)
        loss = 0.5 * float(t64 @ h_theta) - float(t64 @ (h @ xbar)) + 0.5 * float(np.mean(q))
        return loss, {"theta": _cast(g, theta)}

    def validation_loss(self, params: Params) -> float:
        theta = params["theta"].astype(np.float64)
        return 0.5 * float(theta @ self._h64 @ theta) + self.floor


# --------------------------------------------------------------------------------------------
# Models on data


def _log_softmax_xent(logits: np.ndarray, y: np.ndarray) -> Tuple[float, np.ndarray]:
    """Mean cross-entropy and its gradient with respect to the logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1, keepdims=True))
    log_p = z - log_norm
    n = len(y)
    loss = -float(log_p[np.arange(n), y].mean())
    d = np.exp(log_p)
    d[np.arange(n), y] -= 1.0
    return loss, d / n


class _Supervised:
    """A model trained in minibatches on a fixed split: subclasses give the data (``_split``)."""

    name = ""
    batch_size = 32
    epochs = 20

    def __init__(self) -> None:
        self.x_train, self.y_train, self.x_val, self.y_val = self._split()

    def _split(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def train_batches(self, epoch: int, rng: np.random.Generator) -> Iterable[Any]:
        for idx in _minibatches(len(self.y_train), self.batch_size, rng):
            yield self.x_train[idx], self.y_train[idx]

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.y_train) // self.batch_size)


class _LinearModel(_Supervised):
    """A linear model ``x @ w + b``; subclasses give the loss with its gradient in the output (``_loss``)."""

    @staticmethod
    def _loss(params: Params, x: np.ndarray, y: np.ndarray) -> Tuple[float, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def init_params(self, seed: int) -> Params:
        rng = np.random.default_rng(seed)
        return {"w": (0.01 * rng.standard_normal(int(self.x_train.shape[1]))).astype(np.float32),
                "b": np.zeros(1, np.float32)}

    def loss_and_grads(self, params: Params, batch: Any) -> Tuple[float, Params]:
        x, y = batch
        loss, d_out = self._loss(params, x, y)
        return loss, {"w": _cast(x.T @ d_out, params["w"]), "b": _cast(d_out.sum(), params["b"])}

    def validation_loss(self, params: Params) -> float:
        return self._loss(params, self.x_val, self.y_val)[0]


class LogisticCancer(_LinearModel):
    """Logistic regression on the Wisconsin diagnostic breast-cancer data (bundled, 569 x 30).

    Fixed split (seed 0): 455 train / 114 validation; features standardized with the training
    statistics; mean binary cross-entropy, no regularizer; batches of 32. Parameters ``w`` (30,)
    ~ N(0, 0.01^2) from the seed and ``b`` (1,) = 0.
    """

    name = "logistic-cancer"
    n_train = 455

    def _split(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return _cancer_split()

    def describe(self) -> str:
        return (f"logistic regression, breast cancer (Wisconsin) 30 features, {len(self.y_train)} train / "
                f"{len(self.y_val)} val, batch {self.batch_size}, {self.epochs} epochs; score val cross-entropy")

    @staticmethod
    def _loss(params: Params, x: np.ndarray, y: np.ndarray) -> Tuple[float, np.ndarray]:
        z = x @ params["w"] + params["b"][0]
        # mean of log(1 + e^z) - y z, computed stably
        loss = float(np.mean(np.logaddexp(0.0, z) - y * z))
        prob = np.exp(-np.logaddexp(0.0, -z))  # sigmoid(z)
        return loss, (prob - y) / len(y)


class LinearDiabetes(_LinearModel):
    """Linear regression (mean squared error) on the diabetes data of Efron et al. (bundled, 442 x 10).

    Fixed split (seed 0): 353 train / 89 validation; features and target standardized with the
    training statistics (so a loss of 1 is predicting the training mean); batches of 32.
    Parameters ``w`` (10,) ~ N(0, 0.01^2) from the seed and ``b`` (1,) = 0.
    """

    name = "linear-diabetes"
    n_train = 353

    def _split(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return _diabetes_split()

    def describe(self) -> str:
        return (f"linear regression (MSE), diabetes 10 features, {len(self.y_train)} train / {len(self.y_val)} val, "
                f"standardized target, batch {self.batch_size}, {self.epochs} epochs; score val MSE")

    @staticmethod
    def _loss(params: Params, x: np.ndarray, y: np.ndarray) -> Tuple[float, np.ndarray]:
        r = x @ params["w"] + params["b"][0] - y
        return float(np.mean(r * r)), 2.0 * r / len(y)


class _Digits(_Supervised):
    """The UCI digits with the split and scaling of ``pyopt demo``, batches of 64, 10 classes."""

    batch_size = 64
    n_classes = 10

    def _split(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return _digits_split()


class SoftmaxDigits(_Digits):
    """Softmax regression on the UCI 8x8 digits bundled with pyopt (``pyopt.datasets.load_digits``).

    The split and scaling of ``pyopt demo``: 1500 train / 297 validation (split seed 0), pixels
    standardized with the training statistics; mean cross-entropy, batches of 64. Parameters
    ``W`` (64, 10) ~ N(0, 0.01^2) from the seed and ``b`` (10,) = 0.
    """

    name = "softmax-digits"

    def describe(self) -> str:
        return (f"softmax regression, UCI digits 8x8, {len(self.y_train)} train / {len(self.y_val)} val, "
                f"batch {self.batch_size}, {self.epochs} epochs; score val cross-entropy")

    def init_params(self, seed: int) -> Params:
        rng = np.random.default_rng(seed)
        return {"W": (0.01 * rng.standard_normal((self.x_train.shape[1], self.n_classes))).astype(np.float32),
                "b": np.zeros(self.n_classes, np.float32)}

    def loss_and_grads(self, params: Params, batch: Any) -> Tuple[float, Params]:
        x, y = batch
        loss, d = _log_softmax_xent(x @ params["W"] + params["b"], y)
        return loss, {"W": _cast(x.T @ d, params["W"]), "b": _cast(d.sum(axis=0), params["b"])}

    def validation_loss(self, params: Params) -> float:
        return _log_softmax_xent(self.x_val @ params["W"] + params["b"], self.y_val)[0]


class MLPDigits(_Digits):
    """A 64-32-10 tanh MLP on the UCI digits, same data, split and batches as ``SoftmaxDigits``.

    Weights ~ N(0, 1/fan_in) from the seed, biases 0; mean cross-entropy.
    """

    name = "mlp-digits"
    hidden = 32

    def describe(self) -> str:
        return (f"MLP 64-{self.hidden}-10 tanh, UCI digits 8x8, {len(self.y_train)} train / {len(self.y_val)} val, "
                f"batch {self.batch_size}, {self.epochs} epochs; score val cross-entropy")

    def init_params(self, seed: int) -> Params:
        rng = np.random.default_rng(seed)
        n_in = self.x_train.shape[1]

        def normal(shape: Tuple[int, int]) -> np.ndarray:
            return (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)

        return {"W1": normal((n_in, self.hidden)), "b1": np.zeros(self.hidden, np.float32),
                "W2": normal((self.hidden, self.n_classes)), "b2": np.zeros(self.n_classes, np.float32)}

    def loss_and_grads(self, params: Params, batch: Any) -> Tuple[float, Params]:
        x, y = batch
        h = np.tanh(x @ params["W1"] + params["b1"])
        loss, d = _log_softmax_xent(h @ params["W2"] + params["b2"], y)
        dh = (d @ params["W2"].T) * (1.0 - h * h)
        return loss, {"W1": _cast(x.T @ dh, params["W1"]), "b1": _cast(dh.sum(axis=0), params["b1"]),
                      "W2": _cast(h.T @ d, params["W2"]), "b2": _cast(d.sum(axis=0), params["b2"])}

    def validation_loss(self, params: Params) -> float:
        h = np.tanh(self.x_val @ params["W1"] + params["b1"])
        return _log_softmax_xent(h @ params["W2"] + params["b2"], self.y_val)[0]


# --------------------------------------------------------------------------------------------
# Registry and loading

#: Built-in tasks by name; each value builds a fresh task.
TASKS: Dict[str, Callable[[], Task]] = {
    cls.name: cls
    for cls in (Rosenbrock, Beale, NoisyQuadratic, LogisticCancer, SoftmaxDigits, MLPDigits, LinearDiabetes)
}


def get_task(name: str) -> Task:
    """A fresh built-in task by name; ValueError listing the names for an unknown one."""
    try:
        factory = TASKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task {name!r}; built-in tasks: {', '.join(TASKS)}") from None
    return factory()


def describe_task(task: Any) -> str:
    """One line about a task: its ``describe()`` if it has one, else its docstring's first line, else its name."""
    describe = getattr(task, "describe", None)
    if callable(describe):
        return str(describe())
    doc = (type(task).__doc__ or "").strip()
    return doc.splitlines()[0] if doc else str(getattr(task, "name", type(task).__name__))


def check_task(obj: Any) -> List[str]:
    """What keeps ``obj`` from being a Task: a list of problems, empty when it is one."""
    problems = []
    for attr in _REQUIRED_METHODS:
        if not callable(getattr(obj, attr, None)):
            problems.append(f"method {attr}() is missing" if not hasattr(obj, attr) else f"{attr} is not callable")
    if not hasattr(obj, "name"):
        problems.append("attribute 'name' is missing")
    elif not isinstance(obj.name, str):
        problems.append(f"'name' must be a str, got {type(obj.name).__name__}")
    if not hasattr(obj, "epochs"):
        problems.append("attribute 'epochs' is missing")
    elif isinstance(obj.epochs, bool) or not isinstance(obj.epochs, (int, np.integer)) or obj.epochs < 1:
        problems.append(f"'epochs' must be an int >= 1, got {obj.epochs!r}")
    return problems


_module_counter = 0


def _import_file(path: Path) -> Any:
    global _module_counter
    _module_counter += 1
    module_name = f"_pyopt_tuner_user_task_{_module_counter}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise TaskLoadError(f"cannot import {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(module_name, None)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise TaskLoadError(f"importing {str(path)!r} failed: {type(exc).__name__}: {exc}") from exc
    return module


def load_task(spec: str) -> Task:
    """A task from a built-in name or ``path/to/file.py:OBJECT``.

    OBJECT may be a Task instance, a Task class (called with no arguments) or a zero-argument
    factory returning a Task. Raises TaskLoadError (a ValueError) for an unknown name, a missing
    file, an import error inside the file (chained), a missing object, or an object that does not
    satisfy the Task protocol (naming what is missing).
    """
    if not isinstance(spec, str) or not spec:
        raise TaskLoadError(f"a task spec must be a non-empty string, got {spec!r}")
    if spec in TASKS:
        return TASKS[spec]()
    if ":" not in spec:
        raise TaskLoadError(f"unknown task {spec!r}; built-in tasks: {', '.join(TASKS)}; "
                            "or give your own as path/to/file.py:OBJECT")
    file_part, _, obj_name = spec.rpartition(":")
    if not obj_name or not file_part:
        raise TaskLoadError(f"task spec {spec!r} must look like path/to/file.py:OBJECT")
    path = Path(file_part).expanduser()
    if not path.is_file():
        raise TaskLoadError(f"task file {file_part!r} does not exist" if not path.exists()
                            else f"task file {file_part!r} is not a file")
    module = _import_file(path)
    if not hasattr(module, obj_name):
        public = sorted(n for n in vars(module) if not n.startswith("_"))
        raise TaskLoadError(f"{file_part!r} has no object {obj_name!r}; its names: {', '.join(public) or '(none)'}")
    obj = getattr(module, obj_name)
    where = f"{file_part}:{obj_name}"

    if isinstance(obj, type) or (callable(obj) and check_task(obj)):
        kind = "class" if isinstance(obj, type) else "factory"
        try:
            task = obj()
        except Exception as exc:
            raise TaskLoadError(f"calling the {kind} {where} with no arguments failed: "
                                f"{type(exc).__name__}: {exc}") from exc
        problems = check_task(task)
        if problems:
            raise TaskLoadError(f"{where}: the object its {kind} returned is not a Task: {'; '.join(problems)}")
        return task
    problems = check_task(obj)
    if problems:
        raise TaskLoadError(f"{where} is not a Task (an instance, a class or a zero-argument factory): "
                            f"{'; '.join(problems)}")
    return obj
