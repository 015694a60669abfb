"""Natural exemplars: the images of the data set that drive each unit hardest.

Beside every feature visualisation, OpenAI Microscope and Lucid show "dataset
examples": the images of the data that activate the unit most. They show what the
unit responds to in the data, and they are the yardstick of a prototype: an
activation-maximising image should drive its unit at least as hard as the best
natural image does (:func:`protoviz_core.prototypes.superstimulus.superstimulus_ratio`).

For each checkpoint one forward pass over a fixed sample of the data set (the same
images for every checkpoint: :func:`sample_positions`) reads every channel of every
extracted layer at its centre unit (:func:`~protoviz_core.engine.units.centre_units`: the
unit a prototype maximises, after the layer's ReLU, in float32) and keeps each unit's
``top_k`` images, as positions in the pool (:class:`Pool`) with their activations.
Positions are enough: the images are the data set's, read back when shown.

One result file per checkpoint (:func:`exemplar_work`, a :mod:`protoviz_core.infra.work` item)::

    e0005.pt
        key          identity: checkpoint, sample, layers, k, code version
        checkpoint   the checkpoint's identity (the extract stage checks it)
        pool         {"splits": [names], "sizes": [image counts]}: what positions index
        sample       how many images were searched
        layers       {layer: {"activations": float32 (C, k) descending,
                              "positions":   int64 (C, k) pool positions of those images}}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from protoviz_core.data.stl10 import read_images
from protoviz_core.engine.normalization import Normalizer
from protoviz_core.engine.units import centre_units, layers_reader
from protoviz_core.infra.checks import require_informative
from protoviz_core.infra.errors import MissingInputError
from protoviz_core.infra.work import WorkItem, epoch_file, identity, read_result
from protoviz_core.training.checkpoints import checkpoint_identity, load_backbone

# Bump when a change alters which exemplars are found for the same checkpoint and sample.
EXEMPLARS_VERSION = 1
_RERUN = "run dvc repro exemplars (it writes one file per extracted checkpoint)"


class ExemplarsError(MissingInputError):
    """An exemplar file is missing, damaged or from another checkpoint; names it and the fix."""


@dataclass(frozen=True)
class Pool:
    """The images exemplars are drawn from: ``splits`` of an ``stl10_binary`` folder, one after another.

    A *position* p indexes the concatenation: the first split's images, then the next's.
    """

    root: Path
    splits: tuple[str, ...]
    image_size: int

    def split_images(self) -> list[np.ndarray]:
        """Each split's images, uint8 (N_s, 3, S, S), memory-mapped."""
        return [read_images(self.root, split, self.image_size) for split in self.splits]

    def sizes(self) -> list[int]:
        return [len(images) for images in self.split_images()]

    def locate(self, positions: np.ndarray) -> list[tuple[str, int]]:
        """(split, index within the split) of each pool position."""
        bounds = np.cumsum([0, *self.sizes()])
        which = np.searchsorted(bounds, positions, side="right") - 1
        return [(self.splits[s], int(p - bounds[s])) for s, p in zip(which, positions)]

    def images(self, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        """uint8 (n, 3, S, S): the images at ``positions``, in that order."""
        per_split = self.split_images()
        bounds = np.cumsum([0, *[len(images) for images in per_split]])
        positions = np.asarray(positions, dtype=np.int64)
        if len(positions) and (positions.min() < 0 or positions.max() >= bounds[-1]):
            raise ExemplarsError(
                f"{self.root}: pool position out of range 0..{bounds[-1] - 1} "
                f"(the data set changed since the exemplars were found?); {_RERUN}"
            )
        out = np.empty((len(positions), 3, self.image_size, self.image_size), dtype=np.uint8)
        which = np.searchsorted(bounds, positions, side="right") - 1
        for split, images in enumerate(per_split):
            chosen = np.flatnonzero(which == split)
            if len(chosen):
                out[chosen] = images[positions[chosen] - bounds[split]]
        return out


def sample_positions(pool_size: int, count: int | None, seed: int) -> np.ndarray:
    """``count`` distinct pool positions drawn with ``seed`` (all when None or
    ``count >= pool_size``), sorted."""
    if count is None or count >= pool_size:
        return np.arange(pool_size, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(pool_size, size=count, replace=False)).astype(np.int64)


def top_exemplars(
    model: nn.Module,
    layers: Sequence[str],
    pool: Pool,
    positions: np.ndarray,
    *,
    normalize: dict,
    top_k: int,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    read_unit: str = "top_left",
) -> dict[str, dict[str, torch.Tensor]]:
    """Each unit's ``top_k`` images among ``positions``, one forward pass for all layers.

    Args:
        model: the backbone (run in eval mode, float32, without gradients).
        layers: layers whose every channel is read at its centre unit (``read_unit``:
            :func:`~protoviz_core.engine.units.centre_window`).
        pool, positions: the images, uint8, normalised with ``normalize`` like in training.

    Returns:
        ``{layer: {"activations": float32 (C, k), "positions": int64 (C, k)}}`` on the CPU,
        best first; k = min(top_k, len(positions)).
    """
    device = torch.device(device)
    model.eval().to(device)
    normalise = Normalizer(normalize, device)
    best: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    with torch.no_grad(), layers_reader(model, layers) as read:
        for start in range(0, len(positions), batch_size):
            chosen = positions[start : start + batch_size]
            batch = torch.from_numpy(pool.images(chosen)).to(device).float().div_(255)
            units = {
                layer: centre_units(features, read_unit).float().T
                for layer, features in read(normalise(batch)).items()
            }
            where = torch.as_tensor(chosen, device=device)
            for layer, values in units.items():  # values (C, B)
                candidates = where.expand_as(values)
                if layer in best:
                    values = torch.cat([best[layer][0], values], dim=1)
                    candidates = torch.cat([best[layer][1], candidates], dim=1)
                top, index = values.topk(min(top_k, values.shape[1]), dim=1)
                best[layer] = (top, candidates.gather(1, index))
    return {layer: {"activations": top.cpu(), "positions": at.cpu()} for layer, (top, at) in best.items()}


def exemplar_work(
    checkpoints: dict[int, Path],
    pool: Pool,
    positions: np.ndarray,
    layers: Sequence[str],
    *,
    top_k: int,
    batch_size: int,
    device: torch.device,
    read_unit: str = "top_left",
) -> list[WorkItem]:
    """One work item per checkpoint, named ``e{epoch:04d}.pt``: its exemplar file (module docstring).

    The identity is the checkpoint's, the pool's splits and sizes, the sampled
    positions, the layers and ``top_k``: a new sample or data set redoes every file,
    a batch size or device none.
    """
    sizes = pool.sizes()
    sample = identity(positions.tolist())
    items = []
    for epoch, path in checkpoints.items():
        made_from = checkpoint_identity(path)

        def compute(path=path, epoch=epoch, made_from=made_from) -> dict:
            backbone, meta = load_backbone(path)
            found = top_exemplars(
                backbone,
                layers,
                pool,
                positions,
                normalize=meta["normalize"],
                top_k=top_k,
                batch_size=batch_size,
                device=device,
                read_unit=read_unit,
            )
            for layer, record in found.items():
                require_informative(
                    record["activations"],
                    f"exemplar activations of epoch {epoch}, {layer}",
                    items_must_differ=False,
                )
            return {
                "checkpoint": made_from,
                "pool": {"splits": list(pool.splits), "sizes": sizes},
                "sample": len(positions),
                "layers": found,
            }

        unit = None if read_unit == "top_left" else read_unit  # top_left: the identity it had before
        key = identity(
            "exemplars",
            made_from,
            list(pool.splits),
            sizes,
            sample,
            list(layers),
            top_k,
            unit,
            EXEMPLARS_VERSION,
        )
        items.append(WorkItem(epoch_file(epoch), key, compute))
    return items


def read_exemplar_files(folder: str | Path, epochs: Sequence[int]) -> dict[int, dict]:
    """``{epoch: exemplar file contents}`` (with the file's ``"key"``) for ``epochs``.

    Raises:
        ExemplarsError: a file is missing or unreadable.
    """
    found = {}
    for epoch in epochs:
        file = Path(folder) / epoch_file(epoch)
        stored = read_result(file)
        if stored is None or "layers" not in stored:
            raise ExemplarsError(f"{file}: missing or unreadable; {_RERUN}")
        found[epoch] = stored
    return found


def read_exemplars(folder: str | Path, checkpoints: dict[int, Path]) -> dict[int, dict]:
    """:func:`read_exemplar_files` for every epoch of ``checkpoints``, each checked to be of that checkpoint.

    Raises:
        ExemplarsError: a file is missing, unreadable or was found on another checkpoint.
    """
    found = read_exemplar_files(folder, list(checkpoints))
    for epoch, path in checkpoints.items():
        if found[epoch].get("checkpoint") != checkpoint_identity(path):
            raise ExemplarsError(
                f"{Path(folder) / epoch_file(epoch)}: found on another checkpoint than {path}; {_RERUN}"
            )
    return found


@dataclass(frozen=True)
class ExemplarSet:
    """A run's exemplar files (``{epoch: contents}``, :func:`read_exemplar_files`) and the pool they index."""

    by_epoch: dict[int, dict]
    pool: Pool

    @classmethod
    def open(
        cls, folder: str | Path, data: str | Path, image_size: int, epochs: Sequence[int]
    ) -> ExemplarSet:
        """The exemplar files of ``epochs`` in ``folder``, over the data set in ``data``
        (``stl10_binary``)."""
        files = read_exemplar_files(folder, epochs)
        splits = {tuple(contents["pool"]["splits"]) for contents in files.values()}
        if len(splits) != 1:
            raise ExemplarsError(f"{folder}: the files draw from different splits {sorted(splits)}; {_RERUN}")
        pool = Pool(Path(data), splits.pop(), image_size)
        sizes = pool.sizes()
        for epoch, contents in files.items():
            if list(contents["pool"]["sizes"]) != sizes:
                raise ExemplarsError(
                    f"{Path(folder) / epoch_file(epoch)}: found on a data set of "
                    f"{contents['pool']['sizes']} images, {data} holds {sizes}; {_RERUN}"
                )
        return cls(files, pool)

    @property
    def top_k(self) -> int:
        first = next(iter(self.by_epoch.values()))["layers"]
        return int(next(iter(first.values()))["activations"].shape[1])

    @property
    def sample_size(self) -> int:
        return int(next(iter(self.by_epoch.values()))["sample"])

    def top(self, epoch: int, layer: str, channels: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 (N, k) activations and int64 (N, k) pool positions of ``channels``' top
        exemplars at ``epoch``."""
        record = self.by_epoch[epoch]["layers"][layer]
        index = torch.as_tensor(list(channels), dtype=torch.int64)
        return record["activations"][index], record["positions"][index]


def best_natural(exemplars: dict, layer: str, channels: Sequence[int] | np.ndarray) -> np.ndarray:
    """float32 (N,): the highest activation any sampled image gives each of ``channels`` of ``layer``.

    Raises:
        ExemplarsError: the file has no such layer or channel (exemplars of another configuration).
    """
    layers = exemplars["layers"]
    if layer not in layers:
        raise ExemplarsError(f"no exemplars for {layer} (they hold {sorted(layers)}); {_RERUN}")
    top = layers[layer]["activations"][:, 0].numpy()
    channels = np.asarray(channels, dtype=np.int64)
    if len(channels) and channels.max() >= len(top):
        raise ExemplarsError(
            f"no exemplars for channel {int(channels.max())} of {layer} (it has {len(top)}); {_RERUN}"
        )
    return top[channels]
