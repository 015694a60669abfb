"""MLflow tracking shared by every stage: one MLflow run per pipeline run.

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

import contextlib
import fcntl
import os
import re
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import mlflow
from mlflow.entities import Experiment, Metric, Param, Run
from mlflow.tracking import MlflowClient

from protoviz_core.config import Params
from protoviz_core.errors import ProtovizError
from protoviz_core.interrupts import interrupted, no_signal_raises, sigterm_raises

EXPERIMENT_NAME = "protoviz"
TAG_PREFIX = "protoviz."
# MLflow 3 opens an experiment on its GenAI overview unless told otherwise; these open it on
# its runs, as charts grouped by metric prefix (train/, probe/, diversity/, ...).
RUNS_VIEW = "workflowType=machine_learning&compareRunsMode=CHART"
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # what MLflow calls model training
EMBED_WEIGHTS_TAG = (
    f"{TAG_PREFIX}embed_weights"  # the embed stage's weights: random ones must not pass as real
)
PROCESS_TAG = f"{TAG_PREFIX}process"  # "host:pid" of the stage that last opened the run
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.:-]*$")  # values MLflow's filter syntax takes quoted as they are

T = TypeVar("T")


def repository_root() -> Path:
    """The main repository: DVC_ROOT inside DVC experiments, else the working directory."""
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def database_failure(exc: BaseException) -> str | None:
    """One line for an error that comes from the tracking database (damaged, not a database,
    locked by another process), naming it and what to do; None for any other error."""
    import sqlalchemy.exc

    seen = exc
    while seen is not None and not isinstance(seen, sqlalchemy.exc.DatabaseError):
        seen = seen.__cause__ or seen.__context__
    if seen is None:
        return None
    reason = str(getattr(seen, "orig", None) or seen).splitlines()[0]
    return (
        f"{tracking_uri()}: the MLflow database cannot be used ({reason}). If another process holds "
        "it, wait for it and rerun; if it is damaged, restore it from a backup or move it aside (a new "
        "one is made), or point MLFLOW_TRACKING_URI at another database. Results already written are kept"
    )


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else ``sqlite:///<repository root>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repository_root() / 'mlflow.db'}"


def _git_commit(root: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_name(params: Params) -> str:
    """A pipeline run's label, in MLflow and on its report: unique per configuration and the
    same on every machine, e.g. ``clrjit-seed1-1a2b3c4d`` (SimCLR), ``byol-clrjit-seed1-5e6f7a8b``,
    ``byol-resnet50-clrjit-seed1-9c0d1e2f``."""
    learner = "".join(
        f"{value}-"
        for value, paper in ((params.train.method, "simclr"), (params.train.backbone, "resnet18"))
        if value != paper
    )
    return f"{learner}{params.aug}-seed{params.seed}-{params.measurement_hash()[:8]}"


def run_tags(params: Params) -> dict[str, str]:
    """The tags that identify and describe the pipeline run of ``params``."""
    return {
        f"{TAG_PREFIX}params_hash": params.measurement_hash(),
        f"{TAG_PREFIX}dvc_exp": os.environ.get("DVC_EXP_NAME") or "workspace",
        f"{TAG_PREFIX}training_hash": params.training_identity(),
        f"{TAG_PREFIX}aug": params.aug,
        f"{TAG_PREFIX}method": params.train.method,
        f"{TAG_PREFIX}backbone": params.train.backbone,
        f"{TAG_PREFIX}seed": str(params.seed),
        f"{TAG_PREFIX}git_commit": _git_commit(repository_root()),
    }


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 0.06}}`` -> ``{"train.lr": 0.06}``."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _retry(action: Callable[[], T], attempts: int = 8) -> T:
    """Run ``action`` again when parallel writers hold SQLite's lock."""
    for attempt in range(attempts):
        try:
            return action()
        except Exception as exc:  # MlflowException wraps sqlalchemy's OperationalError
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.2 * 2**attempt)


@contextmanager
def _creation_lock(uri: str) -> Iterator[None]:
    """Serialise the first use of a SQLite database across processes.

    MLflow creates and migrates the schema on first connection; two processes doing it
    at once (``dvc queue start -j 2``) corrupt the migration. Other back ends need no lock.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock_path = Path(uri.removeprefix("sqlite:///") + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def artifacts_location(uri: str) -> str:
    """Where runs of the database ``uri`` keep artifacts: ``mlartifacts/`` beside a SQLite file,
    else the repository root's ``mlartifacts/``."""
    folder = (
        Path(uri.removeprefix("sqlite:///")).resolve().parent
        if uri.startswith("sqlite:///")
        else repository_root()
    )
    return (folder / "mlartifacts").as_uri()


def _relocate_artifacts(uri: str, experiment: Experiment) -> None:
    """Point a copied repository's database at its own ``mlartifacts/`` (MLflow stores the path absolute).

    For the default database (``mlflow.db`` at the repository root; the caller checks
    that MLFLOW_TRACKING_URI did not name it) whose experiment keeps artifacts in another
    folder's ``mlartifacts``: the repository was copied or moved.
    """
    wanted = artifacts_location(uri)
    old = experiment.artifact_location.rstrip("/")
    if old == wanted or not old.endswith("/mlartifacts"):
        return
    with contextlib.closing(sqlite3.connect(uri.removeprefix("sqlite:///"), timeout=30)) as db, db:
        db.execute(
            "update experiments set artifact_location = ? where experiment_id = ?",
            (wanted, experiment.experiment_id),
        )
        db.execute(
            "update runs set artifact_uri = ? || substr(artifact_uri, ?) "
            "where experiment_id = ? and substr(artifact_uri, 1, ?) = ?",
            (wanted, len(old) + 1, experiment.experiment_id, len(old), old),
        )


def ensure_experiment(client: MlflowClient, *, relocate: bool = False) -> str:
    """The id of the protoviz experiment, created (artifacts beside the database) if new.

    ``relocate``: the database is the repository's default one, and a stored artifact
    location of another repository is moved to this one (:func:`_relocate_artifacts`).
    A database named by MLFLOW_TRACKING_URI is the user's to manage and is left as it is.
    """
    uri = client.tracking_uri
    experiment = _retry(lambda: client.get_experiment_by_name(EXPERIMENT_NAME))
    if experiment is not None:
        if relocate and uri.startswith("sqlite:///"):
            _relocate_artifacts(uri, experiment)
        return experiment.experiment_id
    try:
        return _retry(
            lambda: client.create_experiment(
                EXPERIMENT_NAME, artifact_location=artifacts_location(uri), tags=EXPERIMENT_KIND
            )
        )
    except mlflow.exceptions.MlflowException:
        # Another process created it between our two calls.
        return client.get_experiment_by_name(EXPERIMENT_NAME).experiment_id


def runs_url(server: str, experiment_id: str) -> str:
    """The address that opens the experiment's runs and their charts in the MLflow UI at ``server``."""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?{RUNS_VIEW}"


def find_run(client: MlflowClient, experiment_id: str, tags: dict[str, str]) -> Run | None:
    """The newest run whose tags match all of ``tags``, or None.

    Values are compared here, not in MLflow's filter string, unless they are plain
    (hashes, numbers): a DVC experiment may be named ``it's "mine"``.
    """
    plain = {k: v for k, v in tags.items() if _SAFE_VALUE.match(v)}
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in plain.items())
    runs = _retry(lambda: client.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"]))
    matching = [run for run in runs if all(run.data.tags.get(k) == v for k, v in tags.items())]
    return matching[0] if matching else None


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
    for run in _retry(lambda: client.search_runs([experiment_id], "attributes.status = 'RUNNING'")):
        process = run.data.tags.get(PROCESS_TAG, "")
        if process == _this_process() or not _process_gone(process):
            continue
        for key, value in run.data.tags.items():
            if key.startswith(f"{TAG_PREFIX}stage.") and value == "running":
                _retry(lambda: client.set_tag(run.info.run_id, key, "killed"))
        _retry(lambda: client.set_terminated(run.info.run_id, "KILLED"))


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
            _retry(lambda: client.log_batch(run_id, metrics=history))
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
    with _creation_lock(uri):
        client = MlflowClient()
        experiment_id = ensure_experiment(client, relocate=default_database)
    _close_killed_runs(client, experiment_id)
    tags = run_tags(params)
    identity = {k: tags[k] for k in (f"{TAG_PREFIX}params_hash", f"{TAG_PREFIX}dvc_exp")}
    existing = find_run(client, experiment_id, identity)
    if existing is None:
        run = _retry(
            lambda: client.create_run(
                experiment_id, run_name=run_name(params), tags={**tags, PROCESS_TAG: _this_process()}
            )
        )
        run_id = run.info.run_id
        params_flat = flatten(params.model_dump())
        logged = [Param(key, str(value)) for key, value in params_flat.items()]
        _retry(lambda: client.log_batch(run_id, params=logged))
        if stage != "train":
            _adopt_training_curves(client, experiment_id, run_id, params.training_identity())
    else:
        run_id = existing.info.run_id
        # Claimed before the run is RUNNING again: another process must not take the previous
        # stage's (finished) process for this one and close the run as killed.
        _retry(lambda: client.set_tag(run_id, PROCESS_TAG, _this_process()))
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
