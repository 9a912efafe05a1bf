"""pyopt.torch on the engines that distribute training.

- DistributedDataParallel and ZeroRedundancyOptimizer: 2 gloo processes on this machine
  (torch_distributed_worker.py), each on half of every global batch, end with the params of a
  single-process run on the whole batch; ZeRO's local optimizers hold the state of their shard only
  and its consolidated state_dict is the single-process one.
- DeepSpeed ZeRO stage 1/2 (ZeRO-Offload) and 3: what DeepSpeed's ZeRO optimizers do to the
  optimizer they are given (deepspeed/runtime/zero/stage_1_and_2.py, stage3.py), done here
  in-process without DeepSpeed: element-wise optimizers step the flat float32 partitions bit for bit
  as they step the params; per-tensor ones refuse them and change nothing.
- docs/torch.md: its table of per-tensor optimizers is the records' list; its snippets run.
"""
from __future__ import annotations

import copy
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import pyopt.torch as pt  # noqa: E402
from pyopt import _core  # noqa: E402
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors  # noqa: E402

import markdown  # noqa: E402
import torch_distributed_worker as worker  # noqa: E402

RECORDS = _core.optimizers()
PER_TENSOR = sorted(name for name, record in RECORDS.items() if record["per_tensor"])
ELEMENT_WISE = sorted(name for name, record in RECORDS.items() if not record["per_tensor"])
WORKER = Path(worker.__file__)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "torch.md"
RUN_TIMEOUT = 180  # seconds for a 2-process run; past it the processes are killed and the test fails


def torch_class(name):
    return getattr(pt, RECORDS[name]["class_name"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env() -> dict[str, str]:
    """One thread per process (2 ranks on a 2-core machine), output unbuffered."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run_ranks(commands: list[list[str]], cwd: Path) -> list[subprocess.CompletedProcess]:
    """Run the commands together; fail the test if they take more than RUN_TIMEOUT. When one exits
    with an error the others are killed (a rank whose peer died waits for it)."""
    logs = [(cwd / f"run{i}.stdout", cwd / f"run{i}.stderr") for i in range(len(commands))]
    procs = []
    try:
        for cmd, (out, err) in zip(commands, logs):
            with open(out, "w") as stdout, open(err, "w") as stderr:
                procs.append(subprocess.Popen(cmd, cwd=cwd, env=child_env(), stdout=stdout, stderr=stderr,
                                              start_new_session=True))  # (its own group: torchrun's workers too)
        deadline = time.monotonic() + RUN_TIMEOUT
        while any(proc.poll() is None for proc in procs) and not any(proc.poll() for proc in procs):
            if time.monotonic() > deadline:
                errors = [f"--- {cmd}:\n{err.read_text()[-3000:]}" for cmd, (_, err) in zip(commands, logs)]
                pytest.fail(f"distributed run still going after {RUN_TIMEOUT} s:\n" + "\n".join(errors))
            time.sleep(0.05)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return [subprocess.CompletedProcess(cmd, proc.returncode, out.read_text(), err.read_text())
            for cmd, proc, (out, err) in zip(commands, procs, logs)]


@pytest.fixture(scope="module")
def distributed(tmp_path_factory):
    """What each of the 2 worker ranks ended with (one run for all the DDP / ZeRO tests)."""
    folder = tmp_path_factory.mktemp("distributed")
    port = free_port()
    outs = [folder / f"rank{rank}.pt" for rank in range(2)]
    results = run_ranks([[sys.executable, str(WORKER), str(rank), "2", str(port), str(outs[rank])]
                         for rank in range(2)], folder)
    for rank, result in enumerate(results):
        assert result.returncode == 0, f"rank {rank} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return [torch.load(out, weights_only=True) for out in outs]


def max_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    assert [t.shape for t in a] == [t.shape for t in b]
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


# ----- DistributedDataParallel -----------------------------------------------------------------------
@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-13), (torch.float32, 1e-6)])
def test_ddp_ends_with_the_params_of_one_process_on_the_global_batch(distributed, dtype, tolerance):
    """The allreduce averages the two half-batch grads: the whole batch's grad up to rounding."""
    key = f"ddp_{str(dtype).removeprefix('torch.')}"
    single, _ = worker.single_process(dtype, grouped=True)
    ranks = [result[key]["params"] for result in distributed]
    assert all(torch.equal(a, b) for a, b in zip(*ranks)), "the ranks' params differ"
    assert ranks[0][0].dtype == dtype
    assert max_difference(ranks[0], single) <= tolerance
    # The comparison can tell: a run on rank 0's half alone ends elsewhere.
    half, _ = worker.single_process(dtype, rank=0, world_size=2, grouped=True)
    assert max_difference(ranks[0], half) > 1e-3


# ----- ZeroRedundancyOptimizer -------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["zero", "zero_bucket_view"])
def test_zero_redundancy_optimizer_shards_the_state_and_matches_one_process(distributed, variant):
    single, single_state = worker.single_process(torch.float64)
    results = [result[variant] for result in distributed]
    assert not any("error" in r for r in results), [r.get("error") for r in results]
    shards = []
    for rank, result in enumerate(results):
        assert result["local_class"] == "pyopt.torch.AdamW"
        assert result["local_params"], f"rank {rank} was given no params"
        assert result["local_state"] == result["local_params"], "a rank holds state beyond its shard"
        shards.append(set(result["local_params"]))
        assert max_difference(result["params"], single) <= 1e-13
    assert not shards[0] & shards[1] and shards[0] | shards[1] == set(range(len(single)))

    consolidated = results[0]["state_dict"]
    assert "state_dict" not in results[1]
    assert consolidated["param_groups"][0]["params"] == single_state["param_groups"][0]["params"]
    assert set(consolidated["state"]) == set(single_state["state"])
    for index, entry in single_state["state"].items():
        got = consolidated["state"][index]
        assert set(got) == set(entry)
        assert float(got["step"]) == float(entry["step"]) == worker.STEPS
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(got[key], entry[key], rtol=1e-12, atol=1e-15)
    # The consolidated checkpoint is an ordinary one: it loads into a single-process optimizer.
    model = worker.make_model(torch.float64)
    reloaded = pt.AdamW(model.parameters(), **worker.HYPER)
    reloaded.load_state_dict(consolidated)
    assert float(reloaded.state[next(model.parameters())]["step"]) == worker.STEPS


def test_zero_redundancy_optimizer_with_param_groups(distributed):
    """With weight-decay groups, ZeRO gives a rank's local optimizer an empty group (torch's ZeRO
    relies on the local optimizer accepting one)."""
    single, _ = worker.single_process(torch.float64, grouped=True)
    for result in (result["zero_grouped"] for result in distributed):
        assert "error" not in result, result.get("error")
        assert max_difference(result["params"], single) <= 1e-13


# ----- DeepSpeed ZeRO stage 1/2 -----------------------------------------------------------------------
class ZeroStage12Rank:
    """What DeepSpeedZeroOptimizer (deepspeed/runtime/zero/stage_1_and_2.py) does to the optimizer
    it is given, on data-parallel rank ``rank`` of ``world_size``, without DeepSpeed:

    - the optimizer was constructed over the model's params; each of its groups' params
      (``bit16_groups``) are flattened, padded to a multiple of 2 * world_size elements and split
      into world_size equal partitions; this rank's, cloned to float32 and detached
      (``single_partition_of_fp32_groups[i]``, ``requires_grad=True``), replaces the group's params:
      ``param_group['params'] = [partition]``;
    - ``initialize_optimizer_states``: the partition's grad is a zero float32 buffer (kept with
      offload, set to None without);
    - ``step``: per group, this rank's slice of the flat grads into the partition's grad (offload:
      copied into the buffer; otherwise a new tensor, dropped after the step), then
      ``_optimizer_step(i)``: ``optimizer.param_groups = [original[i]]``, ``step()``, the original
      list restored; after the first step, ``optimizer.state[partition]`` is read
      (``lazy_init_hp_params_optimizer_state``).

    ``all_gather`` then writes every rank's partitions back into the model's params."""

    def __init__(self, optimizer, rank: int, world_size: int, offload: bool):
        self.optimizer, self.rank, self.world_size, self.offload = optimizer, rank, world_size, offload
        self.groups = [list(group["params"]) for group in optimizer.param_groups]
        self.partitions = []
        for group in optimizer.param_groups:
            flat = self.padded_flat([p.detach() for p in group["params"]])
            partition = flat.narrow(0, rank * self.size(flat), self.size(flat)).clone().float().detach()
            partition.requires_grad = True
            group["params"] = [partition]
            self.partitions.append(partition)
        for partition in self.partitions:
            partition.grad = torch.zeros(partition.numel(), dtype=partition.dtype)
            if not offload:
                partition.grad = None
        self.linked_state = None

    def padded_flat(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        flat = _flatten_dense_tensors(tensors)
        alignment = 2 * self.world_size
        padding = -flat.numel() % alignment
        return torch.cat([flat, flat.new_zeros(padding)]) if padding else flat

    def size(self, flat: torch.Tensor) -> int:
        return flat.numel() // self.world_size

    def step(self) -> None:
        for i, partition in enumerate(self.partitions):
            grads = self.padded_flat([p.grad for p in self.groups[i]])
            mine = grads.narrow(0, self.rank * self.size(grads), self.size(grads)).float()
            if self.offload:
                partition.grad.copy_(mine)
            else:
                partition.grad = mine.clone()
            original = self.optimizer.param_groups
            self.optimizer.param_groups = [original[i]]
            self.optimizer.step()
            self.optimizer.param_groups = original
            if not self.offload:
                partition.grad = None
        if self.linked_state is None:
            self.linked_state = [self.optimizer.state[partition] for partition in self.partitions]

    @staticmethod
    def all_gather(ranks: list[ZeroStage12Rank]) -> None:
        for i, params in enumerate(ranks[0].groups):
            flat = torch.cat([rank.partitions[i].detach() for rank in ranks])
            numel = sum(p.numel() for p in params)
            with torch.no_grad():
                for p, new in zip(params, _unflatten_dense_tensors(flat[:numel], params)):
                    p.copy_(new)


class ZeroStage3Rank(ZeroStage12Rank):
    """What DeepSpeedZeroOptimizer_Stage3 (deepspeed/runtime/zero/stage3.py) does to the optimizer:
    after the float32 partitions are made, every group's params are emptied
    (``param_group['params'] = []``); a step shows the optimizer one sub-group (here: one per group)
    at a time, ``param_groups[i]['params'] = [partition]``, ``step()``, then ``[]`` again; a
    checkpoint puts the partitions back (``_set_fp32_optimizer_param_groups``), takes
    ``state_dict()`` and empties the groups. (Stage 3 partitions each param before flattening this
    rank's shards: another layout of the same elements, which element-wise rules do not see.)"""

    def __init__(self, optimizer, rank: int, world_size: int, offload: bool = True):
        super().__init__(optimizer, rank, world_size, offload)
        for group in optimizer.param_groups:
            group["params"] = []

    def step(self) -> None:
        for i, partition in enumerate(self.partitions):
            grads = self.padded_flat([p.grad for p in self.groups[i]])
            partition.grad = grads.narrow(0, self.rank * self.size(grads), self.size(grads)).float().clone()
            self.optimizer.param_groups[i]["params"] = [partition]
            self.optimizer.step()
            self.optimizer.param_groups[i]["params"] = []

    def state_dict(self) -> dict:
        for group, partition in zip(self.optimizer.param_groups, self.partitions):
            group["params"].append(partition)
        state = self.optimizer.state_dict()
        for group in self.optimizer.param_groups:
            group["params"] = []
        return state


def hyper(name: str) -> dict:
    """A few hyperparameters for a short run where the defaults barely move."""
    return {"lr": 0.05} if name in ("sgd", "momentum", "nag", "signsgd", "signum", "schedulefree_sgd") else {}


def loss_on(model: torch.nn.Module, step: int) -> torch.Tensor:
    inputs, targets = worker.global_batches(torch.float32)
    return torch.nn.functional.mse_loss(model(inputs[step]), targets[step])


def train_per_param(name: str, groups, steps: int = 3) -> list[torch.Tensor]:
    model = worker.make_model(torch.float32)
    params = list(model.parameters())
    optimizer = torch_class(name)(groups(params), **hyper(name))
    for step in range(steps):
        optimizer.zero_grad()
        loss_on(model, step).backward()
        optimizer.step()
    return [p.detach().clone() for p in params]


def train_deepspeed_zero(name: str, groups, offload: bool = True, world_size: int = 2, steps: int = 3,
                         engine=ZeroStage12Rank):
    model = worker.make_model(torch.float32)
    params = list(model.parameters())
    ranks = [engine(torch_class(name)(groups(params), **hyper(name)), rank, world_size, offload)
             for rank in range(world_size)]
    for step in range(steps):
        for p in params:
            p.grad = None
        loss_on(model, step).backward()
        for rank in ranks:
            rank.step()
        ZeroStage12Rank.all_gather(ranks)
    return [p.detach().clone() for p in params], ranks


def one_group(params):
    return params


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "no_offload"])
@pytest.mark.parametrize("name", ELEMENT_WISE)
def test_deepspeed_zero_partitions_step_as_the_params(name, offload):
    """Bit for bit: an element-wise rule does not care which tensor an element is in."""
    expected = train_per_param(name, one_group)
    got, ranks = train_deepspeed_zero(name, one_group, offload)
    assert all(torch.equal(a, b) for a, b in zip(got, expected)), max_difference(got, expected)
    assert max_difference(got, [p.detach() for p in worker.make_model(torch.float32).parameters()]) > 0
    for rank in ranks:
        [partition] = rank.partitions
        assert rank.optimizer.param_groups[0]["params"] == [partition]
        assert set(rank.optimizer.state) == {partition}  # state for the flat partition only
        # DeepSpeed narrows the state tensors of the partition's shape once, after the first step,
        # and reads them later through those views: they must still be the live state.
        linked, live = rank.linked_state[0], rank.optimizer.state[partition]
        for key, value in linked.items():
            assert value.dim() == 0 or value.shape == partition.shape, key
            if value.dim():
                assert value.data_ptr() == live[key].data_ptr(), key


@pytest.mark.parametrize("name", ["adamw", "lion", "momentum"])
def test_deepspeed_zero_steps_one_param_group_at_a_time(name):
    """DeepSpeed's _optimizer_step shows the optimizer one group at a time: each group's state must
    survive the steps of the others."""
    expected = train_per_param(name, worker.decay_groups)
    got, ranks = train_deepspeed_zero(name, worker.decay_groups, offload=True)
    assert all(torch.equal(a, b) for a, b in zip(got, expected)), max_difference(got, expected)
    for rank in ranks:  # the views DeepSpeed took after the first step are still the live state
        for partition, linked in zip(rank.partitions, rank.linked_state):
            live = rank.optimizer.state[partition]
            for key, value in linked.items():
                if value.dim():
                    assert value.data_ptr() == live[key].data_ptr(), key


@pytest.mark.parametrize("groups", [one_group, worker.decay_groups],
                         ids=["one_group", "decay_groups"])
@pytest.mark.parametrize("name", ["adamw", "lion"])
def test_deepspeed_zero3_steps_each_sub_group_alone(name, groups):
    expected = train_per_param(name, groups)
    got, ranks = train_deepspeed_zero(name, groups, engine=ZeroStage3Rank)
    assert all(torch.equal(a, b) for a, b in zip(got, expected)), max_difference(got, expected)
    for rank in ranks:
        state = rank.state_dict()
        assert sorted(state["state"]) == list(range(len(rank.partitions)))
        assert all(float(entry["step"]) == 3 for entry in state["state"].values())
        assert all(group["params"] == [] for group in rank.optimizer.param_groups)


def test_the_per_tensor_optimizers_are_these():
    assert PER_TENSOR == ["adafactor", "adam_mini", "adamp", "adamuon", "came", "dadapt_adam", "dadapt_sgd", "dog",
                          "fromage", "kron", "lamb", "lars", "lbfgs", "mars", "mars_lion", "mars_shampoo", "momo",
                          "muon", "noisy_sgd", "normuon", "novograd", "polyak_sgd", "prodigy", "rowwise_adagrad",
                          "shampoo", "sm3", "soap", "stableadamw"]
    assert all(torch_class(name).per_tensor for name in PER_TENSOR)
    assert not any(torch_class(name).per_tensor for name in ELEMENT_WISE)


@pytest.mark.parametrize("name", PER_TENSOR)
def test_per_tensor_optimizers_refuse_flat_partitions_and_change_nothing(name):
    """After a step on the params, DeepSpeed's replacement of the groups by a flat partition: the
    step raises a ValueError that says why, and neither params, partition nor state change; with
    the params given back, the optimizer goes on as if the attempt had not happened."""
    def weights(model):
        return [p for p in model.parameters() if p.dim() == 2]  # (Muon steps matrices)

    def step(opt, model, batch):  # (LBFGS takes a closure: the same gradient, evaluated as often as it needs)
        def closure():
            opt.zero_grad()
            loss = loss_on(model, batch)
            loss.backward()
            return loss
        if opt.numpy_class.step_requires_closure or opt.numpy_class.step_requires_loss:
            return opt.step(closure)
        closure()
        return opt.step()

    def same(a, b):  # (LBFGS's state has lists of tensors and numbers)
        if isinstance(b, list):
            return isinstance(a, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        return a is None and b is None or torch.equal(torch.as_tensor(a), torch.as_tensor(b))

    model, twin = worker.make_model(torch.float32), worker.make_model(torch.float32)
    optimizer, twin_optimizer = torch_class(name)(weights(model)), torch_class(name)(weights(twin))
    for m, opt in ((model, optimizer), (twin, twin_optimizer)):
        step(opt, m, 0)
    params_before = [p.detach().clone() for p in weights(model)]
    state_before = copy.deepcopy(optimizer.state_dict())

    original = optimizer.param_groups[0]["params"]
    partition = _flatten_dense_tensors([p.detach() for p in original]).clone().float()
    partition.requires_grad = True
    partition.grad = torch.ones_like(partition)
    partition_before = partition.detach().clone()
    optimizer.param_groups[0]["params"] = [partition]
    with pytest.raises(ValueError, match=rf"{RECORDS[name]['class_name']}: param_groups\[0\]\['params'\]\[0\] was "
                                         rf"not given to the optimizer .*DeepSpeed ZeRO.*{name}.*element-wise"):
        needs_closure = optimizer.numpy_class.step_requires_closure or optimizer.numpy_class.step_requires_loss
        optimizer.step(lambda: loss_on(model, 1)) if needs_closure else optimizer.step()
    assert torch.equal(partition, partition_before)
    assert all(torch.equal(a, b) for a, b in zip(weights(model), params_before))
    optimizer.param_groups[0]["params"] = original
    state_after = optimizer.state_dict()
    assert state_after["state"].keys() == state_before["state"].keys()
    for index, entry in state_before["state"].items():
        for key, value in entry.items():
            assert same(state_after["state"][index][key], value), key

    for m, opt in ((model, optimizer), (twin, twin_optimizer)):
        step(opt, m, 1)
    assert all(torch.equal(a, b) for a, b in zip(weights(model), weights(twin)))


# ----- docs/torch.md ----------------------------------------------------------------------------------
def docs() -> str:
    if not DOCS.exists():
        pytest.skip("needs the source tree")
    return DOCS.read_text(encoding="utf-8")


def code_blocks(language: str) -> list[str]:
    return markdown.code_blocks(docs(), language)


def block_containing(language: str, needle: str) -> str:
    return markdown.block_containing(docs(), language, needle, "docs/torch.md")


def test_docs_table_lists_exactly_the_per_tensor_optimizers():
    section = docs().split("## Per-element and per-tensor optimizers", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    in_table = sorted(re.match(r"\| `(\w+)`", row).group(1) for row in rows)
    assert in_table == sorted(RECORDS[name]["class_name"] for name in PER_TENSOR)
    listed = re.search(r"Per-element \(safe on flat partitions\): (.*?)\.\n", section, flags=re.S)
    assert listed, "docs/torch.md no longer lists the per-element optimizers"
    assert sorted(re.findall(r"`(\w+)`", listed.group(1))) == sorted(RECORDS[n]["class_name"] for n in ELEMENT_WISE)


def test_docs_deepspeed_config_has_the_keys_deepspeed_reads():
    """Key names as in DeepSpeed's deepspeed/runtime/constants.py (ZERO_FORCE_DS_CPU_OPTIMIZER,
    ZERO_ALLOW_UNTESTED_OPTIMIZER) and zero/config.py, offload_config.py."""
    config = json.loads(block_containing("json", "zero_optimization"))
    assert config["zero_optimization"]["stage"] == 2
    assert config["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert config["zero_force_ds_cpu_optimizer"] is False
    assert config["zero_allow_untested_optimizer"] is True
    snippet = block_containing("python", "deepspeed.initialize")
    compile(snippet, "docs/torch.md", "exec")  # (running it needs DeepSpeed and an accelerator)
    assert "optimizer=optimizer" in snippet and "pyopt.torch.AdamW(" in snippet


def python_blocks_to_exec() -> list[str]:
    return [b for b in code_blocks("python") if "deepspeed" not in b and "init_process_group" not in b]


def test_docs_python_snippets_run(tmp_path, monkeypatch, capsys):
    blocks = python_blocks_to_exec()
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "docs/torch.md", "exec"), {"__name__": "__docs__"})
    printed = capsys.readouterr().out
    assert "AdamW: param_groups[0]['params'][0] is not contiguous (strides (1, 4))" in printed  # the refusal shown


def test_docs_torchrun_commands_run(tmp_path):
    """The DDP / ZeRO script, run by the commands shown (torchrun, 2 processes, gloo)."""
    script = block_containing("python", "init_process_group")
    name = re.search(r"^# (\w+\.py)", script, flags=re.M).group(1)
    (tmp_path / name).write_text(script, encoding="utf-8")
    commands = [line for line in block_containing("bash", "torchrun").splitlines() if line.startswith("torchrun")]
    assert len(commands) == 2
    torchrun = [sys.executable, "-m", "torch.distributed.run"]
    for command in commands:
        args = command.split()[1:]
        port = free_port()
        [result] = run_ranks([torchrun + [f"--master-port={port}"] + args], tmp_path)
        assert result.returncode == 0, f"{command}:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        losses = re.findall(r"rank \d loss ([0-9.]+) -> ([0-9.]+)", result.stdout)  # (the ranks' lines interleave)
        assert len(losses) == 2 and all(float(last) < float(first) / 10 for first, last in losses), result.stdout
    state = torch.load(tmp_path / "optimizer.pt", weights_only=True)
    assert len(state["state"]) == 2 and all(float(e["step"]) > 0 for e in state["state"].values())
