"""torchrun's environment read once: rank, world size, device; DDP or FSDP2 wrapping; rank-0 printing."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Runtime:
    """Where this process sits: one process, or one rank of a torchrun job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_runtime(device: str | None = None) -> Runtime:
    """Reads torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK) and joins the process group.

    Without torchrun it is one process. The backend is nccl on GPUs and gloo on CPU.
    """
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Runtime(rank, world_size, local_rank, target)


def shutdown(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(value: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """Sum over ranks (a copy; the input is left alone)."""
    value = value.clone()
    if runtime.distributed:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def wrap_model(model: nn.Module, runtime: Runtime, strategy: str) -> nn.Module:
    """DDP or FSDP2 (`fully_shard` on every block, then the root) around the model; as is for one process."""
    if not runtime.distributed or strategy == "none":
        return model
    if strategy == "ddp":
        device_ids = [runtime.local_rank] if runtime.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if strategy == "fsdp":
        from torch.distributed.fsdp import FSDPModule, fully_shard

        from ..model import SageBlock

        if isinstance(model, FSDPModule):  # sharded by an earlier stage already
            return model
        for module in model.modules():
            if isinstance(module, SageBlock):
                fully_shard(module)
        fully_shard(model)
        return model
    raise ValueError(f"unknown distributed strategy {strategy!r}; choose ddp, fsdp or none")
