"""Mean +- SEM over seeds, and which differences between conditions clear the noise: the
statistics of a comparison of runs (no MLflow here)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.stats import ttest_ind


def mean_sem(values: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean, standard error of the mean (sample std / sqrt(n); NaN for n = 1) and n per group.

    Returns:
        ``by`` columns plus mean, sem, n.
    """
    grouped = values.groupby(by, sort=True)["value"]
    table = grouped.agg(mean="mean", std=lambda v: v.std(ddof=1), n="count").reset_index()
    table["sem"] = table["std"] / np.sqrt(table["n"])
    return table.drop(columns="std")[[*by, "mean", "sem", "n"]]


def final_values(histories: pd.DataFrame) -> pd.DataFrame:
    """Each run's value at its own last epoch, per key: run_id, condition, seed, key, epoch, value."""
    last = histories.groupby(["run_id", "key"])["epoch"].transform("max")
    return histories[histories["epoch"] == last].reset_index(drop=True)


# What a between-condition difference is read against (this project's rule, not the paper's):
# the floor-relative measure whose bootstrap intervals must not overlap, per distance quantity.
FLOOR_MEASURE = {
    "diversity": "diversity_to_floor",
    "rate_of_change": "rate_of_change_to_floor",
    "consistency": "consistency",
}
SIGNIFICANCE = 0.05  # Welch's t-test over seeds
DIFFERENCE_COLUMNS = [
    "quantity",
    "layer",
    "epoch",
    "condition_a",
    "condition_b",
    "mean_a",
    "mean_b",
    "difference",
    "seeds_a",
    "seeds_b",
    "p_seeds",
    "floor_interval_a",
    "floor_interval_b",
    "beyond_seeds",
    "beyond_floor",
    "finding",
]


def condition_differences(values: pd.DataFrame, significance: float = SIGNIFICANCE) -> pd.DataFrame:
    """Every pair of conditions compared per (quantity, layer, epoch): is the difference a finding?

    A difference counts only when it clears both sources of noise:

    - the seeds' spread: Welch's t-test over the runs' values gives p < ``significance``
      (needs two or more seeds per condition; with one seed, p is NaN and nothing counts);
    - the noise floor: the conditions' 95% bootstrap intervals over units of the quantity's
      floor-relative measure (:data:`FLOOR_MEASURE`; each run's interval bounds averaged over
      its condition's seeds) do not overlap.

    Args:
        values: one row per (run_id, condition, seed, quantity, layer, epoch) with ``value``, and
            ``low`` and ``high``: the run's interval of the floor-relative measure.

    Returns:
        quantity, layer, epoch, condition_a, condition_b, mean_a, mean_b, difference (a - b),
        seeds_a, seeds_b, p_seeds, floor_interval_a, floor_interval_b (``"low..high"``),
        beyond_seeds, beyond_floor, finding.
    """
    rows = []  # no two conditions share a (quantity, layer, epoch): no rows, the columns all the same
    for (quantity, layer, epoch), group in values.groupby(["quantity", "layer", "epoch"], sort=True):
        conditions = sorted(group.condition.unique())
        for i, a in enumerate(conditions):
            for b in conditions[i + 1 :]:
                first, second = group[group.condition == a], group[group.condition == b]
                if len(first) > 1 and len(second) > 1:
                    with warnings.catch_warnings():  # seeds that agree exactly: p is NaN, not a finding
                        warnings.simplefilter("ignore", RuntimeWarning)
                        p_value = float(ttest_ind(first.value, second.value, equal_var=False).pvalue)
                else:
                    p_value = float("nan")
                interval_a = (first.low.mean(), first.high.mean())
                interval_b = (second.low.mean(), second.high.mean())
                beyond_floor = bool(interval_a[1] < interval_b[0] or interval_b[1] < interval_a[0])
                beyond_seeds = bool(p_value < significance)  # NaN: False
                rows.append(
                    {
                        "quantity": quantity,
                        "layer": layer,
                        "epoch": int(epoch),
                        "condition_a": a,
                        "condition_b": b,
                        "mean_a": first.value.mean(),
                        "mean_b": second.value.mean(),
                        "difference": first.value.mean() - second.value.mean(),
                        "seeds_a": len(first),
                        "seeds_b": len(second),
                        "p_seeds": p_value,
                        "floor_interval_a": f"{interval_a[0]:.4g}..{interval_a[1]:.4g}",
                        "floor_interval_b": f"{interval_b[0]:.4g}..{interval_b[1]:.4g}",
                        "beyond_seeds": beyond_seeds,
                        "beyond_floor": beyond_floor,
                        "finding": beyond_seeds and beyond_floor,
                    }
                )
    return pd.DataFrame(rows, columns=DIFFERENCE_COLUMNS)
