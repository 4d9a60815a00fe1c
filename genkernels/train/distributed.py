"""torchrun support: process group, DDP wrapping and the split of each global batch.

Launch with `torchrun --nproc_per_node K -m genkernels train ...`. When WORLD_SIZE > 1 the
trainer joins the process group (NCCL on CUDA, gloo on CPU), wraps the loss computation in
DistributedDataParallel and gives rank r the r-th contiguous slice of every global batch; all
ranks draw the same global batch from the same seeded order. Gradients are averaged across
ranks, so K ranks with batch_size/K items each take the same steps as one process with the full
batch (up to float summation order). Only rank 0 logs, shows progress and writes files.
Without a launcher everything runs in one process and nothing here touches torch.distributed.

Strategy "fsdp" (`shard`-ed model, FSDP2 `torch.distributed.fsdp.fully_shard`): instead of DDP,
every FSDP unit (the modules a model lists in an `fsdp_units()` method; by default each child of
its top-level nn.ModuleLists, i.e. the transformer blocks) and then the loss module as the root
(all remaining parameters: embeddings, final norm, head) is sharded over a 1-D device mesh of all
ranks. Each rank keeps 1/K of every parameter, gradient and AdamW moment (DTensors sharded on
dim 0); a unit's parameters are all-gathered for its forward/backward and freed afterwards, and
gradients are reduce-scattered (averaged), so the steps equal one process with the whole batch
up to float summation order. A unit's parameters must only be used inside its own forward; the
root's (e.g. a tied embedding used as the output head) may be used anywhere in `loss`.
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


def fsdp_units(model: nn.Module) -> list[nn.Module]:
    """The modules sharded one by one: `model.fsdp_units()` when the model defines it, else every
    child of the model's top-level nn.ModuleLists that holds parameters (repeated blocks)."""
    hook = getattr(model, "fsdp_units", None)
    if callable(hook):
        units = list(hook())
        bad = [u for u in units if not isinstance(u, nn.Module)]
        if bad:
            raise TypeError(f"{type(model).__name__}.fsdp_units() must return modules, got {bad[0]!r:.80}")
        return units
    return [block for child in model.children() if isinstance(child, nn.ModuleList)
            for block in child if any(True for _ in block.parameters())]


def mixed_precision_policy(precision: str):
    """FSDP2 MixedPrecisionPolicy: bf16/fp16 parameters for the forward/backward, gradients
    reduced in fp32; None for fp32 (no casts)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        return None
    return MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)


@torch.no_grad()
def broadcast_module(module: nn.Module, context: DistributedContext) -> None:
    """Give every rank rank 0's parameters and buffers (as DDP does when it wraps a model)."""
    if not context.enabled:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


def fully_shard_model(root: nn.Module, model: nn.Module, context: DistributedContext, device: torch.device,
                      precision: str = "fp32") -> nn.Module:
    """FSDP2: shard each unit of `model` (fsdp_units), then `root` (the module whose forward
    computes the loss, holding `model`) over all ranks; returns `root`. The parameters of `model`
    are DTensors afterwards, so optimizers must be built after this call."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if not context.enabled:
        return root
    mesh = init_device_mesh(device.type, (context.world_size,))
    options: dict[str, Any] = {"mesh": mesh}
    policy = mixed_precision_policy(precision)
    if policy is not None:
        options["mp_policy"] = policy
    for unit in fsdp_units(model):
        fully_shard(unit, **options)
    fully_shard(root, **options)
    return root


def is_sharded(tensor: Any) -> bool:
    """True for a DTensor (an FSDP-sharded parameter, gradient or optimizer moment)."""
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def local_part(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor; any other tensor as it is."""
    return tensor.to_local() if is_sharded(tensor) else tensor


def shard_slices(tensor: torch.Tensor) -> tuple[list[int], list[int]]:
    """(offsets, shape) of this rank's shard of a DTensor within the full tensor; for a plain
    tensor the whole of it (offsets 0)."""
    if not is_sharded(tensor):
        return [0] * tensor.ndim, list(tensor.shape)
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    shape, offsets = compute_local_shape_and_global_offset(tensor.shape, tensor.device_mesh, tensor.placements)
    return list(offsets), list(shape)


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor on every rank (all-gathers a DTensor: call on every rank)."""
    return tensor.full_tensor() if is_sharded(tensor) else tensor


def like(target: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """`full` (a whole tensor) laid out as `target`: for a DTensor target, this rank's slice as a
    DTensor with target's mesh and placements (no communication); else `full` itself."""
    if not is_sharded(target):
        return full
    from torch.distributed.tensor import DTensor

    offsets, shape = shard_slices(target)
    local = full[tuple(slice(o, o + s) for o, s in zip(offsets, shape))]
    local = local.to(device=target.to_local().device, dtype=full.dtype).contiguous()
    return DTensor.from_local(local, target.device_mesh, target.placements, run_check=False,
                              shape=target.shape, stride=target.stride())


@torch.no_grad()
def copy_full_into(target: torch.Tensor, full: torch.Tensor) -> None:
    """target.copy_(full) where target may be a DTensor shard (this rank's slice is copied)."""
    if is_sharded(target):
        if is_sharded(full):
            target.copy_(full)
        else:
            local = like(target, full).to_local()
            target.to_local().copy_(local)
    else:
        target.copy_(full_tensor(full))


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
