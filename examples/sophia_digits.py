"""SophiaG on softmax regression over the bundled digits, with the Gauss-Newton-Bartlett Hessian
estimate refreshed every k = 10 steps, as in the official Sophia training loop.

    python examples/sophia_digits.py [--epochs 20] [--k 10]
"""
from __future__ import annotations

import argparse

import numpy as np

import pyopt
from pyopt import hessian
from pyopt.demo import _split


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def loss_and_grads(params: dict, x: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
    """Mean cross-entropy of softmax(x W + b) and its gradients."""
    probs = softmax(x @ params["W"] + params["b"])
    n = len(y)
    loss = float(-np.log(probs[np.arange(n), y] + 1e-12).mean())
    d = probs.copy()
    d[np.arange(n), y] -= 1.0
    d /= n
    return loss, {"W": (x.T @ d).astype(np.float32), "b": d.sum(axis=0).astype(np.float32)}


def main(epochs: int = 20, k: int = 10, seed: int = 0) -> float:
    x_train, y_train, x_val, y_val = _split()
    rng = np.random.default_rng(seed)
    params = {"W": np.zeros((64, 10), np.float32), "b": np.zeros(10, np.float32)}
    # bs: examples per batch (the official code passes tokens per batch).
    opt = pyopt.SophiaG(params, lr=3e-3, rho=0.05, weight_decay=1e-4, bs=64)
    step = 0
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(y_train))
        for i in range(0, len(order), 64):
            batch = order[i:i + 64]
            _, grads = loss_and_grads(params, x_train[batch], y_train[batch])
            opt.step(grads)
            step += 1
            if step % k == 0:
                # GNB: gradients of the loss on labels sampled from the model's own predictions.
                logits = x_train[batch] @ params["W"] + params["b"]
                sampled = hessian.sample_labels(logits, rng)
                _, sampled_grads = loss_and_grads(params, x_train[batch], sampled)
                opt.update_hessian(hessian.gnb_estimate(sampled_grads))
        val_loss, _ = loss_and_grads(params, x_val, y_val)
        acc = float((np.argmax(x_val @ params["W"] + params["b"], axis=1) == y_val).mean())
        print(f"epoch {epoch:3d}  val_loss {val_loss:.4f}  val_acc {acc:.3f}", flush=True)
    return val_loss


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--k", type=int, default=10, help="refresh the Hessian estimate every k steps")
    args = parser.parse_args()
    main(args.epochs, args.k)
