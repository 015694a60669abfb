"""Image grids and thumbnails: many prototypes in one picture."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def grid(images: torch.Tensor, columns: int | None = None, gap: int = 2) -> Image.Image:
    """A grid of uint8 images (N, 3, S, S), row by row, on a white background.

    Args:
        columns: images per row; default about the square root of N.
        gap: white pixels between images.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected (N, 3, S, S) images, got shape {tuple(images.shape)}")
    count, _, height, width = images.shape
    if count == 0:
        raise ValueError("no images to put in a grid")
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    canvas = np.full((rows * (height + gap) - gap, columns * (width + gap) - gap, 3), 255, np.uint8)
    pixels = images.to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (N, S, S, 3)
    for i, image in enumerate(pixels):
        top, left = (i // columns) * (height + gap), (i % columns) * (width + gap)
        canvas[top : top + height, left : left + width] = image
    return Image.fromarray(canvas)


def thumbnails(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, 3, S, S) -> uint8 (N, 3, size, size), antialiased; unchanged when S <= size."""
    if images.shape[-1] <= size:
        return images
    scaled = F.interpolate(
        images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return scaled.round().clamp(0, 255).to(torch.uint8)


SURROUND_BRIGHTNESS = 0.3  # how bright a prototype stays where its unit does not look


def surround_gain(mask: torch.Tensor) -> torch.Tensor:
    """(S, S) RF mask in [0, 1] -> (S, S) brightness factor: 1 where the unit looks,
    ``SURROUND_BRIGHTNESS`` far outside, never 0 (a dimmed surround, not a black square)."""
    return SURROUND_BRIGHTNESS + (1 - SURROUND_BRIGHTNESS) * mask
