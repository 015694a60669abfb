"""Prepare the training data set as an ``stl10_binary`` folder: real STL10 or synthetic.

Either way the result is read by :mod:`protoviz_core.data.stl10`, so every later stage
runs the same code path on the demo and on the paper's data.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from protoviz_core.pipeline.config import DataParams
from protoviz_core.data.stl10 import STL10_URL, DatasetError, check_real_stl10_sizes
from protoviz_core.data.synthetic import write_synthetic_stl10

_STL10_FILES = (
    "unlabeled_X.bin",
    "train_X.bin",
    "train_y.bin",
    "test_X.bin",
    "test_y.bin",
    "class_names.txt",
)


def find_stl10(root: str | Path) -> Path | None:
    """The folder holding the STL10 binary files: ``root/stl10_binary`` or ``root`` itself."""
    root = Path(root).expanduser()
    for candidate in (root / "stl10_binary", root):
        if all((candidate / name).is_file() for name in _STL10_FILES):
            return candidate
    return None


def _download_stl10(root: Path) -> None:
    """Download and extract the archive with torchvision (it checks the md5)."""
    from torchvision.datasets import STL10

    root.mkdir(parents=True, exist_ok=True)
    STL10(str(root), split="train", download=True)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)  # no second copy of 2.6 GB when on the same file system
    except OSError:
        shutil.copy2(source, target)


def prepare_stl10(root: str | Path, out_dir: Path) -> None:
    """Put the real STL10 files in ``out_dir``, downloading them into ``root`` if needed.

    Raises:
        DatasetError: the files are neither under ``root`` nor downloadable, or are
            the wrong size.
    """
    root = Path(root).expanduser()
    source = find_stl10(root)
    if source is None:
        try:
            _download_stl10(root)
        except Exception as exc:
            raise DatasetError(
                f"STL10 not found in {root / 'stl10_binary'} and the download failed "
                f"({type(exc).__name__}: {exc}). Fetch {STL10_URL}, extract it so that "
                f"{root / 'stl10_binary' / 'train_X.bin'} exists, and set data.root to {root}; "
                "or use data.name: synthetic to run offline."
            ) from None
        source = find_stl10(root)
        if source is None:
            raise DatasetError(
                f"{root}: download finished but stl10_binary/ is incomplete; delete it and retry"
            )
    check_real_stl10_sizes(source)
    for name in _STL10_FILES:
        _link_or_copy(source / name, out_dir / name)


def prepare_dataset(
    data: DataParams, out_dir: str | Path, progress: Callable[[int], None] | None = None
) -> None:
    """Write the data set described by ``data`` to ``out_dir`` (STL10 binary layout).

    Everything is written to a temporary sibling folder first and moved into place
    at the end, so a failed or killed run leaves the previous ``out_dir`` intact.
    """
    out_dir = Path(out_dir)
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if data.name == "stl10":
            prepare_stl10(data.root, staging)
        else:
            s = data.synthetic
            write_synthetic_stl10(
                staging,
                image_size=data.image_size,
                n_unlabeled=s.n_unlabeled,
                n_train=s.n_train,
                n_test=s.n_test,
                seed=s.seed,
                progress=progress,
            )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(staging, out_dir)
