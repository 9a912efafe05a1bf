"""A quick interleaved comparison of one AdamW step: pyopt vs torch.optim (fused and foreach).

    python benchmarks/adamw_vs_torch.py [--repeats 30]

Every round runs each contender once per case, in turn, so machine noise hits all of them alike;
the table shows medians and ratios. A placeholder until `pyopt bench` (issue 4) covers every
optimizer, the RMW probe and more peers. Needs torch (pip install torch==2.13.0).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import pyopt

CASES = [("10 x 1k", 10, 1_000), ("1 x 1M", 1, 1 << 20), ("100 x 33k", 100, 33_000), ("1 x 16M", 1, 1 << 24)]


def contenders(count: int, size: int):
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(size).astype(np.float32) for _ in range(count)]
    grads = [rng.standard_normal(size).astype(np.float32) for _ in range(count)]
    ours = pyopt.AdamW([p.copy() for p in params], lr=1e-3)
    out = {"pyopt": lambda: ours.step(grads)}
    for mode in ("fused", "foreach"):
        tensors = [torch.from_numpy(p.copy()) for p in params]
        for t, g in zip(tensors, grads):
            t.grad = torch.from_numpy(g)
        opt = torch.optim.AdamW(tensors, lr=1e-3, **{mode: True})
        out[f"torch {mode}"] = opt.step
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    print(f"pyopt {pyopt.__version__} isa={pyopt.info()['isa']} threads={pyopt.info()['num_threads']}, "
          f"torch {torch.__version__} threads={torch.get_num_threads()}; float32 AdamW, medians of {args.repeats}")
    print(f"{'case':>10} {'pyopt':>11} {'torch fused':>12} {'foreach':>11} {'vs fused':>9} {'vs foreach':>10}")
    for label, count, size in CASES:
        runs = contenders(count, size)
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(3):  # warm up
            for fn in runs.values():
                fn()
        for _ in range(args.repeats):
            for name, fn in runs.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        med = {name: float(np.median(t)) for name, t in times.items()}
        print(f"{label:>10} {med['pyopt'] * 1e6:9.1f}us {med['torch fused'] * 1e6:10.1f}us "
              f"{med['torch foreach'] * 1e6:9.1f}us {med['torch fused'] / med['pyopt']:8.2f}x "
              f"{med['torch foreach'] / med['pyopt']:9.2f}x")


if __name__ == "__main__":
    main()
