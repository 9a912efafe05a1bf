"""Throughput of blockwise 8-bit quantize + dequantize (block 256): pyopt's _core binding of
driver/quant8.hpp against bitsandbytes 0.50 on CPU. Report only (medians of interleaved runs).

    OMP_NUM_THREADS=2 python experiments/quant8_throughput.py [--repeats 15]
"""

import argparse
import os
import statistics
import time

import numpy as np
import torch

import bitsandbytes.functional as bnb
import pyopt
from pyopt import _core


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    args = parser.parse_args()
    pyopt.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    print(f"isa {pyopt.info()['isa']}, {args.threads} threads, medians of {args.repeats} interleaved runs (ms)")
    code = bnb.create_dynamic_map(signed=True)
    for n in (1 << 20, 1 << 24):
        x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
        xt = torch.from_numpy(x)
        codes, absmax = _core.quantize_blockwise(x, True)
        qt, state = bnb.quantize_blockwise(xt, code=code, blocksize=256)
        runs = {key: [] for key in ("pyopt q", "pyopt dq", "bnb q", "bnb dq")}
        for _ in range(args.repeats):
            runs["pyopt q"].append(timed(lambda: _core.quantize_blockwise(x, True)))
            runs["bnb q"].append(timed(lambda: bnb.quantize_blockwise(xt, code=code, blocksize=256)))
            runs["pyopt dq"].append(timed(lambda: _core.dequantize_blockwise(codes, absmax, True)))
            runs["bnb dq"].append(timed(lambda: bnb.dequantize_blockwise(qt, state)))
        med = {k: statistics.median(v) * 1e3 for k, v in runs.items()}
        bytes_moved = n * 5 + (n // 256) * 4  # float32 read + uint8 written (+ absmax), each direction
        for who in ("pyopt", "bnb"):
            q, dq = med[f"{who} q"], med[f"{who} dq"]
            print(f"n={n:>9} {who:5}: quantize {q:8.3f}  dequantize {dq:8.3f}  total {q + dq:8.3f} ms"
                  f"  ({bytes_moved / q / 1e6:5.1f} / {bytes_moved / dq / 1e6:5.1f} GB/s)")
        print(f"n={n:>9} speedup pyopt/bnb: quantize {med['bnb q'] / med['pyopt q']:.2f}x, "
              f"dequantize {med['bnb dq'] / med['pyopt dq']:.2f}x, "
              f"total {(med['bnb q'] + med['bnb dq']) / (med['pyopt q'] + med['pyopt dq']):.2f}x")


if __name__ == "__main__":
    main()
