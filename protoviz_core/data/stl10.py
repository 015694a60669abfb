"""The STL10 binary layout: one reader for the real data set and the synthetic one.

Layout (Coates, Ng & Lee 2011; https://cs.stanford.edu/~acoates/stl10/), folder
``stl10_binary/``:

- ``{split}_X.bin``: uint8, images one after another, each 3 x S x S stored channel
  by channel, every channel in column-major order (so a C-ordered reshape to
  (N, 3, S, S) holds each image transposed);
- ``{split}_y.bin``: uint8 labels 1..10, for ``train`` and ``test`` only;
- ``class_names.txt``: one class name per line.

Splits: ``unlabeled`` (100,000 images), ``train`` (5,000), ``test`` (8,000), 96 px.
Images are memory-mapped, so the 2.8 GB unlabeled split costs no RAM until read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from protoviz_core.infra.errors import ProtovizError

SPLITS = ("unlabeled", "train", "test")
LABELLED_SPLITS = ("train", "test")
STL10_IMAGE_SIZE = 96
STL10_SPLIT_SIZES = {"unlabeled": 100_000, "train": 5_000, "test": 8_000}
STL10_URL = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
STL10_CLASS_NAMES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")


class DatasetError(ProtovizError, FileNotFoundError):
    """The data set files are missing or malformed; the message says how to fix it."""


def images_path(root: Path, split: str) -> Path:
    return Path(root) / f"{split}_X.bin"


def labels_path(root: Path, split: str) -> Path:
    return Path(root) / f"{split}_y.bin"


def class_names_path(root: Path) -> Path:
    return Path(root) / "class_names.txt"


def is_real_stl10(root: str | Path) -> bool:
    """Whether the folder says it holds the real STL10: its ``class_names.txt`` lists STL10's ten
    classes (the synthetic set names its own shapes)."""
    path = class_names_path(Path(root))
    return path.is_file() and tuple(path.read_text().split()) == STL10_CLASS_NAMES


def check_real_stl10_sizes(root: str | Path) -> None:
    """Refuse a real STL10 folder whose files are not the published sizes.

    A file cut to a whole number of images would otherwise read as a smaller data set with
    no word (the download is hard-linked into the data stage's output, so truncating the
    user's copy truncates the pipeline's too).

    Raises:
        DatasetError: names the file, its size, the expected size and where to download it.
    """
    root = Path(root)
    image_bytes = 3 * STL10_IMAGE_SIZE**2
    for split, count in STL10_SPLIT_SIZES.items():
        expected = {images_path(root, split): count * image_bytes}
        if split in LABELLED_SPLITS:
            expected[labels_path(root, split)] = count
        for path, size in expected.items():
            if path.is_file() and path.stat().st_size != size:
                raise DatasetError(
                    f"{path}: {path.stat().st_size} bytes, expected {size} (STL10's {split} split holds "
                    f"{count:,} images); the file is truncated or not STL10: download it again from "
                    f"{STL10_URL}, then run dvc repro data"
                )


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def read_images(root: str | Path, split: str, image_size: int = STL10_IMAGE_SIZE) -> np.ndarray:
    """Memory-map the images of one split.

    Returns:
        uint8 array (N, 3, S, S), channel-major, rows first (a view of the file:
        index it, don't copy it whole). Identical to ``torchvision.datasets.STL10.data``.

    Raises:
        DatasetError: the file is missing, its size is not a multiple of one image, or the
            folder is the real STL10 (:func:`is_real_stl10`) and the file is not its published size.
    """
    _check_split(split)
    path = images_path(root, split)
    if not path.is_file():
        raise DatasetError(f"{path}: missing; the data stage writes it (dvc repro data)")
    if is_real_stl10(root):
        check_real_stl10_sizes(root)
    image_bytes = 3 * image_size * image_size
    size = path.stat().st_size
    if size == 0 or size % image_bytes:
        raise DatasetError(
            f"{path}: {size} bytes is not a whole number of {image_size}px images "
            f"({image_bytes} bytes each); is data.image_size right, or the file truncated?"
        )
    flat = np.memmap(path, dtype=np.uint8, mode="r", shape=(size // image_bytes, 3, image_size, image_size))
    return flat.transpose(0, 1, 3, 2)  # stored column-major: swap to (row, column)


def read_labels(root: str | Path, split: str) -> np.ndarray:
    """Labels of ``train`` or ``test`` as int64 (N,), 0-based (the file holds 1..10)."""
    if split not in LABELLED_SPLITS:
        raise ValueError(f"only {LABELLED_SPLITS} have labels, got {split!r}")
    path = labels_path(root, split)
    if not path.is_file():
        raise DatasetError(f"{path}: missing; the data stage writes it (dvc repro data)")
    labels = np.fromfile(path, dtype=np.uint8).astype(np.int64) - 1
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DatasetError(f"{path}: labels must lie in 1..10, found {labels.min() + 1}..{labels.max() + 1}")
    return labels


def read_split(
    root: str | Path, split: str, image_size: int = STL10_IMAGE_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, S, S) uint8 and labels (N,) int64 (0..9, or -1 when unlabeled)."""
    images = read_images(root, split, image_size)
    if split not in LABELLED_SPLITS:
        return images, np.full(len(images), -1, dtype=np.int64)
    labels = read_labels(root, split)
    if len(labels) != len(images):
        raise DatasetError(
            f"{labels_path(root, split)}: {len(labels)} labels for {len(images)} images in "
            f"{images_path(root, split)}; regenerate the split"
        )
    return images, labels


class SplitWriter:
    """Append images (and labels) to one split, in the STL10 byte layout, atomically.

    Use as a context manager; files appear under their final names only when the
    block ends without error, so a killed run never leaves a half-written split.
    """

    def __init__(self, root: str | Path, split: str):
        _check_split(split)
        self.root = Path(root)
        self.split = split
        self._final = [images_path(self.root, split)]
        if split in LABELLED_SPLITS:
            self._final.append(labels_path(self.root, split))
        self._tmp = [p.with_name(p.name + ".tmp") for p in self._final]

    def __enter__(self) -> SplitWriter:
        self.root.mkdir(parents=True, exist_ok=True)
        self._files = [open(p, "wb") for p in self._tmp]
        return self

    def write(self, images: np.ndarray, labels: np.ndarray | None = None) -> None:
        """images: uint8 (n, 3, S, S) rows first; labels: int (n,) 0-based (labelled splits)."""
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (n, 3, S, S), got {images.dtype} {images.shape}")
        self._files[0].write(np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tobytes())
        if self.split in LABELLED_SPLITS:
            if labels is None or len(labels) != len(images):
                raise ValueError(f"split {self.split!r} needs one label per image")
            self._files[1].write((np.asarray(labels) + 1).astype(np.uint8).tobytes())

    def __exit__(self, exc_type, exc, tb) -> None:
        for f in self._files:
            f.close()
        if exc_type is not None:
            for p in self._tmp:
                p.unlink(missing_ok=True)
            return
        for tmp, final in zip(self._tmp, self._final):
            os.replace(tmp, final)
