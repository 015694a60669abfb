"""An offline, STL10-like data set where shape carries the class and colour does not.

Ten classes differ by shape or texture (stripes, checkerboard, rings, disc, ...);
every image gets its own random two-colour palette. Colour therefore identifies an
image but says nothing about its class: a SimCLR network trained without colour
jitter can match two views by palette alone and learns weaker shape features —
the paper's clrjit-vs-keepclr effect (Sec. 2.2) in miniature.

The set is a pure function of (seed, sizes, image size) and is written in the exact
STL10 binary layout (:mod:`protoviz_core.stl10`), so the real reader runs on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from protoviz_core.stl10 import SplitWriter

CLASS_NAMES = (
    "horizontal_stripes",
    "vertical_stripes",
    "diagonal_stripes",
    "checkerboard",
    "rings",
    "disc",
    "square",
    "triangle",
    "cross",
    "dots",
)
_SPLIT_STREAM = {"unlabeled": 0, "train": 1, "test": 2}  # independent RNG stream per split
_CHUNK = 1024  # images generated and written at a time: bounds memory at any size


def _smooth_step(signed_distance: np.ndarray, width: float) -> np.ndarray:
    """0 outside, 1 inside, a soft (anti-aliased) edge of ``width`` around 0."""
    return np.clip(0.5 + signed_distance / width, 0.0, 1.0)


def _class_masks(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Foreground masks (n, S, S) in [0, 1], one pattern per class, randomly placed.

    Position, scale, spatial frequency and a small tilt vary per image so that a
    class is a family of images, not one picture.
    """
    n = len(labels)
    axis = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    y, x = np.meshgrid(axis, axis, indexing="ij")  # (S, S) each, y down, x right
    y, x = y[None], x[None]  # (1, S, S)

    def per_image(low: float, high: float) -> np.ndarray:
        return rng.uniform(low, high, size=(n, 1, 1)).astype(np.float32)

    centre_y, centre_x = per_image(-0.3, 0.3), per_image(-0.3, 0.3)
    radius = per_image(0.35, 0.65)
    frequency = per_image(3.0, 6.0)  # stripe periods across the image
    phase = per_image(0.0, 2 * np.pi)
    tilt = per_image(-0.15, 0.15)  # radians
    edge = 4.0 / size  # about two pixels of soft edge
    dy, dx = y - centre_y, x - centre_x
    ty = np.cos(tilt) * y + np.sin(tilt) * x  # tilted coordinates for the textures
    tx = np.cos(tilt) * x - np.sin(tilt) * y
    diagonal_sign = np.where(rng.random((n, 1, 1)) < 0.5, -1.0, 1.0).astype(np.float32)
    wave = lambda u: np.sin(np.pi * frequency * u + phase)  # noqa: E731

    patterns: dict[int, Callable[[], np.ndarray]] = {
        0: lambda: _smooth_step(wave(ty), 0.3),
        1: lambda: _smooth_step(wave(tx), 0.3),
        2: lambda: _smooth_step(wave((tx + diagonal_sign * ty) / np.sqrt(2)), 0.3),
        3: lambda: _smooth_step(wave(tx) * np.sin(np.pi * frequency * ty), 0.1),
        4: lambda: _smooth_step(np.sin(np.pi * frequency * np.hypot(dy, dx) + phase), 0.3),
        5: lambda: _smooth_step(radius - np.hypot(dy, dx), edge),
        6: lambda: _smooth_step(radius * 0.85 - np.maximum(abs(dy), abs(dx)), edge),
        # upward triangle: below the apex lines and above the base
        7: lambda: _smooth_step(
            np.minimum(radius * 0.6 - dy, (dy + radius) * 0.5 - abs(dx)), edge
        ),
        8: lambda: _smooth_step(
            np.maximum(radius * 0.3 - abs(dy), radius * 0.3 - abs(dx))
            * (np.maximum(abs(dy), abs(dx)) < radius),
            edge,
        ),
        9: lambda: _smooth_step(
            0.6 - np.hypot(np.sin(np.pi * frequency * ty / 2), np.sin(np.pi * frequency * tx / 2)),
            0.2,
        ),
    }
    masks = np.empty((n, size, size), dtype=np.float32)
    for label, pattern in patterns.items():
        chosen = labels == label
        if chosen.any():
            masks[chosen] = np.broadcast_to(pattern(), (n, size, size))[chosen]
    return masks


def _random_palettes(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Foreground and background RGB colours (n, 3) in [0, 1] that stay distinguishable."""
    foreground = rng.random((n, 3), dtype=np.float32)
    background = rng.random((n, 3), dtype=np.float32)
    # Push pairs with too little contrast apart so that the shape stays visible.
    gap = background - foreground
    too_close = np.linalg.norm(gap, axis=1) < 0.45
    direction = np.where(foreground[too_close] < 0.5, 1.0, -1.0)
    foreground[too_close] = np.clip(foreground[too_close] + 0.5 * direction, 0, 1)
    return foreground, background


def generate_images(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Images for the given labels.

    Args:
        labels: int (n,) in 0..9.
        size: side S in pixels.
        rng: the generator every random choice is drawn from.

    Returns:
        uint8 (n, 3, S, S), rows first.
    """
    masks = _class_masks(labels, size, rng)[:, None]  # (n, 1, S, S)
    foreground, background = _random_palettes(len(labels), rng)
    images = background[:, :, None, None] * (1 - masks) + foreground[:, :, None, None] * masks
    images += rng.normal(0.0, 0.03, size=images.shape).astype(np.float32)  # sensor noise
    return np.clip(np.rint(images * 255), 0, 255).astype(np.uint8)


def write_synthetic_stl10(
    out_dir: str | Path,
    *,
    image_size: int,
    n_unlabeled: int,
    n_train: int,
    n_test: int,
    seed: int,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Write the synthetic set into ``out_dir`` in the STL10 binary layout.

    Labelled splits are class-balanced (as in STL10); the unlabeled split draws
    classes uniformly. ``progress(n)`` is called after each chunk of n images.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = {"unlabeled": n_unlabeled, "train": n_train, "test": n_test}
    for split, count in sizes.items():
        rng = np.random.default_rng([seed, _SPLIT_STREAM[split]])
        if split == "unlabeled":
            labels = rng.integers(0, len(CLASS_NAMES), size=count)
        else:
            labels = rng.permutation(np.arange(count) % len(CLASS_NAMES))
        with SplitWriter(out_dir, split) as writer:
            for start in range(0, count, _CHUNK):
                chunk = labels[start : start + _CHUNK]
                writer.write(generate_images(chunk, image_size, rng), chunk)
                if progress:
                    progress(len(chunk))
    (out_dir / "class_names.txt").write_text("\n".join(CLASS_NAMES) + "\n")
