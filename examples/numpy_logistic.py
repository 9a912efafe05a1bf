"""Logistic regression trained with pyopt.AdamW on plain numpy arrays (updated in place)."""
import numpy as np
import pyopt

rng = np.random.default_rng(0)
X = rng.standard_normal((512, 20))
true_w = rng.standard_normal(20)
y = (X @ true_w + 0.5 * rng.standard_normal(512) > 0).astype(float)   # labels with signal

w, b = np.zeros(20), np.zeros(1)
opt = pyopt.AdamW({"w": w, "b": b}, lr=0.05, weight_decay=1e-2)
for epoch in range(101):
    p = 1 / (1 + np.exp(-(X @ w + b)))
    loss = -np.mean(y * np.log(p + 1e-12) + (1 - y) * np.log(1 - p + 1e-12))
    if epoch % 20 == 0:
        print(f"epoch {epoch:3d}  loss {loss:.4f}  accuracy {np.mean((p > 0.5) == y):.3f}")
    opt.step({"w": X.T @ (p - y) / len(y), "b": [np.mean(p - y)]})   # w and b change in place
