"""Distances between prototypes, the three quantities the paper tracks per epoch, and their noise floor.

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
difference), ``cosine`` (1 - cosine similarity; a blank, all-zero vector is at
distance 1 from everything) and, in pixel space on RF-masked prototypes only,
``weighted_mse``: the mask-weighted mean of the squared pixel difference,
``sum(w (a - b)^2) / sum(w)`` with ``w`` the layer's receptive-field mask (for the
rate of change, the mean of the two epochs' masks). The paper's masked MSE,
``mean((w a - w b)^2)``, shrinks with the mask's area: a layer whose mask halves
halves its diversity although its prototypes are as different as before. The
weighted mean divides that out (this project's measure; the paper's is ``mse`` masked).

The noise floor (this project's measure, not the paper's): re-evolution consistency is
what two searches of the same unit differ by, so a diversity or rate of change is
read against it. Each is also given as a ratio to the floor of the same units
(``diversity_to_floor``, ``rate_of_change_to_floor``; the rate's floor is the mean of
its two epochs'), with a 95% bootstrap interval over units (``_low``, ``_high``), as is
the floor itself (``consistency_low``, ``consistency_high``). Units are resampled; the
ratio of a resample is the mean of its units' values over the mean of their floors.
``specificity`` is the inverse of ``diversity_to_floor``: the re-evolution distance over
the between-unit distance (0: every search of a unit finds the same image; 1: two searches
of one unit differ as much as two units do), with the inverted interval.

Every quantity is the mean of per-unit values (a unit's diversity: its mean distance to
the other units), computed in closed form, O(N D), without an N x N matrix: for mse
``sum_j |x_i - x_j|^2 = N |x_i - m|^2 + sum_j |x_j - m|^2`` with m the mean row; for
cosine, with u the unit rows (blank rows 0) and U their sum, a non-blank row's
``sum_j (1 - u_i . u_j) = N - u_i . U``. Sums run in float64 on the CPU (the stage
reads the vectors into host memory: it is memory-bound, and a GPU would add a copy of
every vector for little arithmetic); paired distances in float32, with relative
rounding about 1e-5.
"""

from __future__ import annotations

from pathlib import Path

import torch

from protoviz_core.infra.errors import MissingInputError
from protoviz_core.infra.work import KEY, WorkItem, epoch_file, identity, read_result, without_key

METRICS = ("mse", "cosine", "weighted_mse")
WEIGHTED = "weighted_mse"  # pixel space, RF-masked prototypes only
BOOTSTRAP_DRAWS = 1000  # resamples of the units per interval
INTERVAL = (0.025, 0.975)  # the 95% percentile interval

_TINY = 1e-12  # a norm at or below this is a blank vector


def _paired(x: torch.Tensor, y: torch.Tensor, metric: str) -> torch.Tensor:
    """Distance (N,) between matching rows of x and y (N, D), float32."""
    if metric == "mse":
        return (x - y).square_().mean(dim=-1)
    if metric == "cosine":
        x_norms, y_norms = x.norm(dim=-1), y.norm(dim=-1)
        # 1 - cos as half the squared distance between the unit rows: no cancellation for
        # nearly parallel rows (1 - x.y / |x||y| loses ~1e-7 absolute in float32).
        x_scale = (1 / x_norms.clamp(min=_TINY))[:, None]
        y_scale = (1 / y_norms.clamp(min=_TINY))[:, None]
        half_squared = torch.sub(x * x_scale, y * y_scale).square_().sum(dim=-1) / 2
        both = (x_norms > _TINY) & (y_norms > _TINY)
        return torch.where(both, half_squared, torch.ones_like(half_squared))
    raise ValueError(f"metric must be one of {METRICS[:2]}, got {metric!r}")


def unit_diversity(x: torch.Tensor, metric: str) -> torch.Tensor:
    """Each row's mean distance to the other rows of x (N, D), N >= 2: float64 (N,).

    Their mean is the mean distance over all pairs of different rows (the diversity).
    """
    n = len(x)
    if n < 2:
        raise ValueError("diversity needs at least two prototypes")
    x = x.double()
    if metric == "mse":
        centred_squares = (x - x.mean(dim=0)).square().sum(dim=-1)  # (N,) |x_i - m|^2
        return (n * centred_squares + centred_squares.sum()) / (x.shape[1] * (n - 1))
    if metric == "cosine":
        norms = x.norm(dim=-1)
        present = norms > _TINY
        units = x * torch.where(present, 1 / norms.clamp(min=_TINY), torch.zeros_like(norms))[:, None]
        summed = (n - units @ units.sum(dim=0)) / (n - 1)
        return torch.where(present, summed, torch.ones_like(summed))  # a blank row is at 1 from all
    raise ValueError(f"metric must be one of {METRICS[:2]}, got {metric!r}")


def paired(x: torch.Tensor, y: torch.Tensor, metric: str) -> torch.Tensor:
    """Distance (N,) between row i of x and row i of y, both (N, D)."""
    return _paired(x.float(), y.float(), metric)


def diversity(x: torch.Tensor, metric: str) -> float:
    """Mean distance over all pairs of different rows of x (N, D), N >= 2 (closed form, no N x N matrix)."""
    return float(unit_diversity(x, metric).mean())


def mean_paired(x: torch.Tensor, y: torch.Tensor, metric: str) -> float:
    """Mean over channels of the distance between matching rows: rate of change, consistency."""
    return float(paired(x, y, metric).mean())


def repeat_pairs(repeats: int) -> list[tuple[int, int]]:
    """Every pair (i, j), i < j, of ``repeats`` repeats."""
    return [(i, j) for i in range(repeats) for j in range(i + 1, repeats)]


def unit_consistency(x: torch.Tensor, metric: str) -> torch.Tensor | None:
    """Each unit's distance between its repeats, averaged over every pair of them.

    x (R, C, D) -> float64 (C,); None with fewer than two repeats.
    """
    pairs = repeat_pairs(len(x))
    if not pairs:
        return None
    return sum(paired(x[i], x[j], metric).double() for i, j in pairs) / len(pairs)


def bootstrap_interval(
    values: torch.Tensor, floor: torch.Tensor | None, generator: torch.Generator
) -> tuple[float, float]:
    """95% percentile interval over units of ``mean(values)``, or of ``mean(values) / mean(floor)``
    where a floor (C,) is given: :data:`BOOTSTRAP_DRAWS` resamples of the C units."""
    count = len(values)
    draws = torch.randint(count, (BOOTSTRAP_DRAWS, count), generator=generator)
    statistic = values[draws].mean(dim=1)
    if floor is not None:
        floors = floor[draws].mean(dim=1)
        statistic = (
            statistic[floors > _TINY] / floors[floors > _TINY]
        )  # a resample of 0-floor units has no ratio
    low, high = torch.quantile(statistic, torch.tensor(INTERVAL, dtype=statistic.dtype)).tolist()
    return low, high


def mask_weighted(vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Plain pixel vectors (..., 3*S*S) scaled so that their mse is the ``mask``-weighted mean
    squared difference: each pixel times sqrt(w / mean(w)), w the (S, S) mask on every colour."""
    weights = mask.float().expand(3, *mask.shape).flatten()
    return vectors.float() * (weights / weights.mean()).sqrt()


def _views(space: str, of_layer: dict, after: dict | None) -> list[tuple]:
    """(metric, masked, base metric, vectors (R, C, D), pair for the rate of change or None) per view."""
    views = []
    for masked in (False, True):
        kind = "masked" if masked else "plain"
        current = of_layer[kind].float()
        following = None if after is None else (current, after[kind].float())
        views += [(metric, masked, metric, current, following) for metric in METRICS[:2]]
    if space == "pixel" and "mask" in of_layer:
        following = None
        if after is not None:  # both epochs weighted alike: the mean of their masks
            mean_mask = (of_layer["mask"].float() + after["mask"].float()) / 2
            following = (
                mask_weighted(of_layer["plain"], mean_mask),
                mask_weighted(after["plain"], mean_mask),
            )
        views.append((WEIGHTED, True, "mse", mask_weighted(of_layer["plain"], of_layer["mask"]), following))
    return views


def _view_values(current, following, metric: str, generator: torch.Generator) -> dict[str, float]:
    """Every quantity of one view of one layer and epoch, with the noise floor's ratios and intervals."""
    repeats = len(current)
    diversities = sum(unit_diversity(current[r], metric) for r in range(repeats)) / repeats
    values = {"diversity": float(diversities.mean())}
    floor = unit_consistency(current, metric)
    if floor is not None:
        values["consistency"] = float(floor.mean())
        values["consistency_low"], values["consistency_high"] = bootstrap_interval(floor, None, generator)
    # A floor of 0 (repeats that are the same images) has no ratios: nothing to read against.
    floored = floor is not None and values["consistency"] > _TINY
    if floored:
        values["diversity_to_floor"] = values["diversity"] / values["consistency"]
        interval = bootstrap_interval(diversities, floor, generator)
        values["diversity_to_floor_low"], values["diversity_to_floor_high"] = interval
        if values["diversity"] > _TINY and min(interval) > _TINY:
            # Specificity: how much of the between-unit distance one search's noise already is.
            values["specificity"] = values["consistency"] / values["diversity"]
            values["specificity_low"], values["specificity_high"] = 1 / interval[1], 1 / interval[0]
    if following is not None:
        before, after = following
        changes = sum(paired(before[r], after[r], metric).double() for r in range(repeats)) / repeats
        values["rate_of_change"] = float(changes.mean())
        both = (
            None
            if floor is None
            else (unit_consistency(before, metric) + unit_consistency(after, metric)) / 2
        )
        if both is not None and float(both.mean()) > _TINY:  # the same units' floor, at both ends of the step
            values["rate_of_change_to_floor"] = values["rate_of_change"] / float(both.mean())
            interval = bootstrap_interval(changes, both, generator)
            values["rate_of_change_to_floor_low"], values["rate_of_change_to_floor_high"] = interval
    return values


def epoch_rows(space: str, epoch: int, vectors: dict, following: dict | None) -> list[dict]:
    """The tidy rows of one epoch in one space, from
    :func:`~protoviz_core.measures.embedding.embed_epoch` output.

    Args:
        vectors: {layer: {"channels": (C,), "repeats": (R,), "plain": (R, C, D), "masked": (R, C, D),
            "mask": (S, S) the RF mask applied (pixel space's weighted_mse needs it)}}.
        following: the same for the next extracted epoch, or None for the last one.

    Returns:
        Rows (space, metric, masked, layer, epoch, quantity, value) for each quantity in
        :data:`~protoviz_core.pipeline.metric_keys.QUANTITIES` (consistency only with two or more
        repeats, rate of change only with a following epoch) and each noise-floor measure of
        :data:`~protoviz_core.pipeline.metric_keys.FLOOR_QUANTITIES`, every metric, masked and not.
        Bootstrap draws are seeded by the epoch: the same inputs give the same rows.

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
        for metric, masked, base, current, pair in _views(space, of_layer, after):
            generator = torch.Generator().manual_seed(epoch)
            values = _view_values(current, pair, base, generator)
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
DISTANCE_VERSION = 5  # 4: weighted_mse, the noise floor and its ratios, float64 sums; 5: specificity


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
