"""Resumable per-checkpoint work: one result file per work item, reused while its identity holds.

The probe, rfmask, extract, embed and distance stages all do the same cycle, and
:func:`run_work` is it:

1. delete the files in the output folder that no planned item will produce (outputs
   are ``persist: true`` in dvc.yaml, so they outlive a change of configuration);
2. reuse every complete result whose stored identity equals its item's ``key``;
3. compute the rest and write each atomically (a killed run leaves whole files only,
   and a rerun redoes only what is missing);
4. report each finished item through a callback and hand back every result in plan order.

A result file is a torch zip file holding a dict: the item's key under ``"key"`` and
the computed contents (tensors, numbers, strings, lists, dicts) beside it. It loads
with ``torch.load(..., weights_only=True)``; prototype shards are such files.

An item's key is :func:`identity` of exactly what changes its result: the inputs'
identities, the settings that shape it and a code version. Devices, batch sizes and
memory budgets change speed, not results, and stay out.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protoviz_core.infra.atomic import load_or_none, remove_leftovers, save_atomic
from protoviz_core.infra.hashing import short_hash

KEY = "key"  # where a result file stores its identity

Contents = dict[str, Any]


def identity(*parts: Any) -> str:
    """A short stable hash of ``parts`` (JSON-able values; others by ``str``): a work item's key."""
    payload = json.dumps(parts, sort_keys=True, default=str)
    return short_hash(payload)


@dataclass(frozen=True)
class WorkItem:
    """One result to make: ``compute()`` returns the contents of the file ``name``."""

    name: str  # file name inside the output folder, e.g. "epoch_0007.pt"
    key: str  # identity() of everything that changes the result
    compute: Callable[[], Contents]  # must not use the name "key"


def read_result(path: str | Path, *, mmap: bool = True) -> Contents | None:
    """A result file's dict (with its ``"key"``), or None when missing, truncated or foreign.

    ``mmap=True`` maps tensors instead of reading them: cheap when only part is used.
    """
    stored = load_or_none(path, mmap=mmap)
    return stored if isinstance(stored, dict) and isinstance(stored.get(KEY), str) else None


def prune(folder: str | Path, keep: Iterable[str], log: Callable[[str], None], pattern: str = "*.pt") -> None:
    """Delete what matches ``pattern`` in ``folder`` (files or folders) and is not named in ``keep``,
    and the temporary files of writes that were killed."""
    keep = set(keep)
    for leftover in remove_leftovers(folder):
        log(f"removing {leftover}: left by a write that was killed")
    for path in sorted(Path(folder).glob(pattern)) if Path(folder).is_dir() else []:
        if path.name in keep or path.name.startswith("."):  # hidden: a tool's, or a write in progress
            continue
        log(f"removing {path}: not part of this configuration")
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def without_key(stored: Contents) -> Contents:
    """A result file's contents without its identity."""
    return {name: value for name, value in stored.items() if name != KEY}


def _complete(folder: Path, items: Sequence[WorkItem]) -> dict[str, Contents]:
    """{name: stored dict} of the items whose file is readable and made by their identity (one read each)."""
    stored = {item.name: read_result(folder / item.name) for item in items}
    return {item.name: stored[item.name] for item in items if (stored[item.name] or {}).get(KEY) == item.key}


def pending(folder: str | Path, items: Sequence[WorkItem]) -> list[WorkItem]:
    """Items whose result file is missing, unreadable or made by another identity."""
    complete = _complete(Path(folder), items)
    return [item for item in items if item.name not in complete]


def epoch_file(epoch: int) -> str:
    """The result file of one epoch in a per-space folder (the embed and distance stages)."""
    return f"e{epoch:04d}.pt"


def compute_here(items: Sequence[WorkItem]) -> Iterator[tuple[WorkItem, Contents]]:
    """Compute items one after the other in this process (the default executor)."""
    for item in items:
        yield item, item.compute()


def run_work(
    items: Sequence[WorkItem],
    folder: str | Path,
    *,
    log: Callable[[str], None] = print,
    on_done: Callable[[WorkItem, bool], None] = lambda item, reused: None,
    executor: Callable[[Sequence[WorkItem]], Iterable[tuple[WorkItem, Contents]]] = compute_here,
    prune_pattern: str = "*.pt",
) -> list[Contents]:
    """Make every item's result in ``folder``, reusing complete ones; their contents in plan order.

    Args:
        items: the plan; names must be unique.
        log: receives one line per deleted file.
        on_done: called with (item, reused) after each item (progress bars).
        executor: computes pending items and yields (item, contents) as each finishes,
            in any order (e.g. Ray tasks); every write happens here, in this process.
        prune_pattern: which files of ``folder`` belong to this work (others are left alone).

    Returns:
        Each item's contents without ``"key"``, memory-mapped from its file.
    """
    folder = Path(folder)
    names = [item.name for item in items]
    if len(set(names)) != len(names):
        raise ValueError("work items must have unique names")
    prune(folder, names, log, prune_pattern)
    folder.mkdir(parents=True, exist_ok=True)
    results = _complete(folder, items)
    for item in items:
        if item.name in results:
            on_done(item, True)
    for item, contents in executor([item for item in items if item.name not in results]):
        if KEY in contents:
            raise ValueError(f"{item.name}: computed contents must not use the name {KEY!r}")
        save_atomic({KEY: item.key, **contents}, folder / item.name)
        del contents  # hand back the file memory-mapped: a paper-scale run does not fit in memory
        results[item.name] = read_result(folder / item.name)
        on_done(item, False)
    missing = [name for name in names if name not in results]
    if missing:
        raise RuntimeError(f"the executor returned no result for {missing[:3]}")
    return [without_key(results[name]) for name in names]
