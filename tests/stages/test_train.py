"""The data and train stages: a killed training process resumes; bad input stops with one line."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
from mlflow.tracking import MlflowClient

import protoviz_core.data.stl10 as stl10
from protoviz_core.data.synthetic import write_synthetic_stl10
from protoviz_core.pipeline.config import TRAINING_VERSION
from protoviz_core.pipeline.mlflow_store import EXPERIMENT_NAME
from protoviz_core.training.checkpoints import list_checkpoints
from protoviz_core.training.diagnosis import learned_nothing
from tests.helpers import STAGE_ARGS, call_stage, run_stage, start_stage, tiny_params, write_params

TRAIN_ARGS = STAGE_ARGS["train"]


@pytest.fixture
def workdir(tmp_path):
    write_params(tmp_path / "params.yaml", tiny_params(epochs=4))
    run_stage("data", tmp_path, "--out", "data")
    return tmp_path


def test_sigkill_mid_training_resumes_without_retraining(workdir):
    process = start_stage("train", workdir, *TRAIN_ARGS)
    deadline = time.time() + 240
    while 2 not in list_checkpoints(workdir / "out/checkpoints"):
        assert process.poll() is None and time.time() < deadline, "training ended before the kill"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = {e: p.stat().st_mtime_ns for e, p in list_checkpoints(workdir / "out/checkpoints").items()}
    assert not (workdir / "metrics/train.json").exists()

    assert re.search(r"resuming after epoch [12] ", run_stage("train", workdir, *TRAIN_ARGS))
    checkpoints = list_checkpoints(workdir / "out/checkpoints")
    assert list(checkpoints) == [0, 1, 2, 3, 4]
    for epoch in (0, 1):  # finished before the kill: never rewritten
        assert checkpoints[epoch].stat().st_mtime_ns == done_before[epoch]
    for path in checkpoints.values():  # identity: the configuration and the training version
        assert torch.load(path, weights_only=True)["training_hash"].endswith(f"-v{TRAINING_VERSION}")

    metrics = json.loads((workdir / "metrics/train.json").read_text())
    assert metrics["epochs"] == 4 and metrics["checkpoints"] == 5 and metrics["final_loss"] > 0
    assert (workdir / "plots/train_loss.csv").read_text().splitlines()[0] == "epoch,loss"

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name(EXPERIMENT_NAME).experiment_id])
    steps = sorted({m.step for m in client.get_metric_history(run.info.run_id, "train/loss")})
    assert steps == [1, 2, 3, 4]
    assert run.data.params["train.epochs"] == "4" and run.data.params["data.image_size"] == "24"


def test_sigterm_to_the_process_group_ends_with_one_line_and_a_killed_run(workdir):
    """As a terminal's kill or dvc queue kill stops a stage: SIGTERM to the stage and its DataLoader
    workers at once. The workers' deaths must not turn the stop into a traceback or a FAILED run."""
    write_params(workdir / "params.yaml", tiny_params(epochs=6, num_workers=2))
    process = subprocess.Popen(
        [sys.executable, "-m", "stages.train", *TRAIN_ARGS],
        cwd=workdir,
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as under a shell's job control
    )
    deadline = time.time() + 240
    while 1 not in list_checkpoints(workdir / "out/checkpoints"):
        assert process.poll() is None and time.time() < deadline, "training ended before the signal"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143 and "Traceback" not in stderr, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == (
        "terminated (SIGTERM); finished work is kept and a rerun resumes from it"
    )
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name(EXPERIMENT_NAME).experiment_id])
    assert (run.info.status, run.data.tags["protoviz.stage.train"]) == ("KILLED", "killed")


def test_a_truncated_checkpoint_of_a_finished_run_is_made_again(project):
    checkpoints = list_checkpoints(project / "out/checkpoints")
    saved = {epoch: torch.load(path, weights_only=True)["backbone"] for epoch, path in checkpoints.items()}
    metrics = (project / "metrics/train.json").read_text()
    damaged = checkpoints[1]
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])

    stdout = run_stage("train", project, *TRAIN_ARGS)
    assert "epochs [1] are missing inside the finished run 0..2" in stdout
    restored = list_checkpoints(project / "out/checkpoints")
    assert list(restored) == [0, 1, 2]
    for epoch, weights in saved.items():
        again = torch.load(restored[epoch], weights_only=True)["backbone"]
        assert all(torch.equal(again[k], weights[k]) for k in weights), f"epoch {epoch} differs"
    assert (project / "metrics/train.json").read_text() == metrics


def test_a_checkpoint_copied_over_another_epoch_is_replayed_and_no_later_stage_uses_it(project):
    import shutil

    checkpoints = list_checkpoints(project / "out/checkpoints")
    saved = torch.load(checkpoints[2], weights_only=True)["backbone"]
    shutil.copy(checkpoints[1], checkpoints[2])  # a valid file holding epoch 1, named epoch 2
    for stage in ("probe", "rfmask", "extract"):
        status, _, stderr = call_stage(stage, project, *STAGE_ARGS[stage])
        assert status == 2 and "Traceback" not in stderr, stage
        assert "epoch_0002.pt: holds epoch 1, not the epoch its name says" in stderr.strip().splitlines()[-1]

    stdout = run_stage("train", project, *TRAIN_ARGS)
    assert (
        "holding another epoch" in stdout and "epochs [2] are missing inside the finished run 0..2" in stdout
    )
    again = torch.load(checkpoints[2], weights_only=True)
    assert again["epoch"] == 2 and all(torch.equal(again["backbone"][k], saved[k]) for k in saved)


def test_a_diverging_run_stops_with_one_line_and_keeps_its_good_epochs(workdir):
    write_params(workdir / "params.yaml", tiny_params(epochs=4, lr=1e6))
    status, _, stderr = call_stage("train", workdir, *TRAIN_ARGS)
    assert status == 2
    line = stderr.strip().splitlines()[-1]  # after the progress bar
    assert "Traceback" not in stderr and re.fullmatch(
        r"error: train: the loss is nan at epoch 2, step 2; .* Lower train.lr \(now 1e\+06\) .*", line
    )
    assert list(list_checkpoints(workdir / "out/checkpoints")) == [0, 1]


@pytest.mark.parametrize(("lr", "collapses"), [(1000.0, True), (0.06, False)])
def test_a_collapsed_run_ends_with_a_warning_naming_train_lr(workdir, lr, collapses):
    """BYOL at train.lr 1000: its loss falls (no chance level shows it), and by epoch 3 its
    features point one way (at epoch 2 not yet: measured spread 1.7e-3, then 1.9e-9)."""
    write_params(workdir / "params.yaml", tiny_params(epochs=3, method="byol", lr=lr))
    status, _, stderr = call_stage("train", workdir, *TRAIN_ARGS)
    assert status == 0, stderr[-3000:]
    warnings = [line for line in stderr.splitlines() if "collapsed" in line]
    if collapses:
        assert len(warnings) == 1 and warnings[0].startswith("train: warning: the byol network gives all 64")
        assert warnings[0].endswith("lower train.lr (now 1000)")
    else:
        assert warnings == []


def test_bad_params_stop_before_any_work_with_one_message(workdir):
    raw = tiny_params()
    raw["aug"] = "foo"
    write_params(workdir / "params.yaml", raw)
    status, _, stderr = call_stage("train", workdir, *TRAIN_ARGS)
    assert status == 2
    assert stderr.strip().splitlines() == [
        "error: params.yaml: aug: Input should be 'clrjit' or 'keepclr' (got 'foo')"
    ]
    assert not (workdir / "out").exists() and not (workdir / "mlflow.db").exists()


def test_data_stage_missing_stl10_names_the_path(tmp_path, monkeypatch):
    raw = tiny_params()
    raw["data"] = {"name": "stl10", "root": str(tmp_path / "absent"), "image_size": 96}
    write_params(tmp_path / "params.yaml", raw)
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # offline: the download fails at once
    # urlopen caches its opener, proxies included, for the whole process: give this test its own
    monkeypatch.setattr(urllib.request, "_opener", None)
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    status, _, stderr = call_stage("data", tmp_path, "--out", "data")
    assert status == 2
    assert f"STL10 not found in {tmp_path / 'absent' / 'stl10_binary'}" in stderr
    assert not (tmp_path / "data").exists()


def test_a_real_stl10_file_cut_after_the_data_stage_stops_training_with_one_line(tmp_path, monkeypatch):
    """The data stage links the user's download; a file cut later to a whole number of images
    (half of it) is refused before training reads it as a smaller data set."""
    monkeypatch.setattr(stl10, "STL10_SPLIT_SIZES", {"unlabeled": 8, "train": 10, "test": 10})
    download = tmp_path / "stl10" / "stl10_binary"
    write_synthetic_stl10(download, image_size=96, n_unlabeled=8, n_train=10, n_test=10, seed=1)
    stl10.class_names_path(download).write_text("\n".join(stl10.STL10_CLASS_NAMES) + "\n")
    raw = tiny_params()
    raw["data"] = {"name": "stl10", "root": str(tmp_path / "stl10"), "image_size": 96}
    write_params(tmp_path / "params.yaml", raw)
    run_stage("data", tmp_path, "--out", "data")
    cut = tmp_path / "data" / "unlabeled_X.bin"
    cut.write_bytes(cut.read_bytes()[: 4 * 3 * 96 * 96])

    status, _, stderr = call_stage("train", tmp_path, *TRAIN_ARGS)
    assert status == 2 and "Traceback" not in stderr
    expected = "error: data/unlabeled_X.bin: 110592 bytes, expected 221184 (STL10's unlabeled split holds 8 "
    assert stderr.strip().splitlines()[-1].startswith(expected)
    assert not list_checkpoints(tmp_path / "out/checkpoints")


def test_another_learner_trains_through_the_stage_and_tags_its_run(workdir):
    """Supervision: the labelled train split (20 images here), its learner in the checkpoint and in MLflow."""
    write_params(workdir / "params.yaml", tiny_params(epochs=1, method="supervised", batch_size=8))
    status, _, stderr = call_stage("train", workdir, *TRAIN_ARGS)
    assert status == 0, stderr[-3000:]
    checkpoint = torch.load(list_checkpoints(workdir / "out/checkpoints")[1], weights_only=True)
    assert checkpoint["method"] == "supervised" and checkpoint["loss"] > 0
    # Two steps teach no class: the stage says so when the loss ends at chance's, and only then.
    assert ("learned nothing" in stderr) == (learned_nothing("supervised", checkpoint["loss"], 8) is not None)
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name(EXPERIMENT_NAME).experiment_id])
    assert run.data.tags["protoviz.method"] == "supervised"
    assert run.info.run_name.startswith("supervised-clrjit-seed1-")
