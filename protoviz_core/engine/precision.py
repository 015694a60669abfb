"""Mixed precision: on a GPU, forward passes run under bfloat16 autocast; on a CPU, in float32.

CPU bfloat16 autocast is slower than float32 on most CPUs and would make CPU results
depend on it, so it is never used there.
"""

from __future__ import annotations

import torch


def uses_bfloat16(device: torch.device, precision: str = "bfloat16") -> bool:
    """Whether work on ``device`` runs under bfloat16 autocast: on CUDA, unless
    ``precision`` is ``float32``."""
    return device.type == "cuda" and precision == "bfloat16"


def autocast(device: torch.device, enabled: bool) -> torch.autocast:
    """bfloat16 autocast on ``device`` when ``enabled`` (see :func:`uses_bfloat16`), else a no-op."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)
