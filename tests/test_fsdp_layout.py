"""Under FSDP each rank's parameters are flat 1-D shards by the time configure_optimizers runs:
the weight-decay groups and μP's roles must be read from the shapes as built
(trainlab.optim.roles.remember_layout, called from `setup` before the strategy wraps).

Lightning refuses FSDP on a CPU, so this wraps with torch's own FSDP over two gloo processes,
as Lightning's FSDPStrategy does (auto-wrapped blocks, use_orig_params=True): slow. (Muon,
which needs whole matrices, is refused under FSDP before anything is built.)"""

from __future__ import annotations

import functools
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from trainlab.models.gpt import GPT, Block
from trainlab.optim import build_optimizer
from trainlab.optim.roles import remember_layout

pytestmark = pytest.mark.slow

FACTORIES = {
    "adamw": functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.1),
    "sgd": functools.partial(torch.optim.SGD, lr=0.1, weight_decay=1e-4),
    "adam": functools.partial(torch.optim.Adam, lr=1e-3, weight_decay=1e-4),
}


class Holder(nn.Module):
    """What a LightningModule is to the optimizer builder: a module with a `net`."""

    def __init__(self, parametrization: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = GPT(
            vocab_size=64, block_size=8, n_layer=2, n_head=2, n_embd=64,
            parametrization=parametrization, base_width=16,
        )  # fmt: skip


def groups_of(optimizer, names: dict[int, str]) -> dict[str, tuple]:
    """{parameter name: (group name, lr, weight decay)}"""
    return {
        names[id(p)]: (g.get("name"), g["lr"], g["weight_decay"])
        for g in optimizer.param_groups
        for p in g["params"]
    }


def unwrapped(module: nn.Module) -> dict[int, str]:
    strip = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")
    names = {}
    for name, p in module.named_parameters():
        for segment in strip:
            name = name.replace(segment, "")
        names[id(p)] = name
    return names


def work(rank: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    results = {}
    for parametrization in ("sp", "mup"):
        for key, factory in FACTORIES.items():
            plain = Holder(parametrization)
            expected = groups_of(build_optimizer(plain, factory, "auto"), unwrapped(plain))
            holder = Holder(parametrization)
            remember_layout(holder)  # what ConfiguredOptimizers.setup does
            FSDP(
                holder,
                auto_wrap_policy=ModuleWrapPolicy({Block}),
                device_id=torch.device("cpu"),
                use_orig_params=True,
            )
            flat = [n for n, p in holder.named_parameters() if p.ndim < 2]
            got = groups_of(build_optimizer(holder, factory, "auto"), unwrapped(holder))
            results[f"{parametrization}/{key}"] = (expected, got, len(flat))
    if rank == 0:
        queue.put(results)
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fsdp_shards_get_the_groups_and_mup_multipliers_of_the_network_as_built():
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    mp.start_processes(work, args=(free_port(), queue), nprocs=2, start_method="spawn")
    results = queue.get()
    assert set(results) == {f"{p}/{k}" for p in ("sp", "mup") for k in FACTORIES}
    for case, (expected, got, flat) in results.items():
        assert flat == len(got), f"{case}: FSDP did not flatten every parameter"
        assert got == expected, case
    # the decay groups hold the matrices, and μP divided the hidden lr by m = 4
    adamw = results["mup/adamw"][0]
    assert adamw["net.blocks.0.attn.qkv.weight"] == ("decay.hidden", pytest.approx(1e-3 / 4), 0.1)
    assert adamw["net.blocks.0.ln_1.weight"][:2] == ("no_decay.output+input+vector", 1e-3)
    assert results["sp/adamw"][0]["net.blocks.1.mlp.fc.weight"][0] == "decay"
