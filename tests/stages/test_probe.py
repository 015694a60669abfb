"""The probe stage on a tiny trained run: metrics, plots, MLflow, cached features, bad checkpoints."""

import json
import os

import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import call_stage, newest_run, run_stage, tiny_params, write_params

PROBE_ARGS = [
    "--data",
    "data",
    "--checkpoints",
    "out/checkpoints",
    "--cache",
    "out/probe_features",
    "--metrics",
    "metrics/probe.json",
    "--plot",
    "plots/probe.csv",
]


@pytest.fixture
def trained(project):
    params = tiny_params(epochs=2)
    params["probe"] = {"every": 1, "adam_epochs": 5, "logreg_max_iter": 200, "svc_max_iter": 500}
    write_params(project / "params.yaml", params)
    return project


def test_probe_writes_metrics_plot_and_one_mlflow_step_per_epoch(trained):
    run_stage("probe", trained, *PROBE_ARGS)
    metrics = json.loads((trained / "metrics/probe.json").read_text())
    assert metrics["epoch"] == 2 and all(0 <= metrics[k] <= 1 for k in ("logreg", "linearsvc", "adam"))
    lines = (trained / "plots/probe.csv").read_text().splitlines()
    assert lines[0] == "epoch,logreg,linearsvc,adam" and [line.split(",")[0] for line in lines[1:]] == [
        "0",
        "1",
        "2",
    ]
    assert sorted(p.name for p in (trained / "out/probe_features").iterdir()) == [
        "epoch_0000.pt",
        "epoch_0001.pt",
        "epoch_0002.pt",
    ]

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    # The probe's run: new params, so a new run, with the train stage's curves adopted
    run = newest_run(client)
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss")) == [1, 2]
    for readout in ("logreg", "linearsvc", "adam"):
        history = client.get_metric_history(run.info.run_id, f"probe/{readout}")
        assert sorted(m.step for m in history) == [0, 1, 2]


def test_cached_features_are_reused(trained):
    run_stage("probe", trained, *PROBE_ARGS)
    stamps = {p.name: p.stat().st_mtime_ns for p in (trained / "out/probe_features").iterdir()}
    run_stage("probe", trained, *PROBE_ARGS)
    assert {p.name: p.stat().st_mtime_ns for p in (trained / "out/probe_features").iterdir()} == stamps


def test_corrupt_checkpoint_is_named_and_outputs_survive(trained):
    run_stage("probe", trained, *PROBE_ARGS)
    before = (trained / "metrics/probe.json").read_text()
    checkpoint = trained / "out/checkpoints/epoch_0001.pt"
    original = checkpoint.read_bytes()
    (trained / "out/probe_features/epoch_0001.pt").unlink()
    try:
        checkpoint.write_bytes(original[: len(original) // 2])
        status, _, stderr = call_stage("probe", trained, *PROBE_ARGS)
    finally:
        checkpoint.write_bytes(original)
    assert status == 2
    assert "epoch_0001.pt: unreadable checkpoint" in stderr.strip().splitlines()[-1]
    assert (trained / "metrics/probe.json").read_text() == before
