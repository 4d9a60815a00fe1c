"""torchrun support: process group, DDP wrapping and the split of each global batch.

Launch with `torchrun --nproc_per_node K -m genkernels train ...`. When WORLD_SIZE > 1 the
trainer joins the process group (NCCL on CUDA, gloo on CPU), wraps the loss computation in
DistributedDataParallel and gives rank r the r-th contiguous slice of every global batch; all
ranks draw the same global batch from the same seeded order. Gradients are averaged across
ranks, so K ranks with batch_size/K items each take the same steps as one process with the full
batch (up to float summation order). Only rank 0 logs, shows progress and writes files.
Without a launcher everything runs in one process and nothing here touches torch.distributed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """True under torchrun (or any launcher that sets WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> tuple[DistributedContext, torch.device]:
    """Join the process group when launched; return the context and this rank's device."""
    if not launched():
        return DistributedContext(), device
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                rank=rank, world_size=world_size)
    return DistributedContext(rank, world_size, local_rank), device


def wrap(module: nn.Module, context: DistributedContext, device: torch.device,
         find_unused_parameters: bool = False) -> nn.Module:
    """DistributedDataParallel around `module` when distributed, else `module` itself."""
    if not context.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids,
                                   find_unused_parameters=find_unused_parameters)


def shard(indices: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """This rank's contiguous slice of a global batch (the batch size divides evenly)."""
    if not context.enabled:
        return indices
    per_rank = len(indices) // context.world_size
    return indices[context.rank * per_rank:(context.rank + 1) * per_rank]


def gather_objects(obj: Any, context: DistributedContext) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank (in-memory transport between ranks)."""
    if not context.enabled:
        return [obj]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def all_ranks_agree(flags: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Element-wise minimum of an int tensor of 0/1 flags over ranks (the flags themselves alone)."""
    if not context.enabled:
        return flags
    flags = flags.clone()
    dist.all_reduce(flags, op=dist.ReduceOp.MIN)
    return flags


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (call once at the end of a launched program)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
