"""Choosing the compute device from a param value."""

from __future__ import annotations

import torch


class DeviceError(RuntimeError):
    """The requested device is not available."""


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(device)
