"""Mean +- SEM over seeds: the statistics of a comparison of runs (no MLflow here)."""

from __future__ import annotations

import numpy as np
import pandas as pd


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
