"""A small torch MLP on the digits bundled with pyopt, trained by pyopt.torch.AdamW under torch's
OneCycleLR schedule: pyopt's optimizer in an ordinary torch training loop.

    python examples/torch_mlp.py [--epochs 12] [--seed 0]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

import pyopt.torch
from pyopt.datasets import load_digits

BATCH = 64


def digits(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Standardized features (train statistics) and labels: 1497 training and 300 validation digits."""
    images, labels = load_digits()
    order = np.random.default_rng(seed).permutation(len(labels))
    train, val = order[:-300], order[-300:]
    x = torch.from_numpy(images.astype(np.float32))
    y = torch.from_numpy(labels.astype(np.int64))
    mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-3)  # border pixels are always 0
    x = (x - mean) / std
    return x[train], y[train], x[val], y[val]


def main(epochs: int = 12, seed: int = 0) -> float:
    """Trains, prints one line per epoch; returns the final validation accuracy."""
    torch.manual_seed(seed)
    x_train, y_train, x_val, y_val = digits(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    # AdamW's usual groups: weight decay on the weight matrices, none on the biases
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    opt = pyopt.torch.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}])
    # the scheduler sets each group's lr (warm-up to max_lr, then down), as it does for torch.optim.AdamW
    steps_per_epoch = -(-len(y_train) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, epochs=epochs, steps_per_epoch=steps_per_epoch)
    loss_fn = torch.nn.CrossEntropyLoss()
    accuracy = 0.0
    for epoch in range(1, epochs + 1):
        model.train()
        total = 0.0
        for batch in torch.randperm(len(y_train)).split(BATCH):
            loss = loss_fn(model(x_train[batch]), y_train[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(batch)
        model.eval()
        with torch.no_grad():
            accuracy = (model(x_val).argmax(1) == y_val).float().mean().item()
        print(f"epoch {epoch:3d}  lr {sched.get_last_lr()[0]:.2e}  train_loss {total / len(y_train):.4f}  "
              f"val_acc {accuracy:.3f}", flush=True)
    print(f"final validation accuracy {accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.epochs, args.seed)
