"""An offline, STL10-like data set built so that SimCLR's augmentations leave only the class.

Each image is a scatter of one class's element (disc, ring, square, triangle, plus,
...) on a jittered grid. Everything else that varies between images of a class is
what SimCLR's augmentations already vary between two views of one image:

- position, spacing and size of the elements: random resized crops move and rescale
  them, and almost every crop of 8% of the image or more still holds an element
  (about 96% of 14 px windows at 48 px; some grid cells are left empty), so the
  class survives cropping;
- colour: each image has its own palette (a hue and its complement, with random
  saturation and value), and the hues span 0.4 of the colour wheel, the range of
  the colour jitter's hue shift (+-0.2).

With colour jitter (``aug: clrjit``), two views of one image differ in colour as
much as two images do, so matching views needs the element's shape: the class.
Without it (``keepclr``), the palette alone tells images apart and the network learns
that shortcut instead: the paper's clrjit-vs-keepclr effect (Sec. 2.2) in miniature.
A randomly initialised network reads the class poorly from these images (its
features mix colour with shape), so learning shows in the linear probes.

The set is a pure function of (seed, sizes, image size) and is written in the exact
STL10 binary layout (:mod:`protoviz_core.data.stl10`), so the real reader runs on it.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from protoviz_core.data.stl10 import SplitWriter

CLASS_NAMES = (
    "disc",
    "ring",
    "square",
    "hollow_square",
    "triangle",
    "plus",
    "cross",
    "horizontal_bar",
    "vertical_bar",
    "diamond",
)
_SPLIT_STREAM = {"unlabeled": 0, "train": 1, "test": 2}  # independent RNG stream per split
_CHUNK = 1024  # images generated and written at a time: bounds memory at any size
_HUE_SPAN = 0.4  # palette hues span what the colour jitter's hue shift (+-0.2) covers
# Element spacing in pixels at 48 px (scaled with the image size): 3-5 elements across,
# so a crop of 8% of the image (14 px at 48 px) almost always holds one.
_SPACING_AT_48 = (9.0, 16.0)
_POSITION_JITTER = 0.15  # of the spacing, per element
_DROPOUT = 0.15  # fraction of grid cells left empty, so the grid is not perfect


def _element_distance(label: int, dy: np.ndarray, dx: np.ndarray, radius: float) -> np.ndarray:
    """Signed distance in pixels, positive inside the class's element centred at (0, 0).

    Args:
        dy, dx: (S, S) offsets from the centre of the element of each pixel's own grid
            cell, in pixels (the largest elements, jittered, can reach up to a pixel past
            their cell and are cut flat at its border there).
        radius: the element's half size in pixels.
    """
    r = radius
    ady, adx = np.abs(dy), np.abs(dx)
    round_distance = np.hypot(dy, dx)
    box_distance = np.maximum(ady, adx)
    stroke = 0.28 * r  # half width of the plus's, cross's and bars' strokes
    if label == 0:  # disc
        return r - round_distance
    if label == 1:  # ring
        return 0.25 * r - np.abs(round_distance - 0.7 * r)
    if label == 2:  # square
        return 0.8 * r - box_distance
    if label == 3:  # hollow square
        return 0.2 * r - np.abs(box_distance - 0.7 * r)
    if label == 4:  # triangle, apex up: below both slanted sides and above the base
        return np.minimum(0.6 * r - dy, (dy + r) * 0.5 - adx)
    if label == 5:  # plus
        return np.minimum(np.maximum(stroke - ady, stroke - adx), r - box_distance)
    if label == 6:  # cross (x)
        u, v = np.abs(dx + dy) / np.sqrt(2), np.abs(dx - dy) / np.sqrt(2)
        return np.minimum(np.maximum(stroke - u, stroke - v), r - round_distance)
    if label == 7:  # horizontal bar
        return np.minimum(stroke - ady, r - adx)
    if label == 8:  # vertical bar
        return np.minimum(stroke - adx, r - ady)
    if label == 9:  # diamond
        return 0.95 * r - (ady + adx)
    raise ValueError(f"label {label} is not a class (0..{len(CLASS_NAMES) - 1})")


def _element_mask(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(S, S) foreground in [0, 1]: the class's element on a randomly placed, jittered grid."""
    spacing = rng.uniform(*_SPACING_AT_48) * size / 48.0  # pixels between element centres
    radius = spacing * rng.uniform(0.28, 0.36)
    origin = rng.uniform(0.0, spacing, size=2)  # (y, x) of the grid, so elements sit anywhere
    cells = int(np.ceil(size / spacing)) + 2
    jitter = rng.uniform(-_POSITION_JITTER, _POSITION_JITTER, size=(cells, cells, 2))
    present = rng.random((cells, cells)) >= _DROPOUT
    pixel = np.arange(size) + 0.5
    grid_y, grid_x = (pixel - origin[0]) / spacing, (pixel - origin[1]) / spacing  # (S,) in cells
    cell_y, cell_x = np.floor(grid_y).astype(int), np.floor(grid_x).astype(int)
    rows, cols = cell_y[:, None] + 1, cell_x[None, :] + 1  # +1: the origin shift can reach cell -1
    dy = ((grid_y - cell_y)[:, None] - 0.5 - jitter[rows, cols, 0]) * spacing  # (S, S) pixels
    dx = ((grid_x - cell_x)[None, :] - 0.5 - jitter[rows, cols, 1]) * spacing
    inside = _element_distance(int(label), dy, dx, radius)
    return np.clip(0.5 + inside, 0.0, 1.0) * present[rows, cols]  # one pixel of soft edge


def _palette(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Foreground and background RGB (3,) in [0, 1]: a light hue on its dark complement."""
    hue = rng.uniform(0.0, _HUE_SPAN)
    foreground = colorsys.hsv_to_rgb(hue, rng.uniform(0.4, 0.9), rng.uniform(0.65, 0.95))
    background = colorsys.hsv_to_rgb((hue + 0.5) % 1.0, rng.uniform(0.4, 0.9), rng.uniform(0.2, 0.45))
    return np.array(foreground, np.float32), np.array(background, np.float32)


def generate_images(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Images for the given labels.

    Args:
        labels: int (n,) in 0..9.
        size: side S in pixels.
        rng: the generator every random choice is drawn from.

    Returns:
        uint8 (n, 3, S, S), rows first.
    """
    images = np.empty((len(labels), 3, size, size), dtype=np.float32)
    for i, label in enumerate(labels):
        mask = _element_mask(int(label), size, rng)[None]  # (1, S, S)
        foreground, background = _palette(rng)
        images[i] = background[:, None, None] * (1 - mask) + foreground[:, None, None] * mask
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
