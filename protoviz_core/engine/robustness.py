"""Transformation robustness: each gradient step scores a randomly moved copy of every image.

An image that drives a unit only at one exact pixel alignment is an adversarial pattern,
not a feature (Olah et al. 2017, "Feature Visualization"; Lucid's and Lucent's
``standard_transforms``: pad 12, jitter 8, scale 0.9-1.1, rotate +-10 degrees, jitter 4 at
224 px). MACO (Fel et al. 2023) scores random crops with a little added noise for the same
reason. :class:`Robustness` does both in one batched affine warp per image: a shift, a
scale and a rotation drawn per image, the border filled with mid-grey (Lucid's constant
pad of 0.5), then Gaussian pixel noise.

Every draw comes from the image's own stream key and the step (:mod:`protoviz_core.engine.rng`),
so a channel's transformations, and therefore its prototype, do not depend on which other
channels share its batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from protoviz_core.engine.rng import keyed_normal, keyed_uniform


@dataclass(frozen=True)
class Robustness:
    """A random affine warp and pixel noise per image and step.

    Attributes:
        shift: largest shift along each axis, as a fraction of the image side (uniform).
        scale: (low, high) zoom factor (uniform).
        rotate: largest rotation in degrees (uniform, either way).
        noise: standard deviation of the Gaussian noise added to [0, 1] pixels.
    """

    shift: float = 0.06  # Lucid's jitter 8 + 4 px at 224 px is 0.054
    scale: tuple[float, float] = (0.9, 1.1)
    rotate: float = 10.0
    noise: float = 0.02

    def __call__(self, images: torch.Tensor, keys: torch.Tensor, step: int) -> torch.Tensor:
        """images (B, 3, S, S) in [0, 1], keys int64 (B,) stream keys -> (B, 3, S, S) moved copies,
        differentiable with respect to ``images``."""
        draws = keyed_uniform(keys, step, 4).to(images.device)  # (B, 4) in (0, 1)
        shift = (2 * draws[:, :2] - 1) * (2 * self.shift)  # affine_grid's units: the side is 2
        low, high = self.scale
        zoom = low + (high - low) * draws[:, 2]
        angle = (2 * draws[:, 3] - 1) * math.radians(self.rotate)
        # The grid samples the source at theta @ (x, y, 1): dividing by the zoom enlarges the content.
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            [torch.stack([cos, -sin, shift[:, 0]], dim=1), torch.stack([sin, cos, shift[:, 1]], dim=1)], dim=1
        )  # (B, 2, 3)
        grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
        moved = (
            F.grid_sample(images - 0.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            + 0.5
        )
        if self.noise > 0:
            moved = moved + self.noise * keyed_normal(keys, step, tuple(images.shape[1:])).to(images)
        return moved
