"""Multi-process training through PyTorch's DistributedDataParallel, launched by `torchrun`.

`torchrun --nproc_per_node N -m fpa_export.training.cli ...` (or `torchrun ... $(which fpa-train) ...`) sets RANK,
WORLD_SIZE and LOCAL_RANK; `setup()` then joins the process group (NCCL on CUDA, gloo on CPU). Each rank
draws its own slice of every global batch (`training.data.batches`), gradients are averaged by DDP, and
only rank 0 writes files. Without those variables everything runs in one process, unwrapped.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str) -> DistInfo:
    """Join the torchrun process group if there is one; returns rank, world size and this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return DistInfo(rank=rank, world_size=world_size, device=device)


def wrapper(info: DistInfo):
    """The module wrapper for the Trainer: DDP under torchrun, identity otherwise."""
    if not info.enabled:
        return None

    def wrap(module):
        from torch.nn.parallel import DistributedDataParallel

        ids = [torch.device(info.device).index] if info.device.startswith("cuda") else None
        return DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)
    return wrap


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def teardown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
