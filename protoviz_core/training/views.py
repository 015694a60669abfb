"""The augmented views a learner trains on, batched for a DataLoader."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image


class Views(torch.utils.data.Dataset):
    """The augmented views of each image of a uint8 (N, 3, S, S) array (e.g. a memmap), with its label.

    Items are ``([view, ...], label)``: float (3, S', S') normalised views (two for most methods,
    2 global + 6 local for DINO, one for supervision) and the image's class (-1 without labels).
    """

    def __init__(self, images: np.ndarray, transform: Callable, labels: np.ndarray | None = None):
        self.images, self.transform, self.labels = images, transform, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[list[torch.Tensor], int]:
        pixels = np.ascontiguousarray(self.images[index].transpose(1, 2, 0))  # (S, S, 3)
        label = int(self.labels[index]) if self.labels is not None else -1
        return list(self.transform(Image.fromarray(pixels))), label


def stack_views(items: list[tuple[list[torch.Tensor], int]]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """A DataLoader's ``collate_fn`` for :class:`Views`: B items -> ([(B, 3, S', S') per view],
    (B,) labels)."""
    views = [torch.stack([item[0][v] for item in items]) for v in range(len(items[0][0]))]
    return views, torch.tensor([label for _, label in items], dtype=torch.int64)
