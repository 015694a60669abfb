import mlflow
from mlflow.tracking import MlflowClient

from protoviz_core.config import parse_params
from protoviz_core.tracking import EXPERIMENT_NAME, pipeline_run, tracking_uri
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
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(1, 5.0), (2, 4.0), (3, 3.5)]


def test_failed_stage_is_tagged(monkeypatch):
    params = parse_params(tiny_params())
    try:
        with pipeline_run(params, "train"):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    (run,) = _runs()
    assert run.data.tags["protoviz.stage.train"] == "failed"


def test_parallel_processes_share_a_new_database(tmp_path, monkeypatch):
    """Like `dvc queue start -j 4`: four stages create and write one new SQLite database at once."""
    import subprocess
    import sys

    script = (
        "import sys, mlflow\n"
        "from protoviz_core.config import parse_params\n"
        "from protoviz_core.tracking import pipeline_run\n"
        "with pipeline_run(parse_params({'seed': int(sys.argv[1])}), 'train'):\n"
        "    for step in range(50):\n"
        "        mlflow.log_metric('train/loss', float(step), step=step)\n"
    )
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    workers = [subprocess.Popen([sys.executable, "-c", script, str(seed)], stderr=subprocess.PIPE, text=True)
               for seed in range(4)]
    for worker in workers:
        _, stderr = worker.communicate(timeout=300)
        assert worker.returncode == 0, stderr
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT_NAME).experiment_id])
    assert len(runs) == 4
    assert all(len(client.get_metric_history(r.info.run_id, "train/loss")) == 50 for r in runs)
