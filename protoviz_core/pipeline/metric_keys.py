"""Metric names in one place: what the stages log to MLflow and DVC, and what the reports read back.

    train/loss, train/images_per_s
    probe/<readout>                                    readout in READOUTS
    rfmask/sigma/<layer>
    extract/activation/<layer>, extract/dead_fraction/<layer>, extract/superstimulus/<layer>,
    extract/prototypes_per_s
    readability/<explanation>/<layer>
    similarity/<cka_to_final|cka_to_initial>/<layer>
    <quantity>/<space>/<metric>[-masked]/<layer>       quantity in QUANTITIES or FLOOR_QUANTITIES

Each metric is logged with the epoch as its step. The distance stage measures every
(space, metric, masked) view; a *view* (params ``distance``) picks the one that
summaries, plots and figures show.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from protoviz_core.pipeline.config import DistanceParams

READOUTS = ("logreg", "linearsvc", "adam")  # the linear probes (paper Sec. 6.1)
QUANTITIES = ("diversity", "rate_of_change", "consistency")  # the distance stage's (paper Sec. 3.3)
# Against the noise floor (protoviz's, protoviz_core.measures.distance): the floor's 95% bootstrap interval
# over units, and diversity and rate of change as ratios to the floor of the same units, with theirs.
FLOOR_RATIOS = ("diversity_to_floor", "rate_of_change_to_floor")
FLOOR_QUANTITIES = (
    "consistency_low",
    "consistency_high",
    *(f"{ratio}{end}" for ratio in (*FLOOR_RATIOS, "specificity") for end in ("", "_low", "_high")),
)

TRAIN_LOSS = "train/loss"
TRAIN_IMAGES_PER_S = "train/images_per_s"
EXTRACT_PROTOTYPES_PER_S = "extract/prototypes_per_s"


def probe_key(readout: str) -> str:
    return f"probe/{readout}"


def rfmask_sigma_key(layer: str) -> str:
    return f"rfmask/sigma/{layer}"


def extract_key(statistic: str, layer: str) -> str:
    """``statistic``: ``activation`` (mean centre activation), ``dead_fraction`` or ``superstimulus``
    (median over the layer's prototypes of activation / best natural activation)."""
    return f"extract/{statistic}/{layer}"


def similarity_key(quantity: str, layer: str) -> str:
    """``similarity/cka_to_final/layer3``: the layer's linear CKA to the same layer at the run's
    final (``cka_to_final``) or first (``cka_to_initial``) epoch (protoviz_core.measures.similarity)."""
    return f"similarity/{quantity}/{layer}"


def readability_key(explanation: str, layer: str) -> str:
    """``readability/prototypes/layer3``: the layer's median 2-AFC score with that explanation
    (prototypes, exemplars or control; protoviz_core.measures.readability)."""
    return f"readability/{explanation}/{layer}"


def view_name(space: str, metric: str, masked: bool) -> str:
    """``pixel/mse-masked``: one distance view as part of a metric name."""
    return f"{space}/{metric}{'-masked' if masked else ''}"


def distance_key(quantity: str, space: str, metric: str, masked: bool, layer: str) -> str:
    return f"{quantity}/{view_name(space, metric, masked)}/{layer}"


def layer_of(key: str) -> str:
    """The layer a per-layer metric name ends with."""
    return key.rsplit("/", 1)[-1]


def distance_layers(keys: Iterable[str]) -> list[str]:
    """The layers that have a diversity metric among ``keys``, sorted."""
    return sorted({layer_of(key) for key in keys if key.startswith(f"{QUANTITIES[0]}/")})


def comparison_keys(layers: Iterable[str], view: DistanceParams) -> list[str]:
    """The metrics the comparison of runs reads: every probe readout, every quantity of ``view``
    and its noise-floor measures, the superstimulus ratio of every layer."""
    layers = list(layers)
    return (
        [probe_key(r) for r in READOUTS]
        + [
            distance_key(q, view.space, view.metric, view.masked, layer)
            for q in QUANTITIES + FLOOR_QUANTITIES
            for layer in layers
        ]
        + [extract_key("superstimulus", layer) for layer in layers]
    )


def in_view(table: pd.DataFrame, view: DistanceParams) -> pd.DataFrame:
    """The rows of a tidy distance table (space, metric, masked, ...) that ``view`` shows."""
    return table[(table.space == view.space) & (table.metric == view.metric) & (table.masked == view.masked)]


def view_label(view: DistanceParams) -> str:
    """``pixel, mse, RF-masked``: what a figure of ``view`` measures, in words."""
    return f"{view.space}, {view.metric}, {'RF-masked' if view.masked else 'unmasked'}"
