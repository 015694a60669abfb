"""The superstimulus ratio and its per-layer summary."""

import numpy as np
import pandas as pd

from protoviz_core.prototypes.superstimulus import ratio_summary, superstimulus_ratio


def test_ratio_is_activation_over_the_best_natural_one_and_nan_without_a_yardstick():
    ratio = superstimulus_ratio(np.array([3.0, 0.5, 2.0, 1.0]), np.array([1.5, 2.0, 0.0, -1.0]))
    assert ratio[:2].tolist() == [2.0, 0.25] and np.isnan(ratio[2:]).all()


def test_summary_gives_median_quartiles_and_counts_per_layer_and_epoch():
    index = pd.DataFrame(
        {
            "layer": ["layer1"] * 5 + ["layer2"] * 2,
            "epoch": [0, 0, 0, 0, 0, 0, 0],
            "superstimulus": [1.0, 2.0, 3.0, 4.0, np.nan, np.nan, np.nan],
        }
    )
    summary = ratio_summary(index)
    assert summary.layer.tolist() == ["layer1"]  # layer2 has no ratio at all: no row
    row = summary.iloc[0]
    assert (row["median"], row.q25, row.q75, row.n, row.no_yardstick) == (2.5, 1.75, 3.25, 4, 1)
