"""The similarity stage on a tiny trained run: CKA of every layer across epochs."""

import json
import os

import pytest
import torch
from mlflow.tracking import MlflowClient

from protoviz_core.measures.similarity import cka, gram
from tests.helpers import STAGE_ARGS, newest_run, run_stage, tiny_extract, tiny_params, write_params


def test_similarity_stage_measures_every_layer_at_every_epoch_against_its_final_and_first_form(project):
    params = tiny_params(epochs=2)
    params["extract"] = tiny_extract(layers=["layer1", "layer4"])
    params["similarity"] = {"images": 16, "device": "cpu"}
    write_params(project / "params.yaml", params)
    out = run_stage("similarity", project, *STAGE_ARGS["similarity"])
    assert "similarity, layer1: CKA of epoch 0 to epoch 2" in out

    header, *rows = (project / "plots/similarity.csv").read_text().splitlines()
    assert header == "epoch,layer,cka_to_final,cka_to_initial" and len(rows) == 3 * 2
    table = {(int(r.split(",")[0]), r.split(",")[1]): [float(v) for v in r.split(",")[2:]] for r in rows}
    for layer in ("layer1", "layer4"):
        assert table[(2, layer)][0] == pytest.approx(1.0) and table[(0, layer)][1] == pytest.approx(1.0)
        assert table[(0, layer)][0] == pytest.approx(table[(2, layer)][1])  # CKA is symmetric
        assert -0.2 < table[(1, layer)][0] <= 1 + 1e-9
    metrics = json.loads((project / "metrics/similarity.json").read_text())
    assert metrics["epoch"] == 2 and metrics["layer4"]["settled_epoch"] in (0, 1, 2)

    # What the files keep: the same 16 test images at every epoch, a Gram matrix and every unit.
    stored = [torch.load(project / f"out/similarity/e{e:04d}.pt", weights_only=True) for e in (0, 2)]
    assert torch.equal(stored[0]["positions"], stored[1]["positions"]) and len(stored[0]["positions"]) == 16
    layer4 = stored[1]["layers"]["layer4"]
    assert layer4["gram"].shape == (16, 16) and layer4["gram"].dtype == torch.float32
    assert layer4["units"].shape == (16, 512)
    assert cka(layer4["gram"], stored[0]["layers"]["layer4"]["gram"]) == pytest.approx(
        table[(0, "layer4")][0], abs=1e-5
    )
    # The control: the final epoch's images in another order correspond to nothing.
    shuffled = layer4["units"][torch.randperm(16, generator=torch.Generator().manual_seed(0))]
    assert abs(cka(gram(layer4["units"]), gram(shuffled))) < 0.5

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    run = newest_run(client)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "similarity/cka_to_final/layer4")]
    assert sorted(steps) == [0, 1, 2] and run.data.tags["protoviz.stage.similarity"] == "done"

    stamps = {p.name: p.stat().st_mtime_ns for p in (project / "out/similarity").iterdir()}
    run_stage("similarity", project, *STAGE_ARGS["similarity"])  # finished checkpoints are not measured again
    assert {p.name: p.stat().st_mtime_ns for p in (project / "out/similarity").iterdir()} == stamps
