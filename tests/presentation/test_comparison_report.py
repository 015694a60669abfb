"""The comparison page: which differences between conditions it calls findings."""

import pandas as pd
import pytest

from protoviz_core.pipeline.config import DistanceParams
from protoviz_core.presentation.comparison import RunSelection
from protoviz_core.presentation.comparison_report import write_comparison


def test_the_comparison_calls_a_difference_one_only_beyond_the_seeds_and_the_floor(tmp_path):
    view = DistanceParams(space="pixel", metric="weighted_mse", masked=True)
    runs, rows = [], []
    for condition, level in (("clrjit", 0.5), ("keepclr", 0.2)):
        for seed in (1, 2, 3):
            run_id = f"{condition}{seed}"
            runs.append(
                {
                    "condition": condition,
                    "method": "simclr",
                    "backbone": "resnet18",
                    "aug": condition,
                    "seed": seed,
                    "name": run_id,
                    "dvc_exp": "workspace",
                    "run_id": run_id,
                }
            )
            for epoch in (0, 1):
                values = {
                    # layer1 differs between conditions, layer2 does not
                    ("diversity", "layer1"): level + 0.01 * seed,
                    ("diversity", "layer2"): 0.3 + 0.01 * seed,
                    ("consistency", "layer1"): 0.1,
                    ("consistency", "layer2"): 0.1,
                    ("consistency_low", "layer1"): 0.09,
                    ("consistency_high", "layer1"): 0.11,
                    ("diversity_to_floor_low", "layer1"): 10 * level - 0.5,
                    ("diversity_to_floor_high", "layer1"): 10 * level + 0.5,
                    ("diversity_to_floor_low", "layer2"): 2.5,
                    ("diversity_to_floor_high", "layer2"): 3.5,
                }
                rows += [
                    {
                        "run_id": run_id,
                        "condition": condition,
                        "seed": seed,
                        "key": f"{quantity}/pixel/weighted_mse-masked/{layer}",
                        "epoch": epoch,
                        "value": value,
                    }
                    for (quantity, layer), value in values.items()
                ]
    selection = RunSelection(used=pd.DataFrame(runs), skipped=pd.DataFrame(), differing_params={})
    page = write_comparison(
        tmp_path, selection=selection, histories=pd.DataFrame(rows), view=view, atlas_runs=[]
    )
    differences = pd.read_csv(tmp_path / "differences.csv")
    diversity = differences[(differences.quantity == "diversity") & (differences.epoch == 1)].set_index(
        "layer"
    )
    assert diversity.loc["layer1", "finding"] and diversity.loc["layer1", "difference"] == pytest.approx(0.3)
    assert not diversity.loc["layer2", "finding"]  # the same values in both conditions
    assert "Differences between conditions" in page.read_text()
    assert (tmp_path / "diversity.png").is_file()
