"""The MLflow database and its SQLite specifics: where it is, its first use by parallel
processes, retries while another writer holds SQLite's lock, moving a copied repository's
artifact paths (raw SQL on MLflow's own tables), and one line for a database that fails.

A stage opens its run with :func:`protoviz_core.pipeline.tracking.pipeline_run`; the UI and the
comparison of runs read the database's address and the experiment's name from here. Nothing
here reads params, so neither needs the params schema.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import mlflow
from mlflow.entities import Experiment, Run
from mlflow.tracking import MlflowClient

EXPERIMENT_NAME = "protoviz"
TAG_PREFIX = "protoviz."  # of every tag this project sets on a run


def repository_root() -> Path:
    """The main repository: DVC_ROOT inside DVC experiments, else the working directory."""
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


# MLflow 3 opens an experiment on its GenAI overview unless told otherwise; these open it on
# its runs, as charts grouped by metric prefix (train/, probe/, diversity/, ...).
RUNS_VIEW = "workflowType=machine_learning&compareRunsMode=CHART"


EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # what MLflow calls model training


_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.:-]*$")  # values MLflow's filter syntax takes quoted as they are


T = TypeVar("T")


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else ``sqlite:///<repository root>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repository_root() / 'mlflow.db'}"


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


def retry_locked(action: Callable[[], T], attempts: int = 8) -> T:
    """Run ``action`` again when parallel writers hold SQLite's lock."""
    for attempt in range(attempts):
        try:
            return action()
        except Exception as exc:  # MlflowException wraps sqlalchemy's OperationalError
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.2 * 2**attempt)


@contextmanager
def creation_lock(uri: str) -> Iterator[None]:
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
    experiment = retry_locked(lambda: client.get_experiment_by_name(EXPERIMENT_NAME))
    if experiment is not None:
        if relocate and uri.startswith("sqlite:///"):
            _relocate_artifacts(uri, experiment)
        return experiment.experiment_id
    try:
        return retry_locked(
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
    runs = retry_locked(
        lambda: client.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"])
    )
    matching = [run for run in runs if all(run.data.tags.get(k) == v for k, v in tags.items())]
    return matching[0] if matching else None
