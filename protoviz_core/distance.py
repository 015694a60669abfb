"""Distances between prototypes, and the three quantities the paper tracks per epoch.

Paper Sec. 3.3 and 7.2 (Fig. 2, 5, 6, 7), per layer and epoch, in one embedding
space and metric:

- diversity: mean pairwise distance between the prototypes of all channels;
- rate of change: mean over channels of the distance between a channel's prototype
  at epoch e and at the next extracted epoch;
- re-evolution consistency: mean over channels of the distance between the two
  independent extractions (repeats) of the same channel.

Metrics: ``mse`` (squared Euclidean distance / dimension, i.e. the mean squared
difference) and ``cosine`` (1 - cosine similarity). Computed with torch matrix
products, on the GPU when given one.
"""

from __future__ import annotations

import torch

METRICS = ("mse", "cosine")


def pairwise(x: torch.Tensor, metric: str) -> torch.Tensor:
    """Distance matrix (N, N) between the rows of x (N, D)."""
    x = x.double()
    if metric == "mse":
        squared = (x * x).sum(dim=1)
        gram = x @ x.T
        return (squared[:, None] + squared[None, :] - 2 * gram).clamp(min=0) / x.shape[1]
    if metric == "cosine":
        unit = x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)
        return 1 - unit @ unit.T
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def paired(x: torch.Tensor, y: torch.Tensor, metric: str) -> torch.Tensor:
    """Distance (N,) between row i of x and row i of y, both (N, D)."""
    x, y = x.double(), y.double()
    if metric == "mse":
        return (x - y).pow(2).mean(dim=1)
    if metric == "cosine":
        return 1 - torch.nn.functional.cosine_similarity(x, y, dim=1, eps=1e-12)
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def diversity(x: torch.Tensor, metric: str) -> float:
    """Mean distance over all pairs of different rows of x (N, D), N >= 2."""
    n = len(x)
    if n < 2:
        raise ValueError("diversity needs at least two prototypes")
    matrix = pairwise(x, metric)
    return float((matrix.sum() - matrix.diagonal().sum()) / (n * (n - 1)))


def mean_paired(x: torch.Tensor, y: torch.Tensor, metric: str) -> float:
    """Mean over channels of the distance between matching rows: rate of change, consistency."""
    return float(paired(x, y, metric).mean())


def epoch_rows(space: str, epoch: int, vectors: dict, following: dict | None) -> list[dict]:
    """The tidy rows of one epoch in one space, from :func:`~protoviz_core.embedding.embed_epoch` output.

    Quantities: ``diversity_r<k>`` per repeat and ``diversity`` (their mean),
    ``consistency`` (repeats 1 and 2), ``rate_of_change`` (this epoch to ``following``,
    the next extracted epoch; mean over repeats). Each for both metrics, masked and not.
    """
    groups = sorted({key.rsplit("/", 1)[0] for key in vectors})  # "layer/rK"
    layers = sorted({group.split("/")[0] for group in groups})
    rows = []
    for layer in layers:
        repeats = sorted(group.split("/")[1] for group in groups if group.startswith(f"{layer}/"))
        for masked in (False, True):
            kind = "masked" if masked else "plain"
            current = [vectors[f"{layer}/{r}/{kind}"].float() for r in repeats]
            for metric in METRICS:
                def row(quantity, value):
                    return {"space": space, "metric": metric, "masked": masked, "layer": layer,
                            "epoch": epoch, "quantity": quantity, "value": value}

                per_repeat = [diversity(v, metric) for v in current]
                rows += [row(f"diversity_{r}", d) for r, d in zip(repeats, per_repeat)]
                rows.append(row("diversity", sum(per_repeat) / len(per_repeat)))
                if len(current) >= 2:
                    rows.append(row("consistency", mean_paired(current[0], current[1], metric)))
                if following is not None:
                    changes = []
                    for r, v in zip(repeats, current):
                        if not torch.equal(vectors[f"{layer}/{r}/channels"], following[f"{layer}/{r}/channels"]):
                            raise ValueError(f"{layer} {r}: epochs {epoch} and next hold different channels")
                        changes.append(mean_paired(v, following[f"{layer}/{r}/{kind}"].float(), metric))
                    rows.append(row("rate_of_change", sum(changes) / len(changes)))
    return rows
