"""A frozen backbone's pooled features of uint8 images: what the linear probes read, and what
the train stage checks for collapse."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from protoviz_core.engine.normalization import Normalizer
from protoviz_core.engine.precision import autocast, uses_bfloat16


def extract_features(
    backbone: nn.Module,
    images: np.ndarray,
    normalize: dict,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Backbone features of uint8 images, in eval mode, without gradients.

    Args:
        images: uint8 (N, 3, S, S), e.g. a memory-mapped STL10 split.
        normalize: {"mean": 3 floats, "std": 3 floats} applied to [0, 1] pixels.

    Returns:
        float32 (N, D) on the CPU (D = 512 for ResNet18).
    """
    device = torch.device(device)
    backbone.eval().to(device)
    use_amp = uses_bfloat16(device)
    normalise = Normalizer(normalize, device)
    chunks = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device)
            batch = normalise(batch.float() / 255)
            with autocast(device, use_amp):
                chunks.append(backbone(batch).flatten(start_dim=1).float().cpu())
    return torch.cat(chunks)
