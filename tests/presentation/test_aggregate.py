import numpy as np
import pandas as pd
import pytest

from protoviz_core.presentation.aggregate import final_values, mean_sem


def test_mean_sem_per_group_matches_numpy():
    values = pd.DataFrame({"aug": ["a", "a", "a", "b"], "value": [1.0, 2.0, 4.0, 5.0]})
    table = mean_sem(values, ["aug"]).set_index("aug")
    assert table.loc["a", "mean"] == pytest.approx(7 / 3)
    assert table.loc["a", "sem"] == pytest.approx(np.std([1, 2, 4], ddof=1) / np.sqrt(3))
    assert table.loc["a", "n"] == 3 and np.isnan(table.loc["b", "sem"])  # one value: no spread


def test_final_values_take_each_runs_own_last_epoch():
    histories = pd.DataFrame(
        {
            "run_id": ["r1", "r1", "r2", "r2", "r2"],
            "aug": "a",
            "seed": [1, 1, 2, 2, 2],
            "key": "probe/logreg",
            "epoch": [0, 3, 0, 1, 5],
            "value": [0.1, 0.4, 0.2, 0.3, 0.6],
        }
    )
    final = final_values(histories)
    assert sorted(zip(final.run_id, final.epoch, final.value)) == [("r1", 3, 0.4), ("r2", 5, 0.6)]


def _runs(condition, values, low, high, quantity="diversity"):
    return pd.DataFrame(
        {
            "run_id": [f"{condition}{seed}" for seed in range(len(values))],
            "condition": condition,
            "seed": range(1, len(values) + 1),
            "quantity": quantity,
            "layer": "layer1",
            "epoch": 5,
            "value": values,
            "low": low,
            "high": high,
        }
    )


def test_a_difference_is_a_finding_only_beyond_both_the_seeds_spread_and_the_noise_floor():
    from protoviz_core.presentation.aggregate import condition_differences

    clear = pd.concat(
        [_runs("clrjit", [0.50, 0.52, 0.51], 3.0, 3.5), _runs("keepclr", [0.20, 0.21, 0.19], 1.0, 1.5)]
    )
    row = condition_differences(clear).iloc[0]
    assert (row.condition_a, row.condition_b) == ("clrjit", "keepclr")
    assert row.difference == pytest.approx(0.31) and row.p_seeds < 0.001
    assert row.beyond_seeds and row.beyond_floor and row.finding
    # The same seeds, but the floor-relative intervals overlap: searching again could explain it.
    within_floor = pd.concat(
        [_runs("clrjit", [0.50, 0.52, 0.51], 1.0, 3.5), _runs("keepclr", [0.20, 0.21, 0.19], 1.2, 1.5)]
    )
    row = condition_differences(within_floor).iloc[0]
    assert row.beyond_seeds and not row.beyond_floor and not row.finding
    # The control: both conditions' seeds from one spread; the floor intervals apart does not make it one.
    seeds_overlap = pd.concat(
        [_runs("clrjit", [0.30, 0.50, 0.40], 3.0, 3.5), _runs("keepclr", [0.45, 0.35, 0.25], 1.0, 1.5)]
    )
    row = condition_differences(seeds_overlap).iloc[0]
    assert row.p_seeds > 0.05 and row.beyond_floor and not row.finding
    # One seed per condition cannot show the seeds' spread: never a finding.
    single = pd.concat([_runs("clrjit", [0.50], 3.0, 3.5), _runs("keepclr", [0.20], 1.0, 1.5)])
    row = condition_differences(single).iloc[0]
    assert np.isnan(row.p_seeds) and row.beyond_floor and not row.finding


def test_conditions_without_a_common_layer_have_no_differences_but_the_same_columns():
    from protoviz_core.presentation.aggregate import DIFFERENCE_COLUMNS, condition_differences

    apart = pd.concat([_runs("clrjit", [0.5, 0.6], 3.0, 3.5), _runs("keepclr", [0.2, 0.3], 1.0, 1.5)])
    apart.loc[apart.condition == "keepclr", "layer"] = "features.4"
    differences = condition_differences(apart)
    assert differences.empty and list(differences.columns) == DIFFERENCE_COLUMNS
