"""MLflow tracking shared by every stage: one MLflow run per pipeline run.

What a stage author needs: open the run with ``with pipeline_run(params, "<stage>"):`` and
log inside it with ``mlflow.log_metric(key, value, step=epoch)``, keys from
:mod:`~protoviz_core.pipeline.metric_keys`. The run's name and tags are
:mod:`~protoviz_core.pipeline.run_identity`'s, the database's specifics
:mod:`~protoviz_core.pipeline.mlflow_store`'s; this module opens and closes runs.

A pipeline run is one configuration (all of params.yaml) in one DVC experiment.
Each stage opens it with :func:`pipeline_run`; the first stage to run creates it,
later stages find it again by its tags:

    protoviz.params_hash    hash of all params but the views (``Params.measurement_hash``)
    protoviz.dvc_exp        DVC_EXP_NAME, or "workspace" for plain ``dvc repro``
    protoviz.training_hash  the checkpoints' identity: hash of the params that shape them (aug, seed,
                            data, train) and TRAINING_VERSION, as each checkpoint records it
    protoviz.aug, protoviz.method, protoviz.backbone, protoviz.seed, protoviz.git_commit
    protoviz.stage.<stage>  running, done, failed or killed (how each stage last ended)

When a run is created by a later stage because DVC restored the training outputs
from its cache (a new probe setting, say), the ``train/*`` curves are copied from the
newest run with the same training hash, so every run shows its whole history.

The database is SQLite at the repository root (``mlflow.db``), found through DVC_ROOT
so that queued DVC experiments, which run in copies of the repository, share it.
MLFLOW_TRACKING_URI overrides it. Browse with ``mlflow ui --backend-store-uri
sqlite:///mlflow.db``. Artifacts go to ``mlartifacts/`` beside that database; MLflow
stores that location as an absolute path, so when the repository (or its database)
has been copied or moved, the stored paths are moved to the copy's own folder.

A run's status says how its stages ended: FAILED while any stage's last attempt
failed, KILLED when a stage was interrupted (Ctrl-C or SIGTERM at once; SIGKILL when the
next stage opens the database and finds the process gone), FINISHED otherwise.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from protoviz_core.infra.errors import ProtovizError
from protoviz_core.infra.interrupts import interrupted, no_signal_raises, sigterm_raises
from protoviz_core.pipeline.config import Params
from protoviz_core.pipeline.mlflow_store import (
    TAG_PREFIX,
    creation_lock,
    database_failure,
    ensure_experiment,
    find_run,
    retry_locked,
    tracking_uri,
)
from protoviz_core.pipeline.run_identity import flatten, run_name, run_tags

PROCESS_TAG = f"{TAG_PREFIX}process"  # "host:pid" of the stage that last opened the run


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:")
    except OSError:
        return "-"


def _this_process() -> str:
    """``host:pid-namespace:pid``: containers sharing a host name do not judge each other's processes."""
    return f"{socket.gethostname()}:{_pid_namespace()}:{os.getpid()}"


def _process_gone(process: str) -> bool:
    """Whether ``host:namespace:pid`` names a process of this host and PID namespace that no longer exists."""
    where, _, pid = process.rpartition(":")
    if where != f"{socket.gethostname()}:{_pid_namespace()}" or not pid.isdigit():
        return False  # another machine's or container's (a queued experiment elsewhere): not ours to judge
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _zombie(int(pid))


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has exited and waits only for its parent to read its status (state Z in
    /proc): a stage killed under ``dvc repro`` can stay so while DVC itself is being stopped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].startswith("Z")


def _close_killed_runs(client: MlflowClient, experiment_id: str) -> None:
    """Mark runs whose stage process died without closing them (SIGKILL, power loss) as KILLED."""
    for run in retry_locked(lambda: client.search_runs([experiment_id], "attributes.status = 'RUNNING'")):
        process = run.data.tags.get(PROCESS_TAG, "")
        if process == _this_process() or not _process_gone(process):
            continue
        for key, value in run.data.tags.items():
            if key.startswith(f"{TAG_PREFIX}stage.") and value == "running":
                retry_locked(lambda: client.set_tag(run.info.run_id, key, "killed"))
        retry_locked(lambda: client.set_terminated(run.info.run_id, "KILLED"))


def _final_status(client: MlflowClient, run_id: str) -> str:
    """FAILED while any stage's last attempt failed, KILLED if one was interrupted, else FINISHED."""
    states = {v for k, v in client.get_run(run_id).data.tags.items() if k.startswith(f"{TAG_PREFIX}stage.")}
    return "FAILED" if "failed" in states else "KILLED" if "killed" in states else "FINISHED"


def _adopt_training_curves(client: MlflowClient, experiment_id: str, run_id: str, training_hash: str) -> None:
    """Copy ``train/*`` metric histories from the newest other run with this training hash (runs
    tagged before the tag carried the version, ``-v1``, carry the bare hash: version 1's)."""
    values = [training_hash] + ([training_hash.removesuffix("-v1")] if training_hash.endswith("-v1") else [])
    sources = [
        run
        for value in values
        for run in client.search_runs(
            [experiment_id],
            f"tags.`{TAG_PREFIX}training_hash` = '{value}'",
            order_by=["attributes.start_time DESC"],
        )
    ]
    for source in sorted(sources, key=lambda run: run.info.start_time, reverse=True):
        if source.info.run_id == run_id:
            continue
        keys = [k for k in source.data.metrics if k.startswith("train/")]
        history: list[Metric] = [m for k in keys for m in client.get_metric_history(source.info.run_id, k)]
        if history:
            retry_locked(lambda: client.log_batch(run_id, metrics=history))
            client.set_tag(run_id, f"{TAG_PREFIX}train_curves_from", source.info.run_id)
            return


class TrackingError(ProtovizError, RuntimeError):
    """The MLflow database cannot be used (damaged, not a database, locked); names it and the fix."""


@contextmanager
def pipeline_run(params: Params, stage: str) -> Iterator[mlflow.ActiveRun]:
    """Open (or create) the MLflow run of this pipeline run, as the active run.

    Inside the block, ``mlflow.log_metric(key, value, step=epoch)`` goes to it. The
    tag ``protoviz.stage.<stage>`` records ``running``, then ``done``, ``failed`` or
    ``killed``; the run ends with :func:`_final_status`. SIGTERM inside the block is
    raised as an exception (so the run closes as KILLED) and re-raised to the caller.

    Raises:
        TrackingError: the database fails, on opening the run or inside the block (one line;
            what the stage wrote before is kept).
    """
    try:
        with _open_run(params, stage) as active:
            yield active
    except Exception as exc:
        problem = database_failure(exc)
        if problem is None:
            raise
        raise TrackingError(problem) from None


@contextmanager
def _open_run(params: Params, stage: str) -> Iterator[mlflow.ActiveRun]:
    uri = tracking_uri()
    default_database = not os.environ.get("MLFLOW_TRACKING_URI")  # before mlflow exports it
    mlflow.set_tracking_uri(uri)
    with creation_lock(uri):
        client = MlflowClient()
        experiment_id = ensure_experiment(client, relocate=default_database)
    _close_killed_runs(client, experiment_id)
    tags = run_tags(params)
    identity = {k: tags[k] for k in (f"{TAG_PREFIX}params_hash", f"{TAG_PREFIX}dvc_exp")}
    existing = find_run(client, experiment_id, identity)
    if existing is None:
        run = retry_locked(
            lambda: client.create_run(
                experiment_id, run_name=run_name(params), tags={**tags, PROCESS_TAG: _this_process()}
            )
        )
        run_id = run.info.run_id
        params_flat = flatten(params.model_dump())
        logged = [Param(key, str(value)) for key, value in params_flat.items()]
        retry_locked(lambda: client.log_batch(run_id, params=logged))
        if stage != "train":
            _adopt_training_curves(client, experiment_id, run_id, params.training_identity())
    else:
        run_id = existing.info.run_id
        # Claimed before the run is RUNNING again: another process must not take the previous
        # stage's (finished) process for this one and close the run as killed.
        retry_locked(lambda: client.set_tag(run_id, PROCESS_TAG, _this_process()))
    stage_tag = f"{TAG_PREFIX}stage.{stage}"
    with sigterm_raises():
        active = mlflow.start_run(run_id=run_id)
        mlflow.set_tag(stage_tag, "running")
        try:
            yield active
        except BaseException as exc:
            killed = interrupted(exc)
            try:
                with no_signal_raises():
                    mlflow.set_tag(stage_tag, "killed" if killed else "failed")
                    mlflow.end_run("KILLED" if killed else "FAILED")
            except Exception as cleanup:
                if database_failure(cleanup) is None:
                    raise
                # The database failed too; the stage's own error is the one to report.
            raise
        with no_signal_raises():  # a SIGTERM now must not leave a finished stage's run RUNNING
            mlflow.set_tag(stage_tag, "done")
            mlflow.end_run(_final_status(client, run_id))
