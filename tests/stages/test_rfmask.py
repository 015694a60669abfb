"""The rfmask stage on a tiny trained run."""

import json
import os

import torch
from mlflow.tracking import MlflowClient

from tests.helpers import STAGE_ARGS, newest_run, run_stage, tiny_params, write_params

RFMASK_ARGS = STAGE_ARGS["rfmask"]


def test_rfmask_stage_writes_masks_metrics_and_mlflow_and_resumes(project):
    tmp_path = project
    params = tiny_params(epochs=2)
    params["rfmask"] = {"layers": ["layer1", "layer2"], "samples": 4, "channels_per_layer": 2}
    write_params(tmp_path / "params.yaml", params)
    run_stage("rfmask", tmp_path, *RFMASK_ARGS)

    stored = torch.load(tmp_path / "out/rfmasks/epoch_0001.pt", weights_only=True)
    assert isinstance(stored.pop("key"), str)
    assert set(stored) == {"layer1", "layer2"}
    assert stored["layer1"]["mask"].shape == (24, 24) and 0 <= stored["layer1"]["mask"].min()
    assert stored["layer1"]["mask"].max() <= 1 and stored["layer1"]["channels"].tolist() == [0, 63]
    metrics = json.loads((tmp_path / "metrics/rfmask.json").read_text())
    assert set(metrics) == {"layer1", "layer2"} and metrics["layer1"]["sigma_y"] > 0
    header, *rows = (tmp_path / "plots/rfmask.csv").read_text().splitlines()
    assert (
        header.startswith("epoch,layer,center_y,center_x,sigma_y,sigma_x,sigma,fit_ok") and len(rows) == 2 * 3
    )

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    run = newest_run(client)
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "rfmask/sigma/layer2")) == [
        0,
        1,
        2,
    ]

    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out/rfmasks").iterdir()}
    run_stage("rfmask", tmp_path, *RFMASK_ARGS)  # finished checkpoints are not recomputed
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out/rfmasks").iterdir()} == stamps

    stale = tmp_path / "out/rfmasks/epoch_0007.pt"  # e.g. from a longer run of another configuration
    stale.write_bytes((tmp_path / "out/rfmasks/epoch_0001.pt").read_bytes())
    run_stage("rfmask", tmp_path, *RFMASK_ARGS)
    assert not stale.exists()


def test_an_all_zero_mask_stops_the_stage_before_it_is_written(project, monkeypatch, capsys):
    import protoviz_core.measures.rfield as rfield
    import stages.rfmask as rfmask_stage
    from stages import _cli

    tmp_path = project
    params = tiny_params(epochs=2)
    params["rfmask"] = {"layers": ["layer1"], "samples": 2, "channels_per_layer": 2}
    write_params(tmp_path / "params.yaml", params)
    real_fields = rfield.layer_fields

    def collapsed(*args, **kwargs):  # e.g. a dead layer: no gradient reaches the input
        fields = real_fields(*args, **kwargs)
        for field in fields.values():
            field["mask"] = torch.zeros_like(field["mask"])
        return fields

    monkeypatch.setattr(rfield, "layer_fields", collapsed)
    monkeypatch.chdir(tmp_path)
    assert _cli.run(rfmask_stage.main, RFMASK_ARGS) == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert last_line == "error: RF mask of out/checkpoints/epoch_0000.pt (layer1): all values are zero"
    assert not list((tmp_path / "out/rfmasks").glob("*.pt"))


def test_a_selection_larger_than_a_layer_uses_all_its_channels_and_says_so(project):
    params = tiny_params(epochs=2)
    params["rfmask"] = {"layers": ["layer1"], "samples": 2, "channels_per_layer": 1000, "every": 2}
    write_params(project / "params.yaml", params)
    stdout = run_stage("rfmask", project, *RFMASK_ARGS)
    assert "rfmask.channels_per_layer: 1000 is more than the 64 channels of layer1; using all 64" in stdout
    stored = torch.load(project / "out/rfmasks/epoch_0002.pt", weights_only=True)
    assert stored["layer1"]["channels"].tolist() == list(range(64))
