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
difference) and ``cosine`` (1 - cosine similarity; a blank, all-zero vector is at
distance 1 from everything). Computed with torch in float32 wherever the tensors are
(the stage reads them into host memory and runs on the CPU: it is memory-bound, and a
GPU would add a copy of every vector for little arithmetic), in a few passes over the
data: diversity from the per-dimension variance (mse) or the mean unit vector
(cosine), O(N D) without an N x N matrix; paired distances row by row; each row's norm computed once. Values
carry float32 rounding: about 1e-6 absolute for cosine diversity, relative 1e-5 otherwise.
"""

from __future__ import annotations

from pathlib import Path

import torch

from protoviz_core.errors import MissingInputError
from protoviz_core.work import KEY, WorkItem, epoch_file, identity, read_result, without_key

METRICS = ("mse", "cosine")


_TINY = 1e-12  # a norm at or below this is a blank vector


def _paired(
    x: torch.Tensor,
    y: torch.Tensor,
    metric: str,
    x_norms: torch.Tensor | None = None,
    y_norms: torch.Tensor | None = None,
) -> torch.Tensor:
    """Distance (N,) between matching rows of x and y (N, D); cosine may reuse the rows' norms (N,)."""
    if metric == "mse":
        return (x - y).square_().mean(dim=-1)
    if metric == "cosine":
        x_norms = x.norm(dim=-1) if x_norms is None else x_norms
        y_norms = y.norm(dim=-1) if y_norms is None else y_norms
        # 1 - cos as half the squared distance between the unit rows: no cancellation for
        # nearly parallel rows (1 - x.y / |x||y| loses ~1e-7 absolute in float32).
        x_scale = (1 / x_norms.clamp(min=_TINY))[:, None]
        y_scale = (1 / y_norms.clamp(min=_TINY))[:, None]
        half_squared = torch.sub(x * x_scale, y * y_scale).square_().sum(dim=-1) / 2
        both = (x_norms > _TINY) & (y_norms > _TINY)
        return torch.where(both, half_squared, torch.ones_like(half_squared))
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def _diversity(x: torch.Tensor, metric: str, norms: torch.Tensor | None = None) -> float:
    n = len(x)
    if n < 2:
        raise ValueError("diversity needs at least two prototypes")
    if (
        metric == "mse"
    ):  # sum over pairs of squared distances = 2 N S, S = sum_i |x_i - mean|^2 = (N-1) sum_d var_d
        return float(2 * x.var(dim=0).sum(dtype=torch.float64) / x.shape[1])
    if metric == "cosine":  # with u the unit rows (k not blank): 1 - k/N + (k - N |mean u|^2) / (N - 1)
        norms = x.norm(dim=-1) if norms is None else norms
        present = norms > _TINY
        k = int(present.sum())
        weights = torch.where(present, 1 / norms.clamp(min=_TINY), torch.zeros_like(norms)) / n
        mean_unit = weights @ x  # (D,): one matrix-vector product instead of a normalised copy
        spread = k - n * float(mean_unit.double().square().sum())
        return (n - k) / n + max(spread, 0.0) / (n - 1)
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def paired(x: torch.Tensor, y: torch.Tensor, metric: str) -> torch.Tensor:
    """Distance (N,) between row i of x and row i of y, both (N, D)."""
    return _paired(x.float(), y.float(), metric)


def diversity(x: torch.Tensor, metric: str) -> float:
    """Mean distance over all pairs of different rows of x (N, D), N >= 2.

    Without the N x N matrix: for mse the sum over pairs of squared distances is
    ``2 N S`` with ``S = sum_i |x_i - mean|^2``; for cosine, with u the unit rows (k
    of them not blank), the mean distance over pairs is ``1 - k / N + S_u / (N - 1)``
    with ``S_u = k - N |mean u|^2``.
    """
    return _diversity(x.float(), metric)


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
        if after is not None and not (
            torch.equal(of_layer["channels"], after["channels"])
            and torch.equal(of_layer["repeats"], after["repeats"])
        ):
            raise MissingInputError(
                f"{space} {layer}: epoch {epoch} and the next epoch hold different channels or "
                "repeats; rerun dvc repro embed"
            )
        repeats = len(of_layer["repeats"])
        pairs = [(i, j) for i in range(repeats) for j in range(i + 1, repeats)]
        for masked in (False, True):
            kind = "masked" if masked else "plain"
            current = of_layer[kind].float()  # (R, C, D)
            nxt = None if after is None else after[kind].float()
            norms = current.norm(dim=-1)  # (R, C), for every cosine quantity
            next_norms = None if nxt is None else nxt.norm(dim=-1)
            for metric in METRICS:

                def mean_distance(i, y, y_norms):
                    return float(_paired(current[i], y, metric, norms[i], y_norms).mean())

                values = {
                    "diversity": sum(_diversity(current[r], metric, norms[r]) for r in range(repeats))
                    / repeats
                }
                if pairs:
                    values["consistency"] = sum(
                        mean_distance(i, current[j], norms[j]) for i, j in pairs
                    ) / len(pairs)
                if nxt is not None:
                    values["rate_of_change"] = (
                        sum(mean_distance(r, nxt[r], next_norms[r]) for r in range(repeats)) / repeats
                    )
                rows += [
                    {
                        "space": space,
                        "metric": metric,
                        "masked": masked,
                        "layer": layer,
                        "epoch": epoch,
                        "quantity": quantity,
                        "value": value,
                    }
                    for quantity, value in values.items()
                ]
    return rows


# Bump when a change alters the rows for the same embeddings: it keys every result file.
DISTANCE_VERSION = 3  # 3: float32, diversity without an N x N matrix


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
