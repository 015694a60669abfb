"""Readability: how much a machine observer learns about a unit from its explanations.

A 2-alternative forced choice in the style of Borowski et al. (ICLR 2021) and of the Machine
Interpretability Score (MIS, Zimmermann, Klindt & Brendel, NeurIPS 2024). For a unit, a
task is a pair of query images from a split that neither training's exemplars nor the
search saw (the test split): q+ among the unit's top images there, q- from the bottom
part. The observer is told which explanation images belong to the unit (E+) and which to
the other units of its layer (E-), and picks the query whose similarity to E+, relative
to E-, is larger:

    delta = [s(q+, E+) - s(q+, E-)] - [s(q-, E+) - s(q-, E-)],  correct when delta > 0,

with s the mean cosine similarity of the observer's features. Subtracting the E- terms is
MIS's device (there with minimally activating images) and what puts a control at chance:
with another unit's explanations as E+ (and the rest of the layer as E-), the observer's
choices carry nothing about this unit, and averaged over units the control sits at 0.5
(:func:`control_scores`).

A unit's score is the fraction of its tasks answered correctly (a tie counts half).
Explanations compared: the unit's prototypes, its natural exemplars (the yardstick: people
learn more from exemplars than from feature visualisations), and the control.

Because features are unit-normalised, s(q, E) is q . mean(E): every score is a dot product
with mean explanation vectors, computed for all units at once.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from protoviz_core.engine.normalization import Normalizer
from protoviz_core.engine.units import centre_units, layers_reader
from protoviz_core.infra.checks import require_informative
from protoviz_core.infra.hashing import short_hash
from protoviz_core.infra.work import WorkItem, epoch_file, identity, read_result, without_key
from protoviz_core.measures.masks import MaskSet, mask_digest
from protoviz_core.training.checkpoints import checkpoint_identity, load_backbone

if TYPE_CHECKING:
    from protoviz_core.measures.exemplars import ExemplarSet
    from protoviz_core.pipeline.config import ReadabilityParams
    from protoviz_core.prototypes.store import PrototypeStore


def unit_queries(
    units: torch.Tensor, top: int, bottom_fraction: float, bottom_draws: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each unit's query images among N candidates: its ``top`` best, and ``bottom_draws``
    drawn from its lowest ``bottom_fraction``.

    Args:
        units: (N, C) each unit's activation on each candidate image.
        seed: the draw of the bottom queries (the same ranks for every unit).

    Returns:
        int64 (C, top) and (C, bottom_draws) candidate indices.
    """
    count = units.shape[0]
    order = units.T.argsort(dim=1, descending=True)  # (C, N)
    lowest = max(1, int(bottom_fraction * count))
    ranks = np.random.default_rng(seed).choice(lowest, size=min(bottom_draws, lowest), replace=False)
    return order[:, :top], order[:, count - lowest :][:, torch.from_numpy(ranks)]


def _accuracy(
    top_queries: torch.Tensor, bottom_queries: torch.Tensor, direction: torch.Tensor
) -> torch.Tensor:
    """(C, Q+, D), (C, Q-, D) unit-norm queries and (C, D) ``mean(E+) - mean(E-)`` -> float64 (C,)
    fraction of (q+, q-) pairs with delta > 0 (ties half)."""
    plus = torch.einsum("cqd,cd->cq", top_queries, direction)  # s(q+, E+) - s(q+, E-)
    minus = torch.einsum("cqd,cd->cq", bottom_queries, direction)
    delta = plus[:, :, None] - minus[:, None, :]  # (C, Q+, Q-)
    return ((delta > 0).double() + 0.5 * (delta == 0).double()).mean(dim=(1, 2))


def _unit_norm(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [F.normalize(x.double(), dim=-1) for x in tensors]


def two_afc(
    top_queries: torch.Tensor, bottom_queries: torch.Tensor, explanations: torch.Tensor
) -> torch.Tensor:
    """Each unit's 2-AFC accuracy, every (q+, q-) pair of its queries a task.

    Args:
        top_queries: (C, Q+, D) observer features of each unit's top queries.
        bottom_queries: (C, Q-, D) features of its bottom queries.
        explanations: (C, E, D) features of each unit's explanation images, the E+ of
            unit c; E- of unit c is the explanations of every other unit.

    Returns:
        float64 (C,) fraction of tasks answered correctly (ties count half).
    """
    units = explanations.shape[0]
    if units < 2:
        raise ValueError("the 2-AFC needs at least two units per layer (E- is the other units' explanations)")
    top_queries, bottom_queries, explanations = _unit_norm(top_queries, bottom_queries, explanations)
    means = explanations.mean(dim=1)  # (C, D): s(q, E) = q . mean(E)
    others = (means.sum(dim=0, keepdim=True) - means) / (units - 1)
    return _accuracy(top_queries, bottom_queries, means - others)


def control_scores(
    top_queries: torch.Tensor, bottom_queries: torch.Tensor, explanations: torch.Tensor
) -> torch.Tensor:
    """The control: each unit's queries answered from every other unit's explanations in turn.

    Same arguments as :func:`two_afc`. For unit c and each other unit j, E+ is unit j's
    explanations and E- the layer's other units' but c's and j's (c's own would be
    evidence about c). Unit c's score is the mean over j. Averaged over units it sits
    at chance when the observer reads nothing about a unit from another's explanations.

    Returns:
        float64 (C,).
    """
    units = explanations.shape[0]
    if units < 3:
        raise ValueError("the control needs at least three units per layer")
    top_queries, bottom_queries, explanations = _unit_norm(top_queries, bottom_queries, explanations)
    means = explanations.mean(dim=1)  # (C, D)
    total = means.sum(dim=0, keepdim=True)
    scores = []
    for shift in range(1, units):
        borrowed = means.roll(-shift, dims=0)  # unit c gets unit c + shift's
        others = (total - means - borrowed) / (units - 2)
        scores.append(_accuracy(top_queries, bottom_queries, borrowed - others))
    return torch.stack(scores).mean(dim=0)


COLOUR_BINS = 4  # per RGB axis: a 64-bin joint colour histogram
ORIENTATIONS = 8  # gradient orientation bins over 180 degrees
SCALES = 2  # the image and its half-size copy


def texture_features(images: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The offline observer's features: a colour and texture descriptor, no weights.

    Three blocks, each unit-normalised, then concatenated and normalised again:
    a joint RGB histogram (``COLOUR_BINS``**3 bins, soft-assigned), the gradient energy in
    ``ORIENTATIONS`` orientation bins at ``SCALES`` scales (what oriented filters in early
    vision respond to), and the mean and standard deviation of each colour channel. Images
    whose elements have the same colours and edge orientations have similar features,
    wherever the elements sit.

    Args:
        images: (N, 3, S, S) uint8 or float in [0, 1].
        weights: (S, S) how much each pixel counts (a unit's receptive-field mask: the
            observer looks where the unit looks); None: every pixel alike.

    Returns:
        float32 (N, D), unit norm.
    """
    pixels = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    count, _, size, _ = pixels.shape
    weights = (
        torch.ones(size, size, device=pixels.device) if weights is None else weights.to(pixels).clamp(min=0)
    )
    weights = weights / weights.sum().clamp(min=1e-12)  # (S, S), sums to 1
    # Soft joint colour histogram: each pixel shares its weight between neighbouring bins.
    position = pixels.clamp(0, 1) * (COLOUR_BINS - 1)  # (N, 3, S, S)
    centres = torch.arange(COLOUR_BINS, dtype=pixels.dtype, device=pixels.device)
    share = (1 - (position[:, :, None] - centres[None, None, :, None, None]).abs()).clamp(
        min=0
    )  # (N,3,B,S,S)
    colour = torch.einsum("nahw,nbhw,nchw,hw->nabc", share[:, 0], share[:, 1], share[:, 2], weights)
    mean = torch.einsum("nchw,hw->nc", pixels, weights)
    spread = torch.einsum("nchw,hw->nc", (pixels - mean[:, :, None, None]).square(), weights).sqrt()
    blocks = [colour.reshape(count, -1), torch.cat([mean, spread], dim=1)]
    grey = pixels.mean(dim=1, keepdim=True)
    where = weights[None, None]
    for _ in range(SCALES):
        dy = grey[:, :, 1:, :-1] - grey[:, :, :-1, :-1]
        dx = grey[:, :, :-1, 1:] - grey[:, :, :-1, :-1]
        magnitude = ((dx.square() + dy.square()).sqrt() * where[:, :, :-1, :-1]).flatten(1)
        angle = torch.atan2(dy, dx).flatten(1).remainder(torch.pi)  # orientation, not direction
        index = (angle / torch.pi * ORIENTATIONS).long().clamp(max=ORIENTATIONS - 1)
        blocks.append(
            torch.zeros(count, ORIENTATIONS, device=pixels.device).scatter_add_(1, index, magnitude)
        )
        grey, where = F.avg_pool2d(grey, 2), F.avg_pool2d(where, 2)
    return F.normalize(torch.cat([F.normalize(block, dim=1) for block in blocks], dim=1), dim=1)


EXPLANATIONS = (
    "prototypes",
    "exemplars",
    "control",
)  # what the observer is shown; control: another unit's exemplars
# Bump when a change alters the scores for the same inputs: it keys every result file.
READABILITY_VERSION = 1


def score_layer(
    test_units: torch.Tensor,
    test_features: torch.Tensor,
    prototype_features: torch.Tensor,
    exemplar_features: torch.Tensor,
    *,
    top: int,
    bottom_fraction: float,
    bottom_draws: int,
    seed: int,
) -> dict[str, torch.Tensor]:
    """The 2-AFC scores of one layer's C units at one epoch, for each of :data:`EXPLANATIONS`.

    Args:
        test_units: (N, C) each unit's activation on each of N held-out query candidates.
        test_features: (N, D) the observer's features of those images.
        prototype_features: (C, R, D) of each unit's R prototypes (its repeats).
        exemplar_features: (C, K, D) of each unit's K top exemplars.

    Returns:
        ``{"prototypes": (C,), "exemplars": (C,), "control": (C,)}`` float64 accuracies;
        control: :func:`control_scores` with exemplars (NaN with fewer than three units).
    """
    top_index, bottom_index = unit_queries(test_units, top, bottom_fraction, bottom_draws, seed)
    plus, minus = test_features[top_index], test_features[bottom_index]  # (C, Q, D)
    units = exemplar_features.shape[0]
    return {
        "prototypes": two_afc(plus, minus, prototype_features),
        "exemplars": two_afc(plus, minus, exemplar_features),
        # Two units leave no third for the control's E-: no control (NaN).
        "control": control_scores(plus, minus, exemplar_features)
        if units >= 3
        else torch.full((units,), float("nan"), dtype=torch.float64),
    }


def unit_activations(
    model: torch.nn.Module,
    images: np.ndarray,
    layers: Sequence[str],
    *,
    normalize: dict,
    read_unit: str,
    batch_size: int,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """``{layer: float32 (N, C)}``: every channel's unit on each of the uint8 (N, 3, S, S) images."""
    model.eval().to(device)
    normalise = Normalizer(normalize, device)
    parts: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    with torch.no_grad(), layers_reader(model, layers) as read:
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
            for layer, features in read(normalise(batch.to(device).float().div_(255))).items():
                parts[layer].append(centre_units(features, read_unit).float().cpu())
    return {layer: torch.cat(chunks) for layer, chunks in parts.items()}


def observer_specificity(features: torch.Tensor) -> float:
    """Specificity in the observer's space: re-evolution distance over between-unit distance.

    features (C, R, D), R >= 2 repeats of each of C >= 2 units -> mean over units and repeat
    pairs of ``1 - cos`` between a unit's repeats, over the mean ``1 - cos`` between different
    units of the same repeat. 0: every search of a unit looks the same to the observer; 1: two
    searches of one unit differ as much as two units do. NaN with one repeat.
    """
    units, repeats = features.shape[:2]
    if repeats < 2 or units < 2:
        return float("nan")
    unit_norm = F.normalize(features.double(), dim=-1).transpose(0, 1)  # (R, C, D)
    again = torch.stack(
        [1 - (unit_norm[a] * unit_norm[b]).sum(-1) for a in range(repeats) for b in range(a + 1, repeats)]
    ).mean()
    similarity = torch.einsum("rcd,red->rce", unit_norm, unit_norm)  # (R, C, C)
    between = (1 - similarity[:, ~torch.eye(units, dtype=torch.bool)]).mean()
    return float(again / between) if between > 0 else float("nan")


class Observer:
    """The observer's features of uint8 images, seen through an (S, S) mask or whole.

    ``texture``: :func:`texture_features` (no weights; the offline default). A name of
    :data:`~protoviz_core.models.networks.NETWORKS`: that network with ``weights`` (``imagenet`` on
    the paper's path; the embed stage's loading, read at its last pooled layer), the images
    multiplied by the mask as the embed stage masks them, features unit-normalised.
    """

    def __init__(self, name: str, weights: str, batch_size: int, device: torch.device):
        self.name, self.weights, self.batch_size, self.device = name, weights, batch_size, device

    @functools.cached_property
    def _network(self) -> torch.nn.Module:
        from protoviz_core.measures.embedding import load_network  # the networks only where one is used

        return load_network(self.name, self.weights)

    def __call__(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 (N, 3, S, S) -> float32 (N, D), unit norm."""
        if self.name == "texture":
            return texture_features(images, mask)
        from protoviz_core.measures.embedding import embed_images

        features = embed_images(
            images,
            self.name,
            network=self._network,
            mask=mask,
            batch_size=self.batch_size,
            device=self.device,
        )
        return F.normalize(features.float(), dim=1)


def readability_work(
    checkpoints: dict[int, Path],
    store: PrototypeStore,
    exemplars: ExemplarSet,
    masks: MaskSet,
    test_images: np.ndarray,
    settings: ReadabilityParams,
    *,
    read_unit: str,
    device: torch.device,
    observer_weights: str = "imagenet",
) -> list[WorkItem]:
    """One work item per extracted epoch, named ``eXXXX.pt``: every unit's 2-AFC scores.

    Queries are the ``test_images`` (a split that neither the exemplars nor the search saw);
    the observer (``settings.observer``, :class:`Observer`; a network's weights are
    ``observer_weights``) looks at explanations through their layer's RF mask at that epoch
    (where the unit looks), at queries whole. Contents:
    ``{layer: {"channels": int64 (C,), "prototypes" | "exemplars" | "control": float64 (C,),
    "specificity": float (:func:`observer_specificity` of the prototypes)}}``.

    The identity is the checkpoint's, the epoch's prototype shards', its exemplar file's,
    its masks' values, the test images' digest, the settings that shape a score and
    :data:`READABILITY_VERSION`.
    """
    layers = list(dict.fromkeys(store.index.layer))
    observer = Observer(settings.observer, observer_weights, settings.batch_size, device)
    test_features = functools.cache(lambda: observer(torch.from_numpy(np.ascontiguousarray(test_images))))
    shaping = settings.model_dump(include={"top", "bottom_fraction", "bottom_draws", "seed", "observer"})
    if settings.observer == "texture":  # the identity it had before the observer was a setting
        del shaping["observer"]
    else:
        shaping["observer_weights"] = observer_weights
    queries = short_hash(np.ascontiguousarray(test_images).tobytes())
    items = []
    for epoch in sorted(int(e) for e in store.index.epoch.unique()):
        chosen = masks.for_epoch(epoch, layers)
        key = identity(
            "readability",
            checkpoint_identity(checkpoints[epoch]),
            store.shard_keys(epoch=epoch),
            exemplars.by_epoch[epoch]["key"],
            mask_digest(chosen),
            queries,
            shaping,
            read_unit,
            READABILITY_VERSION,
        )

        def compute(epoch=epoch, chosen=chosen) -> dict:
            backbone, meta = load_backbone(checkpoints[epoch])
            units = unit_activations(
                backbone,
                test_images,
                layers,
                normalize=meta["normalize"],
                read_unit=read_unit,
                batch_size=settings.batch_size,
                device=device,
            )
            return {
                layer: _layer_scores(
                    epoch,
                    layer,
                    store,
                    exemplars,
                    observer,
                    chosen[layer],
                    units[layer],
                    test_features(),
                    settings,
                )
                for layer in layers
            }

        items.append(WorkItem(epoch_file(epoch), key, compute))
    return items


def _layer_scores(
    epoch: int,
    layer: str,
    store: PrototypeStore,
    exemplars: ExemplarSet,
    observer: Observer,
    mask: torch.Tensor,
    units: torch.Tensor,
    test_features: torch.Tensor,
    settings: ReadabilityParams,
) -> dict:
    """One layer's entry of :func:`readability_work`'s contents at ``epoch``.

    Args:
        mask: (S, S) the layer's RF mask at the epoch, through which the observer sees explanations.
        units: (N, C_all) every channel's unit on the N test images; test_features: (N, F) theirs.
    """
    rows = store.select(epoch=epoch, layer=layer).sort_values(["channel", "repeat"])
    channels = sorted(int(c) for c in rows.channel.unique())
    repeats = rows["repeat"].nunique()
    prototypes = observer(store.images(rows), mask).view(len(channels), repeats, -1)
    _, positions = exemplars.top(epoch, layer, channels)  # (C, K)
    natural = torch.from_numpy(exemplars.pool.images(positions.flatten().numpy()))
    exemplar_features = observer(natural, mask).view(len(channels), positions.shape[1], -1)
    scores = score_layer(
        units[:, channels],
        test_features,
        prototypes,
        exemplar_features,
        top=settings.top,
        bottom_fraction=settings.bottom_fraction,
        bottom_draws=settings.bottom_draws,
        seed=settings.seed,
    )
    for name, values in scores.items():
        if name != "control" or len(channels) >= 3:
            require_informative(
                values, f"2-AFC {name} scores of epoch {epoch}, {layer}", items_must_differ=False
            )
    return {
        "channels": torch.tensor(channels, dtype=torch.int64),
        **scores,
        "specificity": observer_specificity(prototypes),
    }


def read_scores(folder: str | Path, epochs: Sequence[int]) -> dict[int, dict]:
    """``{epoch: contents}`` of the readability stage's ``eXXXX.pt`` files that exist in ``folder``
    (an epoch without a complete file is left out)."""
    found = {}
    for epoch in epochs:
        contents = read_result(Path(folder) / epoch_file(epoch), mmap=False)
        if contents is not None:
            found[epoch] = without_key(contents)
    return found


def score_rows(epochs: Sequence[int], results: Sequence[dict]) -> list[dict]:
    """One plot-table row per (epoch, layer, explanation): the median and mean over units; and per
    (epoch, layer) one row ``explanation = "specificity"`` (the layer's value in both columns)."""
    rows = []
    for epoch, result in zip(epochs, results):
        for layer, scores in result.items():
            for name in EXPLANATIONS:
                values = scores[name].double().numpy()
                rows.append(
                    {
                        "epoch": int(epoch),
                        "layer": layer,
                        "explanation": name,
                        "median": round(float(np.median(values)), 4),
                        "mean": round(float(values.mean()), 4),
                    }
                )
            value = round(float(scores["specificity"]), 4)
            rows.append(
                {
                    "epoch": int(epoch),
                    "layer": layer,
                    "explanation": "specificity",
                    "median": value,
                    "mean": value,
                }
            )
    return rows
