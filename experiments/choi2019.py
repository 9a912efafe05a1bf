"""Choi et al. 2019, "On Empirical Comparisons of Optimizers for Deep Learning" (arXiv:1910.05446):
when every hyperparameter is tuned (Adam's ε and betas included), the more general optimizer is
never worse than the one it contains: the best Adam >= the best Momentum >= the best SGD.

For each built-in task this runs pyopt tune's fair mode (one study per optimizer, the same number
of trials each, budget "full": lr, 1-β1, 1-β2, ε, weight decay for Adam; lr, 1-momentum, weight
decay, nesterov for Momentum; lr, weight decay for SGD) and prints the best validation loss of
each, as a markdown table (docs/tuner-experiments.md holds a run).

    python experiments/choi2019.py [--trials 60] [--seed 0]
"""
from __future__ import annotations

import argparse
import sys
import time

from pyopt import tuner

OPTIMIZERS = ("sgd", "momentum", "adam")


def main(trials: int, seed: int) -> int:
    print(f"| task | {' | '.join(OPTIMIZERS)} | Adam ≤ Momentum ≤ SGD (within 1% or 1e-6) |")
    print("|---|" + "---|" * (len(OPTIMIZERS) + 1))
    holds_everywhere = True
    start = time.perf_counter()
    for name in tuner.TASKS:
        result = tuner.tune(name, OPTIMIZERS, trials=trials, fair=True, budget="full", seed=seed, progress=False,
                             strategy="tpe")
        best = {r["optimizer"]: r["best"] for r in tuner.report.summary_rows(result.studies)}
        values = [best[o] for o in OPTIMIZERS]
        # "Never worse", up to 1% (the tuning itself is noisy at this budget).
        holds = best["adam"] <= best["momentum"] * 1.01 + 1e-6 and best["momentum"] <= best["sgd"] * 1.01 + 1e-6
        holds_everywhere &= holds
        print(f"| {name} | {' | '.join(f'{v:.5g}' for v in values)} | {'yes' if holds else 'no'} |", flush=True)
    print(f"\n{trials} trials per optimizer and task, seed {seed}, {time.perf_counter() - start:.0f} s")
    return 0 if holds_everywhere else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.exit(main(args.trials, args.seed))
