"""Process-group set-up for `torchrun` (gloo on CPU, NCCL on GPU) and the device choice."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from optimlab.errors import ConfigError


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_world(device_choice: str) -> World:
    """Join the process group that torchrun's environment describes; a single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return World()
    world = World(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if resolve_device(device_choice, world).type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return world


def resolve_device(choice: str, world: World) -> torch.device:
    if choice == "auto":
        if not torch.cuda.is_available():
            choice = "cpu"
        else:  # one process: the emptiest GPU; under torchrun each rank takes its local_rank's
            choice = f"cuda:{freest_gpu()}" if not world.distributed else "cuda"
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"config key 'train.device': {choice!r} requested but CUDA is not available")
        if choice == "cuda":
            choice = f"cuda:{world.local_rank}"
    elif choice != "cpu":
        raise ConfigError(f"config key 'train.device': expected auto, cpu or cuda[:N], got {choice!r}")
    return torch.device(choice)


def freest_gpu() -> int:
    """The index of the GPU with the most free memory (the first of equals), as the driver reports it now."""
    free = [torch.cuda.mem_get_info(index)[0] for index in range(torch.cuda.device_count())]
    return max(range(len(free)), key=lambda index: (free[index], -index))


def all_reduce_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    if world.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
