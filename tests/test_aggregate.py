import numpy as np
import pandas as pd
import pytest

from protoviz_core.aggregate import final_values, mean_sem


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
