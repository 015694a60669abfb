"""All-or-nothing file writes: a reader, or a run killed half-way, never sees a partial file.

A write goes to ``.<name>.<8 random characters>.tmp`` beside its target and is renamed
over it when complete. A process killed mid-write leaves that temporary file behind;
it is removed by the next write of the same target (and by :func:`remove_leftovers`
for a whole folder), so DVC never tracks it.
"""

from __future__ import annotations

import errno
import io
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import torch

from protoviz_core.infra.errors import ProtovizError

if TYPE_CHECKING:
    from PIL import Image

_UMASK = os.umask(0)
os.umask(_UMASK)  # reading the umask means setting it; put it back at once
_TEMP_SUFFIX = ".tmp"
_LEFTOVER = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")  # mkstemp's 8 characters


def _leftovers(folder: Path, target: str | None = None) -> list[Path]:
    """Temporary files of :func:`atomic_write` in ``folder`` (of one ``target`` name, or any)."""
    if not folder.is_dir():
        return []
    return [
        p
        for p in folder.iterdir()
        if (m := _LEFTOVER.match(p.name)) and p.is_file() and (target is None or m["target"] == target)
    ]


def remove_leftovers(folder: str | Path) -> list[Path]:
    """Delete the temporary files that killed writes left in ``folder`` and below; returns them."""
    folder = Path(folder)
    found = (
        [p for d in [folder, *(p for p in folder.rglob("*") if p.is_dir())] for p in _leftovers(d)]
        if folder.is_dir()
        else []
    )
    for path in found:
        path.unlink(missing_ok=True)
    return found


class OutputError(ProtovizError, OSError):
    """An output cannot be written (permissions, a read-only or full file system); names the path."""


# The environment's refusals, as opposed to a bug: they become one OutputError line.
_REFUSED = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
}


@contextmanager
def _refusals_named(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        # Only refusals of the output itself: a write (no file name) or its folder's files;
        # a file the caller reads inside the block keeps its own error.
        about_output = (
            exc.filename is None
            or Path(exc.filename).parent == path.parent
            or Path(exc.filename) == path.parent
        )
        if exc.errno not in _REFUSED or isinstance(exc, ProtovizError) or not about_output:
            raise
        raise OutputError(
            f"{path}: cannot write it ({_REFUSED[exc.errno]}); make {path.parent} writable or free space "
            "there, then rerun: the previous file is kept and finished work is reused"
        ) from None


@contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it over ``path`` when the block ends.

    On an error the temporary file is removed and ``path`` keeps its old content.
    Temporary files that killed writes of ``path`` left behind are removed first.
    Two processes must not write the same ``path`` at once (none of the stages do).

    Raises:
        OutputError: the file system refuses the write (permissions, read-only, full).
    """
    path = Path(path)
    with _refusals_named(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        for leftover in _leftovers(path.parent, path.name):  # a killed earlier write of this file
            leftover.unlink(missing_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TEMP_SUFFIX, dir=path.parent)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
        try:
            with os.fdopen(handle, mode) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` through :func:`atomic_write`.

    Serialised in memory first: torch's zip writer reports a full disk as a RuntimeError of
    its own, a plain file write as the OSError that :class:`OutputError` names.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_write(path, "wb") as f:
        f.write(buffer.getbuffer())


def load_or_none(path: str | Path, *, mmap: bool = False) -> Any | None:
    """A weights-only torch file's contents (:func:`save_atomic`'s files), or None when it is
    missing, truncated or not a torch file: for caches and resume states, which are remade then.

    ``mmap=True`` maps tensors instead of reading them: cheap when only part is used.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception:  # torch raises several types for missing, truncated or foreign files
        return None


def save_image(image: Image.Image, path: str | Path, **options) -> Path:
    """Save a PIL image atomically; JPEG for a ``.jpg`` path, else PNG. ``options`` go to Pillow."""
    path = Path(path)
    with atomic_write(path, "wb") as f:
        image.save(f, format="JPEG" if path.suffix == ".jpg" else "PNG", **options)
    return path
