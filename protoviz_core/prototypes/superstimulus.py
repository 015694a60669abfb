"""The superstimulus ratio: does a prototype drive its unit harder than the data set does?

A prototype is an activation-maximising image, so it should beat every natural image
at its own unit. Its ratio is its activation over the highest activation any sampled
image of the data set gives that unit (:mod:`protoviz_core.measures.exemplars`); the index of
the prototype store holds it per prototype, the extract stage logs its median per
layer and epoch, and the report draws it over training.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def superstimulus_ratio(activation: np.ndarray, natural_best: np.ndarray) -> np.ndarray:
    """A prototype's activation over its unit's best natural activation (float64, same shape).

    Above 1: the prototype drives the unit harder than any sampled image of the data
    set (a superstimulus). NaN where no sampled image drives the unit at all
    (``natural_best <= 0``): there is nothing to compare with.
    """
    activation = np.asarray(activation, dtype=np.float64)
    natural_best = np.asarray(natural_best, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(natural_best > 0, activation / natural_best, np.nan)


def ratio_summary(index: pd.DataFrame) -> pd.DataFrame:
    """Per (layer, epoch) of a prototype index: the ratio's median and quartiles over its prototypes.

    Returns:
        Columns ``layer, epoch, median, q25, q75, n`` (prototypes with a ratio) and
        ``no_yardstick`` (prototypes whose unit no sampled image drives); rows only
        where some prototype has a ratio.
    """
    grouped = index.groupby(["layer", "epoch"], sort=False).superstimulus
    summary = pd.DataFrame(
        {
            "median": grouped.median(),
            "q25": grouped.quantile(0.25),
            "q75": grouped.quantile(0.75),
            "n": grouped.count(),
            "no_yardstick": grouped.apply(lambda ratios: int(ratios.isna().sum())),
        }
    ).reset_index()
    return summary[summary.n > 0].reset_index(drop=True)
