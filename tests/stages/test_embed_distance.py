"""embed and distance stages on a micro run: outputs, MLflow, resume."""

import json
import os
import shutil

import pandas as pd
from mlflow.tracking import MlflowClient

from protoviz_core.pipeline.run_identity import EMBED_WEIGHTS_TAG
from tests.helpers import newest_run, run_pipeline, tiny_extract, tiny_params, write_params


def _stamps(folder):
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*.pt")}


def test_embed_and_distance_stages(project):
    tmp_path = project
    params = tiny_params(epochs=2)
    params["extract"] = tiny_extract()
    params["rfmask"] = {"layers": ["layer1", "layer2"], "samples": 2, "channels_per_layer": 2}
    params["embed"] = {"nets": ["mobilenet_v2"], "weights": "random", "batch_size": 4}
    params["distance"] = {"space": "pixel", "metric": "weighted_mse", "masked": True}
    write_params(tmp_path / "params.yaml", params)
    run_pipeline(tmp_path, "rfmask", "exemplars", "extract", "embed", "distance")

    info = json.loads((tmp_path / "out/embeddings/info.json").read_text())
    assert info == {"spaces": ["pixel", "mobilenet_v2"], "weights": "random", "epochs": [0, 1, 2]}
    table = pd.read_parquet(tmp_path / "out/distances.parquet")
    assert list(table.columns) == ["space", "metric", "masked", "layer", "epoch", "quantity", "value"]
    assert set(table.space) == {"pixel", "mobilenet_v2"} and set(table.metric) == {
        "mse",
        "cosine",
        "weighted_mse",
    }
    weighted = table[table.metric == "weighted_mse"]  # the mask-weighted mean: masked pixels only
    assert set(weighted.space) == {"pixel"} and set(weighted.masked) == {True}
    assert set(table.masked) == {True, False} and set(table.layer) == {"layer1", "layer2"}
    quantities = table.groupby("epoch").quantity.unique()
    floor = {"consistency_low", "consistency_high"} | {
        f"{ratio}{end}"
        for ratio in ("diversity_to_floor", "rate_of_change_to_floor", "specificity")
        for end in ("", "_low", "_high")
    }
    assert set(quantities[0]) == {"diversity", "consistency", "rate_of_change"} | floor
    specificity = table[table.quantity.isin(["specificity", "diversity_to_floor"])].pivot_table(
        index=["space", "metric", "masked", "layer", "epoch"], columns="quantity", values="value"
    )  # specificity: the re-evolution over the between-unit distance, the inverse of diversity / floor
    assert ((specificity.specificity * specificity.diversity_to_floor - 1).abs() < 1e-9).all()
    assert not any(q.startswith("rate_of_change") for q in quantities[2])  # no epoch after the last
    assert (table.value >= -1e-9).all()

    metrics = json.loads((tmp_path / "metrics/distance.json").read_text())
    assert metrics["space"] == "pixel" and metrics["epoch"] == 2 and metrics["layer1"]["diversity"] > 0
    assert metrics["metric"] == "weighted_mse" and metrics["layer1"]["diversity_to_floor"] > 0
    # The rate of change ends one extracted epoch before the last: the summary says from which.
    assert metrics["rate_of_change_from_epoch"] == 1 and metrics["layer1"]["rate_of_change_to_floor"] > 0
    assert (tmp_path / "plots/diversity.csv").read_text().splitlines()[0] == "epoch,layer1,layer2"

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    run = newest_run(client)
    assert run.data.tags[EMBED_WEIGHTS_TAG] == "random"
    for key in (
        "diversity/pixel/mse-masked/layer1",
        "diversity_to_floor_low/pixel/weighted_mse-masked/layer1",
    ):
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == [0, 1, 2]

    embedded, parts = _stamps(tmp_path / "out/embeddings"), _stamps(tmp_path / "out/distance_parts")
    run_pipeline(tmp_path, "embed", "distance")  # again: nothing is recomputed
    assert _stamps(tmp_path / "out/embeddings") == embedded
    assert _stamps(tmp_path / "out/distance_parts") == parts

    # Leftovers of another configuration (persisted outputs) are removed, never read.
    stale = tmp_path / "out/embeddings/pixel/e0009.pt"
    shutil.copy(tmp_path / "out/embeddings/pixel/e0001.pt", stale)
    (tmp_path / "out/embeddings/vgg16").mkdir()
    run_pipeline(tmp_path, "embed")
    assert not stale.exists() and not (tmp_path / "out/embeddings/vgg16").exists()
    run_pipeline(tmp_path, "distance")
    assert set(pd.read_parquet(tmp_path / "out/distances.parquet").epoch) == {0, 1, 2}
