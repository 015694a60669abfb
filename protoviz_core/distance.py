"""Distances between prototypes, and the three quantities the paper tracks per epoch.

Paper Sec. 3.3 and 7.2 (Fig. 2, 5, 6, 7), per layer and epoch, in one embedding
space and metric:

- diversity: mean pairwise distance between the prototypes of all channels;
- rate of change: mean over channels of the distance between a channel's prototype
  at epoch e and at the next extracted epoch;
- re-evolution consistency: mean over channels of the distance between two
  independent extractions (repeats) of the same channel, averaged over every pair
  of repeats.

Diversity and rate of change are measured per repeat and averaged over repeats.

Metrics: ``mse`` (squared Euclidean distance / dimension, i.e. the mean squared
difference) and ``cosine`` (1 - cosine similarity). Computed with torch matrix
products, on the GPU when given one.
"""

from __future__ import annotations

from pathlib import Path

import torch

from protoviz_core.errors import MissingInputError
from protoviz_core.work import KEY, WorkItem, epoch_file, identity, read_result, without_key

METRICS = ("mse", "cosine")


def paired(x: torch.Tensor, y: torch.Tensor, metric: str) -> torch.Tensor:
    """Distance (N,) between row i of x and row i of y, both (N, D)."""
    x, y = x.double(), y.double()
    if metric == "mse":
        return (x - y).pow(2).mean(dim=1)
    if metric == "cosine":
        return 1 - torch.nn.functional.cosine_similarity(x, y, dim=1, eps=1e-12)
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def diversity(x: torch.Tensor, metric: str) -> float:
    """Mean distance over all pairs of different rows of x (N, D), N >= 2.

    In closed form, O(N D) instead of the O(N^2 D) distance matrix: for mse the sum
    over pairs of squared distances is ``2 N sum_i |x_i|^2 - 2 |sum_i x_i|^2``; for
    cosine the sum of similarities over pairs is ``|sum_i u_i|^2 - sum_i |u_i|^2``
    with u the unit rows. In float64, so the subtraction loses nothing that matters.
    """
    n = len(x)
    if n < 2:
        raise ValueError("diversity needs at least two prototypes")
    x = x.double()
    pairs = n * (n - 1)
    if metric == "mse":
        total = 2 * n * x.pow(2).sum() - 2 * x.sum(dim=0).pow(2).sum()
        return float(total.clamp(min=0) / (pairs * x.shape[1]))
    if metric == "cosine":
        unit = x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)
        similarity = unit.sum(dim=0).pow(2).sum() - unit.pow(2).sum()
        return float(1 - similarity / pairs)
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def mean_paired(x: torch.Tensor, y: torch.Tensor, metric: str) -> float:
    """Mean over channels of the distance between matching rows: rate of change, consistency."""
    return float(paired(x, y, metric).mean())


def epoch_rows(space: str, epoch: int, vectors: dict, following: dict | None) -> list[dict]:
    """The tidy rows of one epoch in one space, from :func:`~protoviz_core.embedding.embed_epoch` output.

    Args:
        vectors: {layer: {"channels": (C,), "repeats": (R,), "plain": (R, C, D), "masked": (R, C, D)}}.
        following: the same for the next extracted epoch, or None for the last one.

    Returns:
        Rows (space, metric, masked, layer, epoch, quantity, value) for each quantity in
        :data:`~protoviz_core.metric_keys.QUANTITIES` (consistency only with two or more
        repeats, rate of change only with a following epoch), both metrics, masked and not.

    Raises:
        MissingInputError: the following epoch holds other channels or repeats of a layer.
    """
    rows = []
    for layer, of_layer in vectors.items():
        after = None if following is None else following[layer]
        if after is not None and not (torch.equal(of_layer["channels"], after["channels"])
                                      and torch.equal(of_layer["repeats"], after["repeats"])):
            raise MissingInputError(f"{space} {layer}: epoch {epoch} and the next epoch hold different channels or "
                                   "repeats; rerun dvc repro embed")
        repeats = len(of_layer["repeats"])
        pairs = [(i, j) for i in range(repeats) for j in range(i + 1, repeats)]
        for masked in (False, True):
            kind = "masked" if masked else "plain"
            current = of_layer[kind].float()  # (R, C, D)
            for metric in METRICS:
                values = {"diversity": sum(diversity(v, metric) for v in current) / repeats}
                if pairs:
                    values["consistency"] = sum(mean_paired(current[i], current[j], metric) for i, j in pairs) / len(pairs)
                if after is not None:
                    nxt = after[kind].float()
                    values["rate_of_change"] = sum(mean_paired(current[r], nxt[r], metric) for r in range(repeats)) / repeats
                rows += [{"space": space, "metric": metric, "masked": masked, "layer": layer, "epoch": epoch,
                          "quantity": quantity, "value": value} for quantity, value in values.items()]
    return rows


# Bump when a change alters the rows for the same embeddings: it keys every result file.
DISTANCE_VERSION = 2


def distance_work(embeddings: str | Path, space: str, epochs: list[int]) -> list[WorkItem]:
    """One work item per epoch of ``space`` in the embed stage's folder: ``{"rows": epoch_rows(...)}``.

    Its identity is the identities of the epoch's embeddings and of the next epoch's.

    Raises:
        MissingInputError: an epoch's embeddings are missing or unreadable (rerun the embed stage).
    """
    folder = Path(embeddings) / space
    paths = [folder / epoch_file(epoch) for epoch in epochs]
    keys = []
    for path in paths:
        stored = read_result(path)
        if stored is None:
            raise MissingInputError(f"{path}: missing or unreadable embeddings; rerun dvc repro embed")
        keys.append(stored[KEY])
    items = []
    for i, (epoch, path) in enumerate(zip(epochs, paths)):
        following = paths[i + 1] if i + 1 < len(paths) else None

        def compute(epoch=epoch, path=path, following=following) -> dict:
            vectors = without_key(read_result(path))
            after = without_key(read_result(following)) if following else None
            return {"rows": epoch_rows(space, epoch, vectors, after)}

        key = identity("distances", keys[i], keys[i + 1] if following else None, DISTANCE_VERSION)
        items.append(WorkItem(path.name, key, compute))
    return items
