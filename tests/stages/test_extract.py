"""The extract stage as DVC runs it: SIGKILL and resume, metrics, MLflow, PNG export."""

import json
import os
import signal
import time

import pandas as pd
from mlflow.tracking import MlflowClient
from PIL import Image

from protoviz_core.store import open_prototypes
from tests.helpers import newest_run, run_stage, start_stage, tiny_params, write_params

EXTRACT_ARGS = ["--checkpoints", "out/checkpoints", "--store", "out/prototypes", "--metrics", "metrics/extract.json"]


def test_killed_extraction_resumes_and_exports(project):
    tmp_path = project
    params = tiny_params(epochs=2)
    params["extract"] = {"layers": ["layer1", "layer2"], "channels_per_layer": 2, "repeats": 2,
                         "cma_steps": 2, "cma_popsize": 6, "adam_steps": 3, "device": "cpu"}
    write_params(tmp_path / "params.yaml", params)

    process = start_stage("extract", tmp_path, *EXTRACT_ARGS)
    shards = tmp_path / "out/prototypes/shards"
    deadline = time.time() + 240
    while not (shards.is_dir() and any(p.suffix == ".pt" for p in shards.iterdir())):
        assert process.poll() is None and time.time() < deadline, "extraction ended before the kill"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    kept = {p.name: p.stat().st_mtime_ns for p in shards.glob("*.pt")}
    assert 1 <= len(kept) < 12 and not (tmp_path / "out/prototypes/index.parquet").exists()

    run_stage("extract", tmp_path, *EXTRACT_ARGS)
    after = {p.name: p.stat().st_mtime_ns for p in shards.glob("*.pt")}
    assert len(after) == 12 and all(after[name] == stamp for name, stamp in kept.items())
    index = pd.read_parquet(tmp_path / "out/prototypes/index.parquet")
    assert len(index) == 3 * 2 * 2 * 2 and set(index.aug) == {"clrjit"} and set(index.seed) == {1}
    assert len(open_prototypes(tmp_path / "out/prototypes").select(epoch=1, layer="layer2")) == 4

    metrics = json.loads((tmp_path / "metrics/extract.json").read_text())
    assert metrics["prototypes"] == 24 and metrics["epoch"] == 2 and set(metrics) >= {"layer1", "layer2"}
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    run = newest_run(client)
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "extract/activation/layer1"))
    assert steps == [0, 1, 2]

    out = run_stage("extract", tmp_path, "export", "--store", "out/prototypes", "--out", "grid.png",
                    "--layer", "layer1", "--epoch", "0", "1", "--columns", "4")
    assert "wrote 8 prototypes" in out
    with Image.open(tmp_path / "grid.png") as picture:
        assert picture.size == (4 * 24 + 3 * 2, 2 * 24 + 2)
