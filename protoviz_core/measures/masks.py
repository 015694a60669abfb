"""The rfmask stage's files, read back: which receptive-field mask serves which epoch.

The rfmask stage writes one result file per measured checkpoint
(``epoch_XXXX.pt``, see :mod:`protoviz_core.infra.work`) holding, per layer, the fitted
Gaussian mask (S, S) in [0, 1]. It may measure only every k-th checkpoint
(``rfmask.every``); an epoch without its own file uses the nearest earlier one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from protoviz_core.infra.errors import ProtovizError
from protoviz_core.infra.hashing import short_hash
from protoviz_core.infra.work import read_result, without_key


class MaskError(ProtovizError, ValueError):
    """Masks are missing, unreadable, or lack a layer; the message says which and the fix."""


@dataclass(frozen=True)
class MaskSet:
    masks: dict[int, dict[str, torch.Tensor]]  # {epoch: {layer: (S, S) mask}}

    def source_epoch(self, epoch: int) -> int:
        """The measured epoch that serves ``epoch``: itself, the nearest earlier one, else the first."""
        if not self.masks:
            raise MaskError("no receptive-field masks; run the rfmask stage (dvc repro rfmask)")
        earlier = [e for e in self.masks if e <= epoch]
        return max(earlier) if earlier else min(self.masks)

    def for_epoch(self, epoch: int, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """{layer: (S, S) mask} for ``epoch``.

        Raises:
            MaskError: no masks at all, or a layer the rfmask stage did not measure.
        """
        chosen = self.source_epoch(epoch)
        missing = sorted(set(layers) - set(self.masks[chosen]))
        if missing:
            raise MaskError(
                f"rfmask has no mask for layers {missing}; add them to rfmask.layers and rerun dvc repro"
            )
        return {layer: self.masks[chosen][layer] for layer in layers}


def load_masks(folder: str | Path) -> MaskSet:
    """Every mask of the rfmask stage's output ``folder``.

    Raises:
        MaskError: a file there is unreadable (rerun the rfmask stage).
    """
    masks = {}
    for path in sorted(Path(folder).glob("epoch_*.pt")):
        stored = read_result(path, mmap=False)
        if stored is None:
            raise MaskError(f"{path}: unreadable receptive-field file; delete it and rerun dvc repro rfmask")
        masks[int(path.stem.split("_")[1])] = {
            layer: field["mask"] for layer, field in without_key(stored).items()
        }
    return MaskSet(masks)


def mask_digest(masks: dict[str, torch.Tensor]) -> str:
    """A hash of the masks' values, by layer: part of the identity of results made with them."""
    return short_hash(
        *(
            chunk
            for layer in sorted(masks)
            for chunk in (layer, masks[layer].float().contiguous().numpy().tobytes())
        )
    )
