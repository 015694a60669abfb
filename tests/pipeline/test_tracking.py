import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from protoviz_core.pipeline.config import parse_params
from protoviz_core.pipeline.mlflow_store import EXPERIMENT_NAME, tracking_uri
from protoviz_core.pipeline.tracking import _process_gone, _this_process, pipeline_run
from tests.helpers import tiny_params


def _runs():
    client = MlflowClient(tracking_uri())
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    return client.search_runs([experiment.experiment_id])


def test_tracking_uri_defaults_to_sqlite_at_the_dvc_root(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_stages_of_one_configuration_share_one_run(monkeypatch):
    params = parse_params(tiny_params())
    with pipeline_run(params, "train") as first:
        mlflow.log_metric("train/loss", 2.0, step=1)
    with pipeline_run(params, "probe") as second:
        mlflow.log_metric("probe/logreg", 0.5, step=1)
    assert first.info.run_id == second.info.run_id
    (run,) = _runs()
    assert run.data.params["train.lr"] == "0.06" and run.data.params["aug"] == "clrjit"
    assert run.data.tags["protoviz.aug"] == "clrjit" and run.data.tags["protoviz.seed"] == "1"
    assert run.data.tags["protoviz.dvc_exp"] == "workspace"
    assert run.data.tags["protoviz.stage.train"] == "done" and run.data.tags["protoviz.stage.probe"] == "done"


def test_other_configuration_or_experiment_gets_its_own_run(monkeypatch):
    with pipeline_run(parse_params(tiny_params()), "train") as base:
        pass
    with pipeline_run(parse_params({**tiny_params(), "aug": "keepclr"}), "train") as keepclr:
        pass
    monkeypatch.setenv("DVC_EXP_NAME", "brisk-lark")
    with pipeline_run(parse_params(tiny_params()), "train") as experiment:
        pass
    assert len({base.info.run_id, keepclr.info.run_id, experiment.info.run_id}) == 3
    names = {r.data.tags["protoviz.dvc_exp"] for r in _runs()}
    assert names == {"workspace", "brisk-lark"}


def test_run_created_after_cached_training_adopts_the_training_curve(monkeypatch):
    params = parse_params(tiny_params())
    with pipeline_run(params, "train"):
        for epoch, loss in enumerate([5.0, 4.0, 3.5], start=1):
            mlflow.log_metric("train/loss", loss, step=epoch)
    # DVC restores training from its cache in a new experiment: only later stages run.
    monkeypatch.setenv("DVC_EXP_NAME", "later-exp")
    with pipeline_run(params, "probe") as later:
        pass
    history = MlflowClient(tracking_uri()).get_metric_history(later.info.run_id, "train/loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (1, 5.0),
        (2, 4.0),
        (3, 3.5),
    ]


def test_failed_stage_is_tagged_and_the_run_stays_failed_until_it_succeeds(monkeypatch):
    params = parse_params(tiny_params())
    with pytest.raises(RuntimeError), pipeline_run(params, "train"):
        raise RuntimeError("boom")
    (run,) = _runs()
    assert run.data.tags["protoviz.stage.train"] == "failed" and run.info.status == "FAILED"
    with pipeline_run(params, "probe"):  # a later stage run by hand does not hide the failure
        pass
    (run,) = _runs()
    assert run.data.tags["protoviz.stage.probe"] == "done" and run.info.status == "FAILED"
    with pipeline_run(params, "train"):
        pass
    (run,) = _runs()
    assert run.info.status == "FINISHED"


@pytest.mark.parametrize("name", ["it's-mine", 'say "hi" there', "a'b\"c d"])
def test_experiment_names_with_quotes_and_spaces_find_their_run(monkeypatch, name):
    monkeypatch.setenv("DVC_EXP_NAME", name)
    params = parse_params(tiny_params())
    with pipeline_run(params, "train") as first:
        pass
    with pipeline_run(params, "probe") as second:
        pass
    assert first.info.run_id == second.info.run_id
    (run,) = _runs()
    assert run.data.tags["protoviz.dvc_exp"] == name and run.info.status == "FINISHED"


_STAGE_THAT_DIES = (
    "import os, signal, sys\n"
    "from protoviz_core.pipeline.config import parse_params\n"
    "from protoviz_core.pipeline.tracking import pipeline_run\n"
    "with pipeline_run(parse_params({}), 'train'):\n"
    "    os.kill(os.getpid(), getattr(signal, sys.argv[1]))\n"
    "    signal.pause()\n"
)


@pytest.mark.parametrize(
    "signal_name, exit_status", [("SIGTERM", 128 + signal.SIGTERM), ("SIGKILL", -signal.SIGKILL)]
)
def test_a_killed_stage_leaves_its_run_killed_not_running(signal_name, exit_status):
    stage = subprocess.run(
        [sys.executable, "-c", _STAGE_THAT_DIES, signal_name], capture_output=True, text=True, timeout=120
    )
    assert stage.returncode == exit_status and "Traceback" not in stage.stderr
    if signal_name == "SIGKILL":  # nothing could close it: the next stage to open the database does
        (run,) = _runs()
        assert run.info.status == "RUNNING"
        with pipeline_run(parse_params(tiny_params(epochs=3)), "train"):
            pass
    killed = [run for run in _runs() if run.data.params.get("train.epochs") != "3"]
    assert [(run.info.status, run.data.tags["protoviz.stage.train"]) for run in killed] == [
        ("KILLED", "killed")
    ]


def test_a_stage_that_exited_but_was_not_reaped_counts_as_gone():
    """A zombie (exited, its parent not yet told) still answers kill(pid, 0); its run must be closed."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    where = _this_process().rpartition(":")[0]
    deadline = time.time() + 30
    while not _process_gone(f"{where}:{child.pid}"):  # exited: a zombie until waited for
        assert time.time() < deadline, "the child never became a zombie"
        time.sleep(0.05)
    assert Path(f"/proc/{child.pid}").exists()  # still in the process table
    child.wait()
    assert _process_gone(f"{where}:{child.pid}")
    assert not _process_gone(_this_process())


def test_a_copied_repository_keeps_its_artifacts_at_home(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    original, copy = tmp_path / "original", tmp_path / "copy"
    original.mkdir()
    (original / "note.txt").write_text("report")
    monkeypatch.chdir(original)
    params = parse_params(tiny_params())
    with pipeline_run(params, "report"):
        mlflow.log_artifact("note.txt")
    shutil.copytree(original, copy)
    stage_in_the_copy = (
        "import mlflow\n"
        "from protoviz_core.pipeline.config import parse_params\n"
        "from protoviz_core.pipeline.tracking import pipeline_run\n"
        "from tests.helpers import tiny_params\n"
        "with pipeline_run(parse_params(tiny_params()), 'report') as run:\n"
        "    mlflow.log_artifact('note.txt', artifact_path='again')\n"
        "print(run.info.run_id)\n"
    )
    environment = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # mlflow exported it
    environment["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    stage = subprocess.run(
        [sys.executable, "-c", stage_in_the_copy],
        cwd=copy,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    client = MlflowClient(f"sqlite:///{copy / 'mlflow.db'}")
    assert client.get_experiment_by_name(EXPERIMENT_NAME).artifact_location == (copy / "mlartifacts").as_uri()
    run_id = stage.stdout.split()[-1]
    assert client.get_run(run_id).info.artifact_uri.startswith((copy / "mlartifacts").as_uri())
    assert sorted(p.relative_to(copy).parts[-2:] for p in copy.glob("mlartifacts/**/*.txt")) == [
        ("again", "note.txt"),
        ("artifacts", "note.txt"),
    ]
    assert len(list(original.glob("mlartifacts/**/*.txt"))) == 1  # the original is not written to


def test_parallel_processes_share_a_new_database(tmp_path, monkeypatch):
    """Like `dvc queue start -j 4`: four stages create and write one new SQLite database at once."""
    import subprocess
    import sys

    script = (
        "import sys, mlflow\n"
        "from protoviz_core.pipeline.config import parse_params\n"
        "from protoviz_core.pipeline.tracking import pipeline_run\n"
        "with pipeline_run(parse_params({'seed': int(sys.argv[1])}), 'train'):\n"
        "    for step in range(50):\n"
        "        mlflow.log_metric('train/loss', float(step), step=step)\n"
    )
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    workers = [
        subprocess.Popen([sys.executable, "-c", script, str(seed)], stderr=subprocess.PIPE, text=True)
        for seed in range(4)
    ]
    for worker in workers:
        _, stderr = worker.communicate(timeout=300)
        assert worker.returncode == 0, stderr
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT_NAME).experiment_id])
    assert len(runs) == 4
    assert all(len(client.get_metric_history(r.info.run_id, "train/loss")) == 50 for r in runs)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_database_stops_a_stage_with_one_line_and_its_results_are_kept(project, damage):
    from tests.helpers import STAGE_ARGS, call_stage

    database = project / "mlflow.db"
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{database}"
    content = database.read_bytes()
    database.write_bytes(b"not a database " * 4096 if damage == "garbage" else content[: len(content) // 2])
    checkpoints = {p.name: p.read_bytes() for p in (project / "out/checkpoints").iterdir()}
    status, _, stderr = call_stage("train", project, *STAGE_ARGS["train"])
    assert status == 2 and "Traceback" not in stderr
    line = stderr.strip().splitlines()[-1]
    assert f"{database}: the MLflow database cannot be used (" in line and "MLFLOW_TRACKING_URI" in line
    assert {p.name: p.read_bytes() for p in (project / "out/checkpoints").iterdir()} == checkpoints


def test_a_locked_database_is_named_and_other_errors_are_not():
    import sqlalchemy.exc

    from protoviz_core.pipeline.mlflow_store import database_failure

    locked = sqlalchemy.exc.OperationalError("INSERT ...", {}, Exception("database is locked"))
    try:  # as MLflow raises it: its own exception, from sqlalchemy's
        raise RuntimeError("mlflow failed") from locked
    except RuntimeError as exc:
        assert "(database is locked). If another process holds it, wait" in database_failure(exc)
    assert database_failure(ValueError("x")) is None


def test_a_database_locked_by_another_process_stops_a_stage_with_one_line(project):
    from tests.helpers import STAGE_ARGS, call_stage

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sqlite3, sys, time\n"
                "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
                "db.execute('BEGIN EXCLUSIVE')\n"
                "print('locked', flush=True)\n"
                "time.sleep(600)\n"
            ),
            str(project / "mlflow.db"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        status, _, stderr = call_stage("train", project, *STAGE_ARGS["train"])
    finally:
        holder.kill()
        holder.wait()
    assert status == 2 and "Traceback" not in stderr
    assert (
        "the MLflow database cannot be used (database is locked). If another process holds it, wait"
        in stderr.strip().splitlines()[-1]
    )
