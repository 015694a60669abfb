"""Backbone checkpoints: one file per epoch, written atomically, loaded without pickle code.

A checkpoint ``epoch_0007.pt`` is a plain dict that ``torch.load(path,
weights_only=True)`` accepts::

    format        "protoviz.checkpoint/1"
    arch          "resnet18"
    epoch         7 (0 = the initialisation, before any training)
    loss          mean training loss of that epoch (None for epoch 0)
    training_hash identity of the training configuration that produced it
    image_size    side of the training views in pixels
    normalize     {"mean": [3 floats], "std": [3 floats]} applied to [0, 1] images
    aug, seed     the run's augmentation condition and seed
    method        the learner (train.method; absent in checkpoints made before it: simclr)
    backbone      the backbone's state_dict
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from protoviz_core.infra.errors import ProtovizError
from protoviz_core.models.backbones import build_backbone
from protoviz_core.pipeline.config import ParamsError

CHECKPOINT_FORMAT = "protoviz.checkpoint/1"
_NAME = re.compile(r"^epoch_(\d{4,})\.pt$")


class CheckpointError(ProtovizError, RuntimeError):
    """A checkpoint is missing, corrupt or from another architecture; names the file."""


def checkpoint_path(directory: str | Path, epoch: int) -> Path:
    return Path(directory) / f"epoch_{epoch:04d}.pt"


def list_checkpoints(directory: str | Path) -> dict[int, Path]:
    """``{epoch: path}`` of the checkpoint files in ``directory``, sorted by epoch."""
    directory = Path(directory)
    if not directory.is_dir():
        return {}
    found = {int(m.group(1)): p for p in directory.iterdir() if (m := _NAME.match(p.name))}
    return dict(sorted(found.items()))


def require_checkpoints(directory: str | Path) -> dict[int, Path]:
    """:func:`list_checkpoints` of one training run, each file holding the epoch its name says.

    Every file's metadata is read (memory-mapped, without the weights): a later stage
    must never measure one epoch's weights under another epoch's name, or mix runs.

    Raises:
        CheckpointError: an empty folder; a file that is unreadable, holds another epoch
            than its name, or comes from another training configuration than the rest.
    """
    found = list_checkpoints(directory)
    if not found:
        raise CheckpointError(
            f"{directory}: no epoch_XXXX.pt checkpoints; run the train stage (dvc repro train)"
        )
    runs = {path: read_checkpoint(path, mmap=True)["training_hash"] for path in found.values()}
    first = runs[found[min(found)]]
    for path, training_hash in runs.items():
        if training_hash != first:
            raise CheckpointError(
                f"{path}: from another training configuration than {found[min(found)].name} "
                f"({training_hash} != {first}); rerun the train stage (dvc repro train), which removes it"
            )
    return found


def choose_epochs(
    available: Sequence[int],
    spec: str | int | list[int],
    key: str = "extract.epochs",
    params_file: str | Path | None = None,
) -> list[int]:
    """The epochs of ``available`` that ``spec`` names: ``"all"``, a stride k (every k-th from
    the first, and the last always), or a list.

    Raises:
        ParamsError: a stride below 1, or a listed epoch not in ``available``; names
            ``key`` (and ``params_file``, when given).
    """
    where = f"{params_file}: {key}" if params_file is not None else key
    if spec == "all":
        return sorted(available)
    if isinstance(spec, int):
        if spec < 1:
            raise ParamsError(f"{where}: a stride must be >= 1, got {spec}")
        if not available:
            return []
        ordered = sorted(available)
        return sorted({e for e in ordered if (e - ordered[0]) % spec == 0} | {ordered[0], ordered[-1]})
    missing = sorted(set(spec) - set(available))
    if missing:
        raise ParamsError(f"{where}: epochs {missing} are not available; available: {sorted(available)}")
    return sorted(set(spec))


def read_checkpoint(path: str | Path, *, mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint dict (weights only: no pickled code runs).

    ``mmap=True`` maps the tensors instead of reading them: cheap when only the
    metadata is needed.

    Raises:
        CheckpointError: missing, unreadable, not a protoviz checkpoint, or named
            ``epoch_NNNN.pt`` while holding another epoch.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; run the train stage (dvc repro train)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CheckpointError(
            f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc}); "
            "delete it and rerun the train stage"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a protoviz checkpoint (expected format {CHECKPOINT_FORMAT})")
    named = _NAME.match(path.name)
    if named and int(named.group(1)) != checkpoint.get("epoch"):
        raise CheckpointError(
            f"{path}: holds epoch {checkpoint.get('epoch')}, not the epoch its name says (a file copied or "
            "renamed over it); rerun the train stage (dvc repro train), which makes it again, or restore it "
            "with `dvc checkout`"
        )
    return checkpoint


def checkpoint_identity(path: str | Path) -> str:
    """What a checkpoint is, for the identity of results made from it: its configuration's
    training hash and its epoch (read memory-mapped, without the weights).

    Raises:
        CheckpointError: as :func:`read_checkpoint`.
    """
    meta = read_checkpoint(path, mmap=True)
    return f"{meta['training_hash']}:{meta['epoch']}"


def load_backbone(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The backbone of a checkpoint, in eval mode on the CPU, and its metadata.

    Returns:
        (backbone, metadata): metadata is the checkpoint without ``backbone``.

    Raises:
        CheckpointError: as :func:`read_checkpoint`, or the weights do not fit the
            architecture the checkpoint names.
    """
    checkpoint = read_checkpoint(path)
    state = checkpoint.pop("backbone")
    try:
        with torch.device("meta"):  # no random initialisation that the checkpoint's weights replace at once
            backbone = build_backbone(checkpoint["arch"])
        backbone.load_state_dict(state, assign=True)
        backbone.to(memory_format=torch.contiguous_format)  # as built, whatever layout the trainer saved
    except (ValueError, RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{path}: weights do not match {checkpoint.get('arch')!r}: {exc}") from None
    return backbone.eval(), checkpoint
