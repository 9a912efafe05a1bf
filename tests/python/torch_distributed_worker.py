"""One rank of test_torch_distributed.py's 2-process runs (torch.distributed, gloo, CPU), and the
model, data and single-process reference they are compared with.

Run by the test as ``python torch_distributed_worker.py RANK WORLD_SIZE PORT OUT``: the rank trains
the same small MLP with pyopt.torch.AdamW under DistributedDataParallel (float64 and float32) and
under ZeroRedundancyOptimizer (one param group, the params as bucket views, two param groups), each
on its slice of the same global batches, and saves what it ends with to OUT (``torch.save``).
"""
from __future__ import annotations

import datetime
import sys
from typing import Any

import torch

import pyopt
import pyopt.torch

IN_FEATURES, HIDDEN, OUT_FEATURES = 6, 16, 3
GLOBAL_BATCH = 8
STEPS = 5
HYPER = {"lr": 0.05, "betas": (0.9, 0.99), "weight_decay": 0.1}
TIMEOUT = datetime.timedelta(seconds=60)  # a rank waiting on a dead peer fails instead of hanging


def make_model(dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(IN_FEATURES, HIDDEN), torch.nn.Tanh(),
                               torch.nn.Linear(HIDDEN, OUT_FEATURES)).to(dtype)


def global_batches(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of every step, ``(STEPS, GLOBAL_BATCH, features)``."""
    gen = torch.Generator().manual_seed(1)
    inputs = torch.randn(STEPS, GLOBAL_BATCH, IN_FEATURES, generator=gen, dtype=torch.float64)
    targets = torch.randn(STEPS, GLOBAL_BATCH, OUT_FEATURES, generator=gen, dtype=torch.float64)
    return inputs.to(dtype), targets.to(dtype)


def decay_groups(params: list[torch.Tensor]) -> list[dict[str, Any]]:
    """Weights decayed, biases not: the two param groups trainers usually make."""
    return [{"params": [p for p in params if p.dim() > 1]},
            {"params": [p for p in params if p.dim() == 1], "weight_decay": 0.0}]


def train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, dtype: torch.dtype,
          rank: int = 0, world_size: int = 1) -> None:
    """STEPS steps of the mean squared error on this rank's equal slice of each global batch."""
    inputs, targets = global_batches(dtype)
    share = GLOBAL_BATCH // world_size
    rows = slice(rank * share, (rank + 1) * share)
    for step in range(STEPS):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(inputs[step, rows]), targets[step, rows])
        loss.backward()
        optimizer.step()


def single_process(dtype: torch.dtype, rank: int = 0, world_size: int = 1,
                   grouped: bool = False) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """The params and optimizer state_dict after training in this process alone (on slice
    ``rank`` of ``world_size`` of each global batch; by default on the whole batch)."""
    model = make_model(dtype)
    params = list(model.parameters())
    optimizer = pyopt.torch.AdamW(decay_groups(params) if grouped else params, **HYPER)
    train(model, optimizer, dtype, rank, world_size)
    return [p.detach().clone() for p in params], optimizer.state_dict()


def run_ddp(dtype: torch.dtype, rank: int, world_size: int) -> dict[str, Any]:
    from torch.nn.parallel import DistributedDataParallel

    model = DistributedDataParallel(make_model(dtype))
    optimizer = pyopt.torch.AdamW(decay_groups(list(model.parameters())), **HYPER)
    train(model, optimizer, dtype, rank, world_size)
    return {"params": [p.detach().clone() for p in model.parameters()]}


def run_zero(rank: int, world_size: int, grouped: bool = False, bucket_view: bool = False) -> dict[str, Any]:
    """ZeroRedundancyOptimizer over pyopt.torch.AdamW (float64). Besides the params: which params
    (by index in model.parameters()) this rank's local optimizer holds and has state for, and on
    rank 0 the consolidated state_dict."""
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel

    dtype = torch.float64
    model = DistributedDataParallel(make_model(dtype))
    params = list(model.parameters())
    error = None
    try:
        optimizer = ZeroRedundancyOptimizer(decay_groups(params) if grouped else params,
                                            optimizer_class=pyopt.torch.AdamW,
                                            parameters_as_bucket_view=bucket_view, **HYPER)
    except (TypeError, ValueError) as exc:  # the local optimizer refused its shard: reported to the test
        error = f"{type(exc).__name__}: {exc}"
    failed = torch.tensor([error is not None], dtype=torch.int32)
    torch.distributed.all_reduce(failed, op=torch.distributed.ReduceOp.MAX)  # no rank trains alone
    if failed.item():
        return {"error": error or "another rank's local optimizer refused its shard"}
    train(model, optimizer, dtype, rank, world_size)
    index = {id(p): i for i, p in enumerate(params)}
    local = optimizer.optim
    out = {
        "params": [p.detach().clone() for p in params],
        "local_class": f"{type(local).__module__}.{type(local).__qualname__}",
        "local_params": sorted(index[id(p)] for group in local.param_groups for p in group["params"]),
        "local_state": sorted(index[id(p)] for p in local.state),
    }
    optimizer.consolidate_state_dict(to=0)
    if rank == 0:
        out["state_dict"] = optimizer.state_dict()
    return out


def main(rank: int, world_size: int, port: int, out_path: str) -> None:
    torch.set_num_threads(1)
    pyopt.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                         world_size=world_size, timeout=TIMEOUT)
    try:
        results = {
            "ddp_float64": run_ddp(torch.float64, rank, world_size),
            "ddp_float32": run_ddp(torch.float32, rank, world_size),
            "zero": run_zero(rank, world_size),
            "zero_bucket_view": run_zero(rank, world_size, bucket_view=True),
            "zero_grouped": run_zero(rank, world_size, grouped=True),
        }
        torch.save(results, out_path)
    finally:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
