"""Input normalisation: the ImageNet statistics every network here was trained with.

Defined once: the SimCLR backbones (lightly normalises with the same values), the
ImageNet networks prototypes are embedded in, and the default of ``Procedure.normalize``.
"""

from __future__ import annotations

import torch

IMAGENET_NORMALIZE = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


class Normalizer:
    """``(images - mean) / std`` per colour channel, with the statistics placed on ``device`` once
    (a loop that normalises every batch copies nothing to the GPU).

    Args:
        normalize: {"mean": 3 floats, "std": 3 floats}.
    """

    def __init__(self, normalize: dict = IMAGENET_NORMALIZE, device: torch.device | str = "cpu"):
        self.mean = torch.tensor(normalize["mean"], device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(normalize["std"], device=device).view(1, 3, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S) in [0, 1], on the device -> (B, 3, S, S) normalised."""
        return (images - self.mean) / self.std


def normalize_images(images: torch.Tensor, normalize: dict = IMAGENET_NORMALIZE) -> torch.Tensor:
    """images (B, 3, S, S) in [0, 1] -> (B, 3, S, S) normalised (:class:`Normalizer`, for one batch)."""
    return Normalizer(normalize, images.device)(images)
