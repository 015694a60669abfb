"""How whole layers, and single units, of two networks relate on the same images.

Layers: linear centered kernel alignment (CKA; Kornblith et al., ICML 2019) between two
representations of the same N images, computed from their Gram matrices, so that any two
epochs or runs measured on one image sample compare without keeping their activations. The
HSIC inside it is the unbiased estimator (Song et al., JMLR 2012), as Nguyen, Raghu and
Kornblith (ICLR 2021) use it: with N a few hundred images and a convolution's flattened
width of thousands, the biased estimator puts two *unrelated* representations far above 0
(``tests/measures/test_similarity.py`` measures both), which would read as development that is not there.

Units: the correlation of two units' activations on the same images (Li et al., "Convergent
learning", ICLR 2016): each unit's best match in the other network, and a one-to-one
assignment (the Hungarian method) that maximises the summed correlation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from protoviz_core.engine.normalization import Normalizer
from protoviz_core.engine.units import centre_units, layers_reader
from protoviz_core.infra.checks import DegenerateError
from protoviz_core.infra.hashing import short_hash
from protoviz_core.infra.work import Contents, WorkItem, epoch_file, identity, read_result, without_key
from protoviz_core.measures.exemplars import sample_positions
from protoviz_core.training.checkpoints import checkpoint_identity, load_backbone

SETTLED_CKA = 0.9  # this project's threshold: a layer has settled once its CKA to the final epoch stays above
SIMILARITY_ARTIFACTS = "similarity"  # where the stage logs its files in the MLflow run, for comparisons
SIMILARITY_VERSION = 3  # bump when what a checkpoint's representation file holds changes


def gram(features: torch.Tensor) -> torch.Tensor:
    """features (N, ...) of N images, flattened per image -> float64 (N, N) linear kernel ``X Xᵀ``.

    The product runs on the features' device and dtype (a GPU's float32); only the small
    result is float64.
    """
    flat = features.reshape(len(features), -1)
    return (flat @ flat.T).double()


def _unbiased_hsic(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Song et al.'s unbiased HSIC of two (N, N) kernels, N >= 4 (up to a constant factor that
    cancels in CKA)."""
    n = first.shape[0]
    first = first - torch.diag(torch.diag(first))
    second = second - torch.diag(torch.diag(second))
    first_sums, second_sums = first.sum(dim=0), second.sum(dim=0)
    trace = (first * second).sum()
    return (
        trace
        + first_sums.sum() * second_sums.sum() / ((n - 1) * (n - 2))
        - 2 * (first_sums @ second_sums) / (n - 2)
    )


def cka(first: torch.Tensor, second: torch.Tensor) -> float:
    """Linear CKA of two representations of the same N >= 4 images from their Gram matrices
    (:func:`gram`): 1 for the same representation up to rotation and isotropic scaling, about 0
    for unrelated ones (the unbiased estimator can fall slightly below 0). NaN when a
    representation is constant on the sample (a dead layer).

    Raises:
        ValueError: the kernels are not square, of one size, or of fewer than 4 images.
    """
    shape = tuple(first.shape)
    if shape != tuple(second.shape) or len(shape) != 2 or shape[0] != shape[1] or shape[0] < 4:
        raise ValueError(
            f"cka needs two (N, N) Gram matrices of N >= 4 images, got {shape}, {tuple(second.shape)}"
        )
    first, second = first.double(), second.double()
    self_first, self_second = _unbiased_hsic(first, first), _unbiased_hsic(second, second)
    if self_first <= 0 or self_second <= 0:
        return float("nan")
    return float(_unbiased_hsic(first, second) / torch.sqrt(self_first * self_second))


def unit_correlations(first: torch.Tensor, second: torch.Tensor) -> np.ndarray:
    """Pearson correlation of every unit of ``first`` (N, C1) with every unit of ``second``
    (N, C2), activations on the same N images -> float64 (C1, C2). A unit constant on the
    sample (dead) correlates 0 with everything."""
    a, b = first.double(), second.double()
    a = a - a.mean(dim=0)
    b = b - b.mean(dim=0)
    a_norm, b_norm = a.norm(dim=0), b.norm(dim=0)
    a = torch.where(a_norm > 0, a / a_norm.clamp_min(1e-300), torch.zeros_like(a))
    b = torch.where(b_norm > 0, b / b_norm.clamp_min(1e-300), torch.zeros_like(b))
    return (a.T @ b).numpy()


def best_matches(correlations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row unit's most correlated column unit: (index (C1,), its correlation (C1,))."""
    index = correlations.argmax(axis=1)
    return index, correlations[np.arange(len(index)), index]


def one_to_one(correlations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The one-to-one matching of rows to columns with the largest summed correlation (Hungarian
    method; Li et al. 2016's bipartite matching): (column of each row (C1,), its correlation).
    With C1 > C2, rows left without a column get -1 and NaN."""
    rows, columns = linear_sum_assignment(correlations, maximize=True)
    matched = np.full(correlations.shape[0], -1, dtype=np.int64)
    matched[rows] = columns
    value = np.full(correlations.shape[0], np.nan)
    value[rows] = correlations[rows, columns]
    return matched, value


MATCH_KINDS = ("best", "shown", "one_to_one")  # match_units' kinds of partner


def match_units(
    correlations: np.ndarray,
    assigned: tuple[np.ndarray, np.ndarray],
    mine_channels: Sequence[int],
    shown_channels: Sequence[int],
) -> dict[str, list[list]]:
    """Each of ``mine_channels`` matched to a unit of the other run, three ways, for the atlas.

    Args:
        correlations: (C1, C2) :func:`unit_correlations` of one layer of two runs on the same images.
        assigned: :func:`one_to_one` of ``correlations`` (computed once for both directions of a
            pair: :func:`invert_assignment` gives the other's).
        mine_channels: the rows to match (the extracted units: they have prototypes).
        shown_channels: the columns that have prototypes to show.

    Returns:
        Per kind, one ``[channel, correlation]`` per unit of ``mine_channels`` (correlation
        rounded to 3 places, None where there is no partner): ``best``, the most correlated unit
        of all C2; ``shown``, the most correlated of ``shown_channels``; ``one_to_one``, the
        unit's partner in the Hungarian matching of all C1 to all C2 units (Li et al.'s).
    """
    rows = np.asarray(mine_channels, dtype=np.int64)
    shown = np.asarray(shown_channels, dtype=np.int64)

    def pairs(channels: np.ndarray, values: np.ndarray) -> list[list]:
        return [
            [int(c), round(float(v), 3)] if c >= 0 and np.isfinite(v) else [None, None]
            for c, v in zip(channels, values)
        ]

    best, best_value = best_matches(correlations[rows])
    shown_index, shown_value = best_matches(correlations[np.ix_(rows, shown)])
    partner, partner_value = assigned
    return {
        "best": pairs(best, best_value),
        "shown": pairs(shown[shown_index], shown_value),
        "one_to_one": pairs(partner[rows], partner_value[rows]),
    }


def invert_assignment(matched: np.ndarray, value: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """The column side of a :func:`one_to_one` assignment: (row of each of ``columns`` columns, its
    correlation), -1 and NaN for columns left without a row."""
    rows = np.flatnonzero(matched >= 0)
    inverse = np.full(columns, -1, dtype=np.int64)
    inverse[matched[rows]] = rows
    inverse_value = np.full(columns, np.nan)
    inverse_value[matched[rows]] = value[rows]
    return inverse, inverse_value


def settled_epoch(epochs: list[int], to_final: list[float], threshold: float = SETTLED_CKA) -> int | None:
    """The first epoch from which a layer's CKA to the final epoch stays at or above ``threshold``
    (the final epoch itself when nothing earlier does), or None with no finite values."""
    settled = None
    for epoch, value in zip(epochs, to_final):
        if np.isfinite(value) and value >= threshold:
            settled = epoch if settled is None else settled
        else:
            settled = None
    return settled


def representations(
    model: torch.nn.Module,
    images: np.ndarray,
    layers: Sequence[str],
    *,
    normalize: dict,
    read_unit: str,
    batch_size: int,
    device: torch.device,
) -> dict[str, dict[str, torch.Tensor]]:
    """Each layer's representation of the uint8 (N, 3, S, S) ``images``, in one pass per batch.

    Returns:
        ``{layer: {"gram": float32 (N, N) (:func:`gram` of the whole flattened map, whose product is
        float32 already: kept so, it loses nothing and halves what is kept and logged),
        "units": float32 (N, C) (every channel's unit, at ``read_unit``)}}``.
    """
    model.eval().to(device)
    normalise = Normalizer(normalize, device)
    flat: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    units: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    with torch.no_grad(), layers_reader(model, layers) as read:
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
            for layer, features in read(normalise(batch.to(device).float().div_(255))).items():
                flat[layer].append(features.float().flatten(start_dim=1))
                units[layer].append(centre_units(features, read_unit).float().cpu())
    return {
        layer: {"gram": gram(torch.cat(flat[layer])).float().cpu(), "units": torch.cat(units[layer])}
        for layer in layers
    }


def similarity_work(
    checkpoints: dict[int, Path],
    test_images: np.ndarray,
    layers: Sequence[str],
    *,
    images: int,
    seed: int,
    read_unit: str,
    batch_size: int,
    device: torch.device,
) -> list[WorkItem]:
    """One work item per checkpoint, named ``eXXXX.pt``: :func:`representations` of a fixed
    sample of ``images`` of the held-out ``test_images`` (every checkpoint sees the same ones),
    plus ``"positions"``, int64 (N,), the sample's indices in the split, and ``"sample"``, the
    digest of the sample's pixels (two runs compare only on the same images).

    The identity is the checkpoint's, the sample's (positions and the images' digest), the
    layers, ``read_unit`` and :data:`SIMILARITY_VERSION`.
    """
    positions = sample_positions(len(test_images), images, seed)
    sample = np.ascontiguousarray(test_images[positions])
    sample_key = short_hash(sample.tobytes())
    items = []
    for epoch, path in sorted(checkpoints.items()):

        def compute(path=path) -> Contents:
            backbone, meta = load_backbone(path)
            found = representations(
                backbone,
                sample,
                layers,
                normalize=meta["normalize"],
                read_unit=read_unit,
                batch_size=batch_size,
                device=device,
            )
            for layer, parts in found.items():  # a dead layer (all zero) is a result: its CKA is NaN
                if not torch.isfinite(parts["gram"]).all():
                    raise DegenerateError(f"{path}: the Gram matrix of {layer} holds NaN or infinite values")
            return {"layers": found, "positions": torch.from_numpy(positions), "sample": sample_key}

        key = identity(
            "similarity",
            checkpoint_identity(path),
            sample_key,
            positions.tolist(),
            list(layers),
            read_unit,
            SIMILARITY_VERSION,
        )
        items.append(WorkItem(epoch_file(epoch), key, compute))
    return items


def cka_rows(epochs: Sequence[int], results: Sequence[Contents]) -> list[dict]:
    """Per epoch and layer, the layer's CKA to the same layer at the first and at the last of
    ``epochs`` (``results``: :func:`similarity_work`'s contents, in ``epochs``' order).

    Returns:
        Rows ``{"epoch", "layer", "cka_to_final", "cka_to_initial"}``.
    """
    first, last = results[0]["layers"], results[-1]["layers"]
    rows = []
    for epoch, result in zip(epochs, results):
        for layer, parts in result["layers"].items():
            rows.append(
                {
                    "epoch": epoch,
                    "layer": layer,
                    "cka_to_final": round(cka(parts["gram"], last[layer]["gram"]), 6),
                    "cka_to_initial": round(cka(parts["gram"], first[layer]["gram"]), 6),
                }
            )
    return rows


def between_runs(first: dict[int, Contents], second: dict[int, Contents]) -> list[dict]:
    """Two runs' layers compared at every epoch both have, on the same images.

    Args:
        first, second: ``{epoch: contents}`` of :func:`similarity_work`'s files of two runs.

    Returns:
        Rows ``{"epoch", "layer", "cka", "matched", "best", "matched_chance", "best_chance"}``:
        the layers' linear CKA; the median correlation of the units' one-to-one matching
        (:func:`one_to_one`); the median correlation of each unit of ``first`` with its best match
        in ``second`` (:func:`best_matches`); and the last two again with ``second``'s images
        shuffled (one fixed permutation), the control: what matching finds between unrelated
        units, the largest of many chance correlations (about 0.1-0.2 for 250 images and
        64-512 units). Epochs measured on other images than the other run's are left out.
    """
    rows = []
    for epoch in sorted(set(first) & set(second)):
        a, b = first[epoch], second[epoch]
        if a["sample"] != b["sample"] or not torch.equal(a["positions"], b["positions"]):
            continue
        for layer in sorted(set(a["layers"]) & set(b["layers"])):
            mine, theirs = a["layers"][layer], b["layers"][layer]
            correlations = unit_correlations(mine["units"], theirs["units"])
            shuffle = torch.randperm(len(theirs["units"]), generator=torch.Generator().manual_seed(0))
            chance = unit_correlations(mine["units"], theirs["units"][shuffle])
            rows.append(
                {
                    "epoch": epoch,
                    "layer": layer,
                    "cka": round(cka(mine["gram"], theirs["gram"]), 6),
                    "matched": round(float(np.nanmedian(one_to_one(correlations)[1])), 6),
                    "best": round(float(np.median(best_matches(correlations)[1])), 6),
                    "matched_chance": round(float(np.nanmedian(one_to_one(chance)[1])), 6),
                    "best_chance": round(float(np.median(best_matches(chance)[1])), 6),
                }
            )
    return rows


def read_similarity_files(folder: str | Path) -> dict[int, Contents]:
    """``{epoch: contents}`` of a folder of :func:`similarity_work`'s ``eXXXX.pt`` files, tensors
    memory-mapped (unreadable or foreign files are left out)."""
    found = {}
    for path in sorted(Path(folder).glob("e[0-9][0-9][0-9][0-9].pt")):
        contents = read_result(path, mmap=True)
        if contents is not None and "layers" in contents and "sample" in contents:
            found[int(path.stem[1:])] = without_key(contents)
    return found
