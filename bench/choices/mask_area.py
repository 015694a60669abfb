"""What a run's distances follow: the receptive-field mask's size, or the prototypes.

Reads a finished pipeline folder (``out/distances.parquet``, ``out/rfmasks``) and, for
each pixel-space view (the paper's RF-masked MSE, the mask-weighted mean
``weighted_mse``, unmasked MSE), correlates across the layer x epoch cells the log of
diversity with the log of the mask's mean square (the factor by which the paper's
masked MSE scales with the mask). A view that measures the prototypes should not
follow the mask: |r| well below 1. The noise floor is printed beside it: each layer's
rate of change and diversity as ratios to the re-evolution distance of the same units.
The control (``mask_swap``): every cell's prototypes measured under every cell's mask,
so that how much the mask alone moves a view is seen apart from the prototypes.

    python -m bench.choices.mask_area                      # this folder's demo run
    python -m bench.choices.mask_area --run /path/to/run --markdown
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from protoviz_core.infra.work import read_result, without_key
from protoviz_core.measures.distance import mask_weighted, unit_diversity
from protoviz_core.measures.masks import load_masks

VIEWS = (
    ("mse", True, "paper: masked MSE"),
    ("weighted_mse", True, "mask-weighted mean"),
    ("mse", False, "unmasked"),
)


def cells(run: Path) -> pd.DataFrame:
    """One row per (view, layer, epoch): diversity, its floor ratios and the mask's mean square."""
    table = pd.read_parquet(run / "out/distances.parquet")
    table = table[table.space == "pixel"]
    masks = load_masks(run / "out/rfmasks")
    rows = []
    for (metric, masked, layer, epoch), group in table.groupby(["metric", "masked", "layer", "epoch"]):
        values = dict(zip(group.quantity, group.value))
        mask = masks.for_epoch(int(epoch), [layer])[layer].double()
        rows.append(
            {
                "metric": metric,
                "masked": masked,
                "layer": layer,
                "epoch": int(epoch),
                "mask_mean_square": float(mask.square().mean()),
                **values,
            }
        )
    return pd.DataFrame(rows)


def _span(view: pd.DataFrame, column: str) -> str:
    return f"{view[column].min():.2f}..{view[column].max():.2f}" if column in view else ""


def summary(frame: pd.DataFrame) -> list[dict]:
    rows = []
    for metric, masked, label in VIEWS:
        view = frame[(frame.metric == metric) & (frame.masked == masked)]
        if view.empty:
            continue
        r = np.corrcoef(np.log(view.diversity), np.log(view.mask_mean_square))[0, 1]
        rows.append(
            {
                "view": f"{metric}{'-masked' if masked else ''} ({label})",
                "cells": len(view),
                "r(log diversity, log mask mean square)": round(float(r), 3),
                "diversity min..max": f"{view.diversity.min():.4g}..{view.diversity.max():.4g}",
                **{
                    f"{name} / floor min..max": _span(view, f"{quantity}_to_floor")
                    for name, quantity in (("diversity", "diversity"), ("rate of change", "rate_of_change"))
                },
            }
        )
    return rows


def mask_swap(run: Path) -> list[dict]:
    """The control: every cell's prototypes (first repeat) under every cell's mask.

    For each view, log diversity over the (prototypes x masks) table is split into the
    share of its variance explained by the prototypes (row means) and by the masks
    (column means); a measure of the prototypes has a small mask share. Also the range,
    over masks, of diversity averaged over the prototypes: how far the mask alone moves it.
    """
    folder = run / "out/embeddings/pixel"
    cells_in = {}
    for path in sorted(folder.glob("e*.pt")):
        for layer, vectors in without_key(read_result(path)).items():
            cells_in[(layer, int(path.stem[1:]))] = (vectors["plain"][0].float(), vectors["mask"].float())
    views = {
        "mse-masked (paper: masked MSE)": lambda plain, mask: (
            plain * mask.expand(3, *mask.shape).flatten(),
            "mse",
        ),
        "weighted_mse-masked (mask-weighted mean)": lambda plain, mask: (mask_weighted(plain, mask), "mse"),
    }
    rows = []
    for name, apply in views.items():
        table = np.array(
            [
                [float(unit_diversity(*apply(plain, mask)).mean()) for _, mask in cells_in.values()]
                for plain, _ in cells_in.values()
            ]
        )
        logs = np.log(table)
        by_mask = np.exp(logs.mean(axis=0))
        rows.append(
            {
                "view": name,
                "share of variance: prototypes": round(float(logs.mean(axis=1).var() / logs.var()), 2),
                "share of variance: masks": round(float(logs.mean(axis=0).var() / logs.var()), 2),
                "diversity over masks, prototypes fixed": f"{by_mask.min():.3g}..{by_mask.max():.3g}",
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", default=".", help="a pipeline folder after dvc repro")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    args = parser.parse_args()
    frame = cells(Path(args.run))
    table = pd.DataFrame(summary(frame))
    per_layer = (
        frame[(frame.metric == "weighted_mse")]
        .pivot_table(index="layer", columns="epoch", values=["diversity_to_floor", "rate_of_change_to_floor"])
        .round(2)
    )
    control = pd.DataFrame(mask_swap(Path(args.run)))
    for frame_out in (table, per_layer, control):
        print(frame_out.to_markdown(index=frame_out is per_layer) if args.markdown else frame_out.to_string())
        print()


if __name__ == "__main__":
    main()
