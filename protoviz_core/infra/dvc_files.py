"""The small files DVC shows: metrics (``dvc metrics show``) and plot tables (``dvc plots``)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from protoviz_core.infra.atomic import atomic_write


def write_json(path: str | Path, values: Mapping[str, Any]) -> None:
    """A metrics file, written atomically."""
    with atomic_write(path) as f:
        f.write(json.dumps(values, indent=2, sort_keys=True) + "\n")


def write_csv(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """A plot table with a header row taken from the first row's keys, written atomically."""
    rows = list(rows)
    if not rows:
        raise ValueError(f"{path}: no rows to write")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(path) as f:
        f.write(buffer.getvalue())
