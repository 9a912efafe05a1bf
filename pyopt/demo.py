"""``pyopt demo``: train a small MLP on the bundled digits data with any pyopt optimizer.

Numpy only: a 64 -> 64 (tanh) -> 10 network, softmax cross-entropy, analytic gradients,
mini-batches of 64, float32 throughout. ``train`` returns the per-epoch history; ``run`` prints it.

    >>> from pyopt.demo import train
    >>> result = train("adam", epochs=5)
    >>> result.history[-1].val_acc
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import pyopt
from pyopt._spec import rule_optimizers, spec
from pyopt.storage import parse_precision
from pyopt.datasets import load_digits  # noqa: F401 (pyopt.demo.load_digits is public)

#: Learning rate per optimizer when ``lr`` is not given (each record's demo_lr): each makes the
#: loss fall clearly in 30 epochs. (sophia: the demo never calls update_hessian, so h = 0 and the
#: steps are ±lr, sign momentum.)
DEFAULT_LR: dict[str, float] = {name: spec(name).demo_lr for name in rule_optimizers()}

N_SAMPLES = 1797
N_TRAIN = 1500  # the other 297 samples are the validation set
SPLIT_SEED = 0  # the split never changes with ``seed``, so runs stay comparable
HIDDEN = 64
BATCH_SIZE = 64


@dataclass(frozen=True)
class Epoch:
    epoch: int  # 0 is the untrained network
    train_loss: float
    val_loss: float
    val_acc: float


@dataclass
class Result:
    optimizer: str
    lr: float
    history: list[Epoch] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else float("inf")


def _split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Standardized float32 features (train statistics only) and int labels: X_train, y_train, X_val, y_val."""
    images, labels = load_digits()
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    train, val = order[:N_TRAIN], order[N_TRAIN:]
    x = images.astype(np.float32)
    mean = x[train].mean(axis=0)
    std = x[train].std(axis=0)
    std[std == 0] = 1.0  # border pixels that are always 0
    x = (x - mean) / std
    y = labels.astype(np.intp)
    return x[train], y[train], x[val], y[val]


def _init_params(rng: np.random.Generator, n_in: int, n_out: int) -> dict[str, np.ndarray]:
    def normal(shape: tuple[int, int], fan_in: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)

    return {
        "W1": normal((n_in, HIDDEN), n_in),
        "b1": np.zeros(HIDDEN, np.float32),
        "W2": normal((HIDDEN, n_out), HIDDEN),
        "b2": np.zeros(n_out, np.float32),
    }


def _forward(p: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hidden activations and softmax probabilities."""
    h = np.tanh(x @ p["W1"] + p["b1"])
    logits = h @ p["W2"] + p["b2"]
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return h, e / e.sum(axis=1, keepdims=True)


def _loss(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(probs[np.arange(len(y)), y] + 1e-12).mean())


def _grads(p: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Gradients of the mean cross-entropy over the batch."""
    h, probs = _forward(p, x)
    d_logits = probs
    d_logits[np.arange(len(y)), y] -= 1.0
    d_logits /= len(y)
    d_h = (d_logits @ p["W2"].T) * (1.0 - h * h)
    return {
        "W1": x.T @ d_h,
        "b1": d_h.sum(axis=0),
        "W2": h.T @ d_logits,
        "b2": d_logits.sum(axis=0),
    }


def _evaluate(p: dict[str, np.ndarray], epoch: int, data: tuple[np.ndarray, ...]) -> Epoch:
    x_train, y_train, x_val, y_val = data
    _, train_probs = _forward(p, x_train)
    _, val_probs = _forward(p, x_val)
    acc = float((val_probs.argmax(axis=1) == y_val).mean())
    return Epoch(epoch, _loss(train_probs, y_train), _loss(val_probs, y_val), acc)


def train(optimizer: str = "adamw", epochs: int = 30, lr: float | None = None, seed: int = 0,
          on_epoch: Callable[[Epoch], None] | None = None, precision: str = "f32") -> Result:
    """Train the MLP; ``history[0]`` is before training, ``history[k]`` after epoch k.

    ``seed`` sets the initial weights and the batch order. ``precision`` (``pyopt.storage.
    parse_precision``, e.g. "bf16+master+int8") stores the params as f16/bf16 and sets the
    optimizer's storage options; forward and backward run in float32 on upcast copies, the
    gradients are float32. ValueError for an unknown optimizer, a negative epoch count, an invalid
    lr or precision, before any training.
    """
    if optimizer not in DEFAULT_LR:
        raise ValueError(f"unknown optimizer {optimizer!r}; the demo runs: {', '.join(DEFAULT_LR)}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
    lr = DEFAULT_LR[optimizer] if lr is None else float(lr)
    stored = parse_precision(precision)

    data = _split()
    x_train, y_train = data[0], data[1]
    rng = np.random.default_rng(seed)
    params = {k: v.astype(stored.dtype) for k, v in _init_params(rng, x_train.shape[1], int(y_train.max()) + 1).items()}
    opt = pyopt.create(optimizer, params, lr=lr, **stored.options.as_dict())  # ValueError for a bad lr

    def computed() -> dict[str, np.ndarray]:  # float32 views (copies of 16-bit params) for the math
        return {k: v.astype(np.float32, copy=False) for k, v in params.items()}

    result = Result(optimizer, lr)
    start = time.perf_counter()
    result.history.append(_evaluate(computed(), 0, data))
    if on_epoch:
        on_epoch(result.history[-1])
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(y_train))
        for i in range(0, len(order), BATCH_SIZE):
            batch = order[i:i + BATCH_SIZE]
            opt.step(_grads(computed(), x_train[batch], y_train[batch]))  # updates params in place
            result.steps += 1
        evaluate_mode = getattr(opt, "eval", None)  # schedule-free: evaluate the averaged params
        if evaluate_mode:
            evaluate_mode()
        result.history.append(_evaluate(computed(), epoch, data))
        if evaluate_mode:
            opt.train()  # type: ignore[attr-defined]
        if on_epoch:
            on_epoch(result.history[-1])
    result.seconds = time.perf_counter() - start
    return result


def run(optimizer: str = "adamw", epochs: int = 30, lr: float | None = None, seed: int = 0,
        precision: str = "f32") -> int:
    """``pyopt demo``: print one line per epoch and the timing; exit code 0, or 2 for bad arguments."""

    def show(e: Epoch) -> None:
        if e.epoch == 0:  # the optimizer exists by now, so the arguments were valid
            shown_lr = DEFAULT_LR[optimizer] if lr is None else lr
            shown_precision = "" if precision == "f32" else f", precision {precision}"
            print(f"pyopt demo: {optimizer} (lr={shown_lr:g}{shown_precision}) on UCI digits, {N_TRAIN} train / "
                  f"{N_SAMPLES - N_TRAIN} validation, MLP 64-{HIDDEN}-10 tanh, batch {BATCH_SIZE}, seed {seed}, "
                  f"isa {pyopt.info()['isa']}")
            print(f"{'epoch':>5}  {'train_loss':>10}  {'val_loss':>8}  {'val_acc':>7}")
        print(f"{e.epoch:5d}  {e.train_loss:10.4f}  {e.val_loss:8.4f}  {e.val_acc:7.4f}", flush=True)

    try:
        result = train(optimizer, epochs=epochs, lr=lr, seed=seed, on_epoch=show, precision=precision)
    except ValueError as exc:
        print(f"pyopt demo: {exc}", file=sys.stderr)
        return 2
    print(f"done: {epochs} epochs, {result.steps} steps in {result.seconds:.2f} s "
          f"({result.steps_per_second:.0f} steps/s, evaluation included)")
    return 0
