"""Tiny configurations that run in seconds on a CPU."""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

TINY_IMAGE_SIZE = 24


def tiny_params(**train_overrides) -> dict:
    """A params.yaml mapping for a whole pipeline run in seconds."""
    train = {"epochs": 2, "batch_size": 32, "num_workers": 0, "device": "cpu", **train_overrides}
    return {
        "aug": "clrjit",
        "seed": 1,
        "data": {
            "name": "synthetic",
            "image_size": TINY_IMAGE_SIZE,
            "synthetic": {"n_unlabeled": 64, "n_train": 20, "n_test": 20, "seed": 0},
        },
        "train": train,
    }


def tiny_extract(**overrides) -> dict:
    """A params.yaml extract section that synthesises in seconds on a CPU: two layers, three units,
    one evolution step of four samples, two Adam steps; ``overrides`` replace or add keys."""
    return {
        "layers": ["layer1", "layer2"],
        "channels_per_layer": 3,
        "repeats": 2,
        "cma_steps": 1,
        "cma_popsize": 4,
        "adam_steps": 2,
        "device": "cpu",
        **overrides,
    }


def write_params(path, params: dict) -> None:
    path.write_text(yaml.safe_dump(params))


def start_stage(name: str, cwd, *args) -> subprocess.Popen:
    """``python -m stages.<name> ARGS`` in ``cwd``, as DVC runs it (a separate process)."""
    command = [sys.executable, "-m", f"stages.{name}", *args]
    return subprocess.Popen(
        command, cwd=cwd, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def call_stage(name: str, cwd, *args) -> tuple[int, str, str]:
    """Run a stage's CLI in this process, in ``cwd``: (exit status, stdout, stderr).

    The same entry point as ``python -m stages.<name>`` (argument parsing, one-line
    errors, exit status), without a new interpreter's imports for every stage; tests
    that need a separate process (kills) use :func:`start_stage`.
    """
    from stages import _cli

    main = importlib.import_module(f"stages.{name}").main
    stdout, stderr = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            status = _cli.run(main, list(args))
    finally:
        os.chdir(previous)
    return status, stdout.getvalue(), stderr.getvalue()


def run_stage(name: str, cwd, *args) -> str:
    """:func:`call_stage`, failing the test with the stage's stderr unless it succeeds. Returns stdout."""
    status, stdout, stderr = call_stage(name, cwd, *args)
    assert status == 0, stderr[-3000:]
    return stdout


# Each stage's arguments as dvc.yaml passes them, run in the test's folder; the data stage's
# folder is data/ where dvc.yaml's is data/stl10_binary (tests/test_dvc_deps.py holds them equal).
STAGE_ARGS = {
    "data": ["--out", "data"],
    "train": [
        "--data",
        "data",
        "--checkpoints",
        "out/checkpoints",
        "--state",
        "out/train_state.pt",
        "--snapshots",
        "out/train_snapshots",
        "--metrics",
        "metrics/train.json",
        "--plot",
        "plots/train_loss.csv",
    ],
    "probe": [
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
    ],
    "rfmask": [
        "--checkpoints",
        "out/checkpoints",
        "--out",
        "out/rfmasks",
        "--metrics",
        "metrics/rfmask.json",
        "--plot",
        "plots/rfmask.csv",
    ],
    "similarity": [
        "--data",
        "data",
        "--checkpoints",
        "out/checkpoints",
        "--out",
        "out/similarity",
        "--metrics",
        "metrics/similarity.json",
        "--plot",
        "plots/similarity.csv",
    ],
    "exemplars": ["--data", "data", "--checkpoints", "out/checkpoints", "--out", "out/exemplars"],
    "spectrum": ["--data", "data", "--out", "out/spectrum.pt"],
    "decoder": ["--data", "data", "--out", "out/decoder.pt"],
    "readability": [
        "--data",
        "data",
        "--checkpoints",
        "out/checkpoints",
        "--prototypes",
        "out/prototypes",
        "--exemplars",
        "out/exemplars",
        "--rfmasks",
        "out/rfmasks",
        "--out",
        "out/readability",
        "--metrics",
        "metrics/readability.json",
        "--plot",
        "plots/readability.csv",
    ],
    "extract": [
        "--checkpoints",
        "out/checkpoints",
        "--exemplars",
        "out/exemplars",
        "--store",
        "out/prototypes",
        "--metrics",
        "metrics/extract.json",
    ],
    "embed": ["--prototypes", "out/prototypes", "--rfmasks", "out/rfmasks", "--out", "out/embeddings"],
    "distance": [
        "--embeddings",
        "out/embeddings",
        "--parts",
        "out/distance_parts",
        "--table",
        "out/distances.parquet",
        "--metrics",
        "metrics/distance.json",
        "--plot",
        "plots/diversity.csv",
    ],
    "report": [
        "--prototypes",
        "out/prototypes",
        "--rfmasks",
        "out/rfmasks",
        "--distances",
        "out/distances.parquet",
        "--exemplars",
        "out/exemplars",
        "--data",
        "data",
        "--probe",
        "plots/probe.csv",
        "--readability",
        "plots/readability.csv",
        "--unit-scores",
        "out/readability",
        "--similarity",
        "plots/similarity.csv",
        "--out",
        "report",
    ],
}


# dvc.yaml's stages in the order dvc repro runs them.
PIPELINE = (
    "params",
    "data",
    "spectrum",
    "decoder",
    "train",
    "probe",
    "similarity",
    "rfmask",
    "exemplars",
    "extract",
    "embed",
    "distance",
    "readability",
    "report",
)


def stages_from(first: str) -> list[str]:
    """The pipeline's stages from ``first`` to the report, in order (params: DVC's own check)."""
    return [stage for stage in PIPELINE[PIPELINE.index(first) :] if stage != "params"]


def run_pipeline(cwd, *stages: str) -> None:
    """Run the named stages in order, each as :func:`run_stage` with its :data:`STAGE_ARGS`."""
    for name in stages:
        run_stage(name, cwd, *STAGE_ARGS[name])


def newest_run(client):
    """The MLflow run the stages of a test used: the newest of the protoviz experiment (a copied
    project's database also holds the train stage's run of the session's trained project)."""
    from protoviz_core.pipeline.mlflow_store import EXPERIMENT_NAME

    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    return client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1
    )[0]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_answering(url: str, server: subprocess.Popen, seconds: float, describe=lambda: "") -> None:
    """Poll ``url`` until the local ``server`` answers (any HTTP status); fail if it dies or ``seconds`` pass.

    Directly, never through a proxy from the environment: the server is on this machine.
    """
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.time() + seconds
    while True:
        try:
            direct.open(url, timeout=5)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError as error:
            assert server.poll() is None and time.time() < deadline, (
                f"{url} did not answer ({error!r}) {describe()}"
            )
            time.sleep(0.5)


@contextlib.contextmanager
def s3_server():
    """moto's S3 API server on a free port of 127.0.0.1 with the bucket ``protoviz``; yields its URL."""
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(endpoint, server, 60)
        import boto3

        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket="protoviz")
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=60)
