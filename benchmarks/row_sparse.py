"""Time one step of an embedding table with a row-sparse gradient: pyopt.RowSparse (coalesce,
the rule's kernel on the rows in place: pyopt/sparse.py) against torch.optim's sparse path on the
same table, and against a dense step of the whole table (what a dense gradient costs).

    python benchmarks/row_sparse.py [--rows 1000000] [--cols 64] [--batch 4096] [--threads 2]

Prints the median milliseconds per step over --repeats timed steps (after 3 warm-up steps).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import pyopt


def median_ms(step, repeats: int) -> float:
    for _ in range(3):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cols", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4096, help="indices per step (with repeats)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    pyopt.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    idx = rng.zipf(1.2, args.batch) % args.rows  # a skewed lookup: popular rows repeat
    rows = rng.standard_normal((args.batch, args.cols)).astype(np.float32)
    dense_grad = np.zeros((args.rows, args.cols), np.float32)
    np.add.at(dense_grad, idx, rows)
    print(f"table {args.rows} x {args.cols} float32, {args.batch} indices ({np.unique(idx).size} distinct), "
          f"{args.threads} threads, isa {pyopt.info()['isa']}")
    results = {}
    for name in ("sparse_adam", "adagrad", "rowwise_adagrad"):
        table = rng.standard_normal((args.rows, args.cols)).astype(np.float32)
        opt = pyopt.create(name, [table], lr=1e-3)
        results[f"pyopt {name} RowSparse"] = median_ms(lambda: opt.step([pyopt.RowSparse(idx, rows)]), args.repeats)
        results[f"pyopt {name} dense grad"] = median_ms(lambda: opt.step([dense_grad]), max(3, args.repeats // 4))
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        torch.set_num_threads(args.threads)
        grad = torch.sparse_coo_tensor(torch.from_numpy(idx)[None], torch.from_numpy(rows), (args.rows, args.cols))
        for cls in ("SparseAdam", "Adagrad"):
            p = torch.nn.Parameter(torch.randn(args.rows, args.cols))
            opt = getattr(torch.optim, cls)([p], lr=1e-3)

            def step() -> None:
                p.grad = grad.clone()
                opt.step()
            results[f"torch {cls} sparse grad"] = median_ms(step, args.repeats)
    for key, ms in results.items():
        print(f"  {key:34s} {ms:9.3f} ms")


if __name__ == "__main__":
    main()
