"""The data set's magnitude spectrum: the fixed part of the ``maco`` image prior.

MACO (Fel et al. 2023) searches only the Fourier phase of an image; its magnitude is
that of natural images. Here "natural" is the run's own training data: the spectrum is
measured from the split the learner trains on
(:func:`protoviz_core.models.learners.training_split`), a pure function of the data set,
computed once by the spectrum stage and read by every extract shard.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from protoviz_core.infra.atomic import atomic_write
from protoviz_core.infra.checks import require_informative
from protoviz_core.engine.generators import magnitude_spectrum
from protoviz_core.data.stl10 import read_images

SPECTRUM_IMAGES = 10_000  # at most this many images, evenly spaced through the split: the mean has settled
_CHUNK = 1000  # images per FFT batch (memory, not results)


def measure_spectrum(root: str | Path, split: str, image_size: int) -> torch.Tensor:
    """(3, S, S // 2 + 1) :func:`~protoviz_core.engine.generators.magnitude_spectrum` of at most
    :data:`SPECTRUM_IMAGES` images of ``split``, evenly spaced (deterministic)."""
    images = read_images(root, split, image_size)
    chosen = np.unique(
        np.linspace(0, len(images) - 1, min(SPECTRUM_IMAGES, len(images))).round().astype(np.int64)
    )
    total = torch.zeros(3, image_size, image_size // 2 + 1, dtype=torch.float64)
    for start in range(0, len(chosen), _CHUNK):
        batch = torch.from_numpy(np.ascontiguousarray(images[chosen[start : start + _CHUNK]]))
        total += magnitude_spectrum(batch).double() * len(batch)
    magnitude = (total / len(chosen)).float()
    require_informative(magnitude, f"magnitude spectrum of {root} ({split})", items_must_differ=False)
    return magnitude


def save_spectrum(path: str | Path, magnitude: torch.Tensor) -> None:
    """Write ``{"magnitude": (3, S, S // 2 + 1)}`` atomically (read by
    :func:`~protoviz_core.engine.generators.load_magnitude`)."""
    with atomic_write(path, "wb") as f:
        torch.save({"magnitude": magnitude.contiguous()}, f)
