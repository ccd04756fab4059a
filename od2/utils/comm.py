"""torch.distributed helpers for runs under ``torchrun`` (NCCL on GPU, gloo on CPU).

A leaf module: it imports nothing from od2, so every layer may use it. Outside torchrun every helper degrades to
the single-process answer.
"""

from __future__ import annotations

import datetime
import logging
import os
from typing import Any

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

# What torchrun (and any env:// launcher, e.g. a SLURM script) sets for every process; init_process_group's
# env:// rendezvous needs all four.
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def launched_by_launcher() -> bool:
    """Whether this process was started by torchrun or another env:// launcher (all of LAUNCHER_VARIABLES set).

    A variable such as MASTER_ADDR alone (left in a shell profile, or set for another program) is no launch:
    the run stays a single process and one warning names what is missing.
    """
    present = [name for name in LAUNCHER_VARIABLES if name in os.environ]
    if present and len(present) < len(LAUNCHER_VARIABLES):
        missing = [name for name in LAUNCHER_VARIABLES if name not in os.environ]
        logger.warning("%s set but %s not: running as a single process (start with torchrun for several)",
                       ", ".join(present), ", ".join(missing))
    return len(present) == len(LAUNCHER_VARIABLES)


def init_distributed(device: torch.device, timeout_minutes: int = 30) -> torch.device:
    """Join the process group torchrun describes (if any) and return this process's device.

    ``device`` is the configured device; under torchrun each CUDA process takes GPU ``LOCAL_RANK``, otherwise
    ``cuda:N`` keeps its index.
    """
    launched_by_torchrun = launched_by_launcher()
    device_type = device.type
    if device_type == "cuda":
        index = int(os.environ.get("LOCAL_RANK", "0")) if launched_by_torchrun else (device.index or 0)
        torch.cuda.set_device(index)
        device = torch.device("cuda", index)
    if launched_by_torchrun and not is_distributed():  # even for one process, so DDP/NCCL paths are the same
        backend = "nccl" if device_type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device_type == "cuda" else {}
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes), **kwargs)
    return device


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (picklable objects; used to gather detections for evaluation)."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def reduce_mean(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """Average scalar tensors over ranks (one collective for the whole dict) and return floats."""
    names = sorted(values)
    stacked = torch.stack([values[n].detach().float() for n in names])
    if is_distributed():
        dist.all_reduce(stacked)
        stacked /= get_world_size()
    return dict(zip(names, stacked.tolist()))


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()
