"""The spectrum and readability stages on a tiny trained run."""

import json
import os

import torch
from mlflow.tracking import MlflowClient

from protoviz_core.engine.generators import load_magnitude
from tests.helpers import (
    STAGE_ARGS,
    call_stage,
    newest_run,
    run_pipeline,
    run_stage,
    tiny_extract,
    tiny_params,
    write_params,
)


def test_spectrum_stage_measures_the_training_images_and_maco_extracts_from_it(project):
    params = tiny_params(epochs=2)
    params["read_unit"] = "centred"
    params["rfmask"] = {"layers": ["layer1", "layer2"], "samples": 2, "channels_per_layer": 3}
    params["extract"] = tiny_extract(generator="maco", generator_weights="out/spectrum.pt", robustness=True)
    params["exemplars"] = {"images": 60, "top_k": 4, "device": "cpu"}
    write_params(project / "params.yaml", params)
    run_pipeline(project, "spectrum", "rfmask", "exemplars", "extract", "readability")

    magnitude = load_magnitude(project / "out/spectrum.pt", 24)
    assert magnitude.shape == (3, 24, 13) and bool((magnitude[:, 1:] > 0).all())
    metrics = json.loads((project / "metrics/readability.json").read_text())
    assert metrics["epoch"] == 2 and set(metrics) == {"epoch", "layer1", "layer2"}
    for layer in ("layer1", "layer2"):
        for name in ("prototypes", "exemplars", "control"):
            assert 0 <= metrics[layer][f"{name}_median"] <= 1
    header, *rows = (project / "plots/readability.csv").read_text().splitlines()
    # prototypes, exemplars, control and the layer's specificity, per layer and epoch
    assert header == "epoch,layer,explanation,median,mean" and len(rows) == 4 * 2 * 3
    assert 0 <= metrics["layer2"]["specificity"] < 2
    stored = torch.load(project / "out/readability/e0002.pt", weights_only=True)
    assert stored["layer2"]["channels"].tolist() == [0, 64, 127] and stored["layer2"]["prototypes"].shape == (
        3,
    )

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    run = newest_run(client)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "readability/prototypes/layer1")]
    assert sorted(steps) == [0, 1, 2] and run.data.tags["protoviz.stage.readability"] == "done"

    stamps = {p.name: p.stat().st_mtime_ns for p in (project / "out/readability").iterdir()}
    run_stage("readability", project, *STAGE_ARGS["readability"])  # finished epochs are not recomputed
    assert {p.name: p.stat().st_mtime_ns for p in (project / "out/readability").iterdir()} == stamps

    # A missing spectrum stops the extract stage with one line naming the file and the stage that makes it.
    (project / "out/spectrum.pt").unlink()
    params["extract"]["cma_steps"] = 2  # another configuration: every shard would be made again
    write_params(project / "params.yaml", params)
    status, _, stderr = call_stage("extract", project, *STAGE_ARGS["extract"])
    assert status == 2 and "out/spectrum.pt: magnitude spectrum not found; run dvc repro spectrum" in stderr
