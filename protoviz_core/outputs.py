"""Writing outputs atomically, and the small ones DVC shows (metrics, plot tables)."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Mapping

import torch


_UMASK = os.umask(0)
os.umask(_UMASK)  # reading the umask means setting it; put it back at once


@contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it over ``path`` when the block ends.

    A reader, or a run killed half-way, never sees a partly written file; on an
    error the temporary file is removed and ``path`` keeps its old content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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


def remove_unplanned(folder: str | Path, planned: Iterable[str], log: Callable[[str], None],
                     pattern: str = "*.pt") -> None:
    """Delete files in ``folder`` matching ``pattern`` whose names are not in ``planned``.

    Outputs declared ``persist: true`` outlive a change of configuration (fewer epochs,
    other layers, a DVC experiment started from another run's outputs); a stage calls
    this so that what it leaves behind is exactly what this configuration made.
    """
    keep = set(planned)
    for path in sorted(Path(folder).glob(pattern)) if Path(folder).is_dir() else []:
        if path.name not in keep:
            log(f"removing {path}: not part of this configuration")
            path.unlink()


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` through :func:`atomic_write`: all or nothing."""
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def save_image(image, path: str | Path, **options) -> Path:
    """Save a PIL image atomically; JPEG for a ``.jpg`` path, else PNG. ``options`` go to Pillow."""
    path = Path(path)
    with atomic_write(path, "wb") as f:
        image.save(f, format="JPEG" if path.suffix == ".jpg" else "PNG", **options)
    return path


def write_json(path: str | Path, values: Mapping[str, Any]) -> None:
    """A DVC metrics file: ``dvc metrics show`` reads it."""
    with atomic_write(path) as f:
        f.write(json.dumps(values, indent=2, sort_keys=True) + "\n")


def write_csv(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """A DVC plots table with a header row taken from the first row's keys."""
    rows = list(rows)
    if not rows:
        raise ValueError(f"{path}: no rows to write")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(path) as f:
        f.write(buffer.getvalue())


def read_cached(path: str | Path) -> tuple[str, Any]:
    """(key, value) of a file written by :func:`cached`.

    Raises:
        FileNotFoundError / RuntimeError: missing or unreadable file.
    """
    stored = torch.load(path, map_location="cpu", weights_only=True)
    return stored["key"], stored["value"]


def cached(path: str | Path, key: str, compute: Callable[[], Any]) -> Any:
    """``compute()``'s result, stored at ``path`` under ``key`` and reused while the key matches.

    The file is written atomically, so a run killed mid-way leaves either the old
    result or the new one; an unreadable file is recomputed. The value must be
    loadable with ``torch.load(weights_only=True)`` (tensors, numbers, strings,
    lists, dicts).
    """
    path = Path(path)
    if path.is_file():
        try:
            stored_key, value = read_cached(path)
            if stored_key == key:
                return value
        except Exception:
            pass  # truncated or foreign: compute it again
    value = compute()
    save_atomic({"key": key, "value": value}, path)
    return value
