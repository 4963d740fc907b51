"""Data-parallel plumbing shared by pretraining and fine-tuning under ``torchrun``.

Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) everything degrades to one process and
no collective is called. With it, the process group uses gloo on CPU and nccl on CUDA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class Distributed:
    """This process's place in a data-parallel group (``world_size == 1`` without ``torchrun``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return cls(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))

    # -- collectives (no-ops in a single process) -----------------------------------------------
    def all_reduce_mean(self, values: torch.Tensor) -> torch.Tensor:
        """Mean of ``values`` over the processes (in place on the tensor, also returned)."""
        if self.enabled:
            dist.all_reduce(values)
            values /= self.world_size
        return values

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(values)
        return values

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` of every process, in rank order (every process gets the list)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device: torch.device) -> tuple[Distributed, torch.device]:
    """Join the ``torchrun`` process group when there is one; returns it and this process's device.

    On CUDA each process takes ``cuda:<LOCAL_RANK>``.
    """
    info = Distributed.from_env()
    if info.enabled and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda" and info.enabled:
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    return info, device


def average_gradients(module: torch.nn.Module, group: Distributed) -> None:
    """Average the gradients of ``module`` over the processes in one flat all-reduce.

    Parameters without a gradient on this process count as zero, so processes whose losses touched
    different parameters still agree on the result.
    """
    if not group.enabled:
        return
    params = list(module.parameters())
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    group.all_reduce_mean(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n
