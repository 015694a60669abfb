"""Choosing the compute device from a param value, one GPU per process on multi-GPU machines.

``dvc queue start -j N`` runs N experiments at once in one environment, so they all
see every GPU. With ``device: auto`` (or ``cuda``) each stage process claims the
first GPU no other protoviz process holds, by an exclusive lock on
``<repository>/.dvc/tmp/gpu-locks/<index>.lock`` that it keeps until it exits; with
more processes than GPUs the extra ones wait for a GPU to come free. That holds for a
single GPU too: each stage sizes its passes to the free memory it sees when it starts,
so two stages sharing one GPU could each take most of it. A device named in params
(``cuda:1``) is used as given, without a claim, and Ray tasks see only the GPU Ray
assigned them.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

import torch

from protoviz_core.infra.errors import ProtovizError

_CLAIMED: list[IO] = []  # lock files held for this process's lifetime


class DeviceError(ProtovizError, RuntimeError):
    """The requested device is not available."""


def gpu_lock_dir() -> Path:
    """Where GPU claims live: shared by the workspace and queued experiments (DVC_ROOT)."""
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()) / ".dvc" / "tmp" / "gpu-locks"


def claim_slot(lock_dir: str | Path, count: int) -> tuple[int, IO]:
    """The first of ``count`` slots no other process holds, and its open, locked file.

    When every slot is held, waits for the slot ``pid % count``. The claim ends when
    the returned file is closed or the process exits (the OS drops the lock).
    """
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    for slot in range(count):
        handle = open(lock_dir / f"{slot}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return slot, handle
        except BlockingIOError:
            handle.close()
    slot = os.getpid() % count
    handle = open(lock_dir / f"{slot}.lock", "w")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return slot, handle


def visible_device() -> torch.device:
    """The device a worker was given, claiming nothing: inside a Ray task only the GPU Ray
    assigned it is visible (as ``cuda:0``); with none, the CPU."""
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str) -> torch.device:
    """``auto`` -> a claimed GPU when there is one, else CPU; ``cuda`` claims a GPU and
    ``cuda:N`` names one; either without that GPU is an error."""
    chosen = torch.device(device if device != "auto" else "cpu")
    if chosen.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (chosen.index or 0) >= count:
            present = (
                f"this machine has cuda:0 to cuda:{count - 1}" if count else "no CUDA device is available"
            )
            raise DeviceError(f"device is {device!r} but {present}; use 'auto' or 'cpu'")
    if chosen.index is not None or device == "cpu":
        return chosen
    if not torch.cuda.is_available():
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if not _CLAIMED:
        slot, handle = claim_slot(gpu_lock_dir(), count)
        _CLAIMED.append(handle)
        torch.cuda.set_device(slot)
    return torch.device("cuda", torch.cuda.current_device())
