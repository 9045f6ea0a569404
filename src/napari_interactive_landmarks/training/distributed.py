"""Data-parallel training with the engine PyTorch users already have: ``torchrun --nproc_per_node N``.

``torchrun`` starts N copies of ``napari-landmarks train`` with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set;
:func:`init_from_env` joins them into one process group (NCCL between GPUs, gloo on CPUs). The trainer then
wraps its model in ``DistributedDataParallel``, gives each process its own shard of every global batch, and
lets only rank 0 validate and write metrics, checkpoints and weights; rank 0's decisions (best epoch, early
stopping, time budget) are broadcast so that every process stops together.
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
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """What torchrun told this process (a single process when it was not started by torchrun)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def init_from_env(device_request: str | None = "auto") -> DistInfo:
    """Join the process group torchrun set up (no-op for a single process). GPUs: one per process, by
    ``LOCAL_RANK``, NCCL; otherwise gloo."""
    info = env_info()
    if not info.enabled or dist.is_initialized():
        return info
    want_cuda = str(device_request or "auto").split(":")[0] in ("auto", "cuda") and torch.cuda.is_available()
    if want_cuda:
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend="nccl" if want_cuda else "gloo")
    return info


def current() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_from_main(obj):
    """Rank 0's ``obj`` on every rank (any picklable Python object: built by this program, never read from
    a file)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_over_ranks(values: dict[str, float], device) -> dict[str, float]:
    if not (dist.is_available() and dist.is_initialized()) or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def shutdown() -> None:
    """Leave the process group: every process first waits for the others at a barrier, so that none tears gloo's
    connections down while another is still using them (a rank that did so died with "terminate called without an
    active exception", SIGABRT, on a loaded 2-core machine)."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()
