"""Input normalisation: the ImageNet statistics every network here was trained with.

Defined once: the SimCLR backbones (lightly normalises with the same values), the
ImageNet networks prototypes are embedded in, and the default of :func:`synthesize`.
"""

from __future__ import annotations

import torch

IMAGENET_NORMALIZE = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def normalize_images(images: torch.Tensor, normalize: dict = IMAGENET_NORMALIZE) -> torch.Tensor:
    """images (B, 3, S, S) in [0, 1] -> (B, 3, S, S) ``(images - mean) / std``, per colour channel.

    Args:
        normalize: {"mean": 3 floats, "std": 3 floats}.
    """
    mean = torch.tensor(normalize["mean"], dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(normalize["std"], dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std
