"""Across runs: which MLflow runs to compare, and their metric histories.

Each pipeline run is one MLflow run tagged with its learner (``protoviz.method``; runs
without the tag are SimCLR's), backbone (``protoviz.backbone``; without it, ResNet18),
augmentation (``protoviz.aug``) and seed (``protoviz.seed``). Its *condition* is the
augmentation for SimCLR on ResNet18 (the paper's two conditions), preceded by the learner
and the backbone where they are others (``byol clrjit``, ``simclr resnet50 keepclr``).
Averaging over seeds needs one run per (condition, seed):
when a configuration was run more than once (the workspace and a DVC experiment,
say) the run with the most finished stages, then the newest, is used and the others
are reported as skipped, never averaged in twice.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from protoviz_core.infra.errors import ProtovizError
from protoviz_core.infra.work import Contents
from protoviz_core.measures.similarity import SIMILARITY_ARTIFACTS, between_runs, read_similarity_files
from protoviz_core.models.backbones import BACKBONE_ARCH
from protoviz_core.models.learners import PAPER_METHOD
from protoviz_core.pipeline.mlflow_store import EXPERIMENT_NAME, TAG_PREFIX

# Params that are allowed to differ between compared runs; any other difference is reported.
VARYING_PARAMS = {"aug", "seed", "train.method", "train.backbone"}
COLUMNS = [
    "run_id",
    "name",
    "condition",
    "method",
    "backbone",
    "aug",
    "seed",
    "dvc_exp",
    "start_time",
    "stages_done",
]


def condition_of(method: str, backbone: str, aug: str) -> str:
    """A run's condition: ``clrjit`` / ``keepclr`` for SimCLR on ResNet18, ``byol clrjit``,
    ``simclr resnet50 clrjit`` and so on for the others."""
    if backbone != BACKBONE_ARCH:
        return f"{method} {backbone} {aug}"
    return aug if method == PAPER_METHOD else f"{method} {aug}"


class ComparisonError(ProtovizError, ValueError):
    """Nothing (or nothing valid) to compare; the message says which runs were looked at."""


@dataclass
class RunSelection:
    # COLUMNS: one run per condition and seed
    used: pd.DataFrame
    skipped: pd.DataFrame  # the same columns plus ``reason``
    differing_params: dict[str, list[str]]  # param -> values seen among the used runs


def find_runs(
    client: MlflowClient, *, run_ids: list[str] | None = None, dvc_exps: list[str] | None = None
) -> pd.DataFrame:
    """Runs of the protoviz experiment, optionally only the given run ids or DVC experiment names.

    Returns:
        One row per run: :data:`COLUMNS`.

    Raises:
        ComparisonError: no experiment, no runs, or a requested id or name not found.
    """
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is None:
        raise ComparisonError(
            f"no MLflow experiment {EXPERIMENT_NAME!r} at {client.tracking_uri}; run the pipeline first"
        )
    found = client.search_runs([experiment.experiment_id], max_results=50_000)
    rows = [
        {
            "run_id": run.info.run_id,
            "name": run.info.run_name,
            "condition": condition_of(
                run.data.tags.get(f"{TAG_PREFIX}method", PAPER_METHOD),
                run.data.tags.get(f"{TAG_PREFIX}backbone", BACKBONE_ARCH),
                run.data.tags.get(f"{TAG_PREFIX}aug"),
            ),
            "method": run.data.tags.get(f"{TAG_PREFIX}method", PAPER_METHOD),
            "backbone": run.data.tags.get(f"{TAG_PREFIX}backbone", BACKBONE_ARCH),
            "aug": run.data.tags.get(f"{TAG_PREFIX}aug"),
            "seed": int(run.data.tags.get(f"{TAG_PREFIX}seed", -1)),
            "dvc_exp": run.data.tags.get(f"{TAG_PREFIX}dvc_exp"),
            "start_time": run.info.start_time,
            "stages_done": sum(
                key.startswith(f"{TAG_PREFIX}stage.") and value == "done"
                for key, value in run.data.tags.items()
            ),
        }
        for run in found
    ]
    runs = pd.DataFrame(rows, columns=COLUMNS)
    for column, wanted in (("run_id", run_ids), ("dvc_exp", dvc_exps)):
        if wanted:
            unknown = sorted(set(wanted) - set(runs[column]))
            if unknown:
                raise ComparisonError(f"{column} not found in experiment {EXPERIMENT_NAME!r}: {unknown}")
            runs = runs[runs[column].isin(wanted)]
    if runs.empty:
        raise ComparisonError(f"experiment {EXPERIMENT_NAME!r} at {client.tracking_uri} has no runs")
    return runs.reset_index(drop=True)


def choose_runs(client: MlflowClient, runs: pd.DataFrame) -> RunSelection:
    """One run per (condition, seed), the most complete then newest; and the params they disagree on."""
    ordered = runs.sort_values(["stages_done", "start_time"], ascending=False)
    second = ordered.duplicated(["condition", "seed"], keep="first")
    used = ordered[~second].sort_values(["condition", "seed"]).reset_index(drop=True)
    skipped = (
        ordered[second]
        .assign(reason="another run of this condition and seed has more finished stages or is newer")
        .reset_index(drop=True)
    )
    params = {row.run_id: client.get_run(row.run_id).data.params for row in used.itertuples()}
    keys = sorted(set().union(*params.values()) - VARYING_PARAMS)
    differing = {}
    for key in keys:
        values = sorted({str(p.get(key)) for p in params.values()})
        if len(values) > 1:
            differing[key] = values
    return RunSelection(used=used, skipped=skipped, differing_params=differing)


def metric_histories(client: MlflowClient, runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per-epoch values of ``keys`` for every run.

    A stage that ran again in the same MLflow run (``dvc repro`` after a code change) has
    logged its epochs again: each (run, key, epoch) keeps only its newest value, so that
    a rerun is never counted as another seed.

    Returns:
        Long table: run_id, condition, seed, key, epoch, value (runs lacking a key add no rows).
    """
    rows = []
    for run in runs.itertuples():
        for key in keys:
            newest = {}
            for metric in client.get_metric_history(run.run_id, key):
                if metric.step not in newest or metric.timestamp >= newest[metric.step].timestamp:
                    newest[metric.step] = metric
            for metric in newest.values():
                rows.append(
                    {
                        "run_id": run.run_id,
                        "condition": run.condition,
                        "seed": run.seed,
                        "key": key,
                        "epoch": metric.step,
                        "value": metric.value,
                    }
                )
    return pd.DataFrame(rows, columns=["run_id", "condition", "seed", "key", "epoch", "value"])


@contextmanager
def similarity_files(client: MlflowClient, runs: pd.DataFrame) -> Iterator[dict[str, dict[int, Contents]]]:
    """The similarity stage's files of each of ``runs`` that logged them, downloaded from its
    MLflow artifacts into a scratch folder that lasts as long as the block.

    Yields:
        ``{run_id: {epoch: contents}}`` (:func:`~protoviz_core.measures.similarity.read_similarity_files`),
        memory-mapped: only the epochs a comparison reads are read (at the paper's scale a run's
        files are about 2 GB).
    """
    with tempfile.TemporaryDirectory() as scratch:
        files = {}
        for run in runs.itertuples():
            if not any(a.path == SIMILARITY_ARTIFACTS for a in client.list_artifacts(run.run_id)):
                continue
            local = client.download_artifacts(run.run_id, SIMILARITY_ARTIFACTS, scratch + f"/{run.run_id}")
            files[run.run_id] = read_similarity_files(Path(local))
        yield files


def similarity_between(files: dict[str, dict[int, Contents]], runs: pd.DataFrame) -> pd.DataFrame:
    """Every pair of ``runs`` compared layer by layer
    (:func:`protoviz_core.measures.similarity.between_runs`).
    A pair of one condition is labelled ``<condition> (seeds)``, a pair of two ``<a> vs <b>``.

    Args:
        files: :func:`similarity_files` of the runs.

    Returns:
        Long table: pair, run_a, run_b, epoch, layer, quantity (cka | matched | best |
        matched_chance | best_chance), value; runs without files add no rows.
    """
    rows = []
    conditions = dict(zip(runs.run_id, runs.condition))
    present = [run_id for run_id in files if run_id in conditions]
    for first, second in itertools.combinations(sorted(present, key=lambda r: (conditions[r], r)), 2):
        a, b = conditions[first], conditions[second]
        pair = f"{a} (seeds)" if a == b else " vs ".join(sorted((a, b)))
        for row in between_runs(files[first], files[second]):
            for quantity in ("cka", "matched", "best", "matched_chance", "best_chance"):
                rows.append(
                    {
                        "pair": pair,
                        "run_a": first,
                        "run_b": second,
                        "epoch": row["epoch"],
                        "layer": row["layer"],
                        "quantity": quantity,
                        "value": row[quantity],
                    }
                )
    return pd.DataFrame(rows, columns=["pair", "run_a", "run_b", "epoch", "layer", "quantity", "value"])
