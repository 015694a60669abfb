"""compare: runs of the MLflow experiment side by side, mean +- SEM over seeds per condition.

Not a DVC stage: it reads every finished run (or the ones named) from the tracking
database and writes PNGs, CSVs, one HTML page and an atlas holding every run's
prototypes (from the runs' report artifacts), e.g.

    python -m stages.compare --out comparison
    python -m stages.compare --out comparison --dvc-exp exp-1a2b3 exp-4c5d6
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient

from protoviz_core.measures.distance import METRICS
from protoviz_core.pipeline.config import DistanceParams, load_params
from protoviz_core.pipeline.metric_keys import TRAIN_LOSS, comparison_keys, distance_layers
from protoviz_core.pipeline.mlflow_store import tracking_uri
from protoviz_core.presentation.atlas import read_manifest
from protoviz_core.presentation.atlas_links import unit_links, write_links
from protoviz_core.presentation.comparison import (
    choose_runs,
    find_runs,
    metric_histories,
    similarity_between,
    similarity_files,
)
from protoviz_core.presentation.comparison_report import write_comparison
from stages import _cli

ATLAS_ARTIFACTS = "report/atlas/runs"


def _collect_atlas(client: MlflowClient, used, atlas: Path) -> dict[str, dict]:
    """Copy each run's atlas part from its report artifacts into ``atlas/runs``; their manifests
    by run id."""
    manifests = {}
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one line per run is enough
    (atlas / "runs").mkdir(parents=True, exist_ok=True)
    for run in used.itertuples():
        if not any(a.path == ATLAS_ARTIFACTS for a in client.list_artifacts(run.run_id, "report/atlas")):
            print(f"compare: run {run.name} ({run.run_id}) has no report artifacts; not in the atlas")
            continue
        with tempfile.TemporaryDirectory(dir=atlas) as scratch:
            local = Path(client.download_artifacts(run.run_id, ATLAS_ARTIFACTS, scratch))
            for part in local.iterdir():
                target = atlas / "runs" / part.name
                shutil.rmtree(target, ignore_errors=True)
                shutil.move(str(part), target)
                manifests[run.run_id] = read_manifest(target)
    return manifests


def main(argv=None) -> None:
    p = _cli.parser(__doc__)
    p.add_argument("--out", required=True, help="folder for the figures, CSVs, index.html and atlas/")
    p.add_argument("--run-id", nargs="+", help="only these MLflow run ids")
    p.add_argument(
        "--dvc-exp", nargs="+", help="only the runs of these DVC experiments ('workspace' for dvc repro)"
    )
    p.add_argument("--space", help="distance space (default: distance.space in --params)")
    p.add_argument("--metric", choices=METRICS, help="default: distance.metric in --params")
    p.add_argument("--masked", choices=["yes", "no"], help="RF-masked distances (default: distance.masked)")
    args = p.parse_args(argv)
    default = load_params(args.params).distance if Path(args.params).is_file() else DistanceParams()
    view = DistanceParams(
        space=args.space or default.space,
        metric=args.metric or default.metric,
        masked=default.masked if args.masked is None else args.masked == "yes",
    )
    client = MlflowClient(tracking_uri())
    selection = choose_runs(client, find_runs(client, run_ids=args.run_id, dvc_exps=args.dvc_exp))
    for run in selection.used.itertuples():
        print(f"compare: using {run.condition} seed {run.seed}: {run.name} ({run.run_id})")
    for run in selection.skipped.itertuples():
        print(f"compare: skipping {run.name} ({run.run_id}): {run.reason}")
    for key, values in selection.differing_params.items():
        print(f"compare: warning: runs differ in {key}: {', '.join(values)}")

    layers = distance_layers(
        key for run_id in selection.used.run_id for key in client.get_run(run_id).data.metrics
    )
    # The SimCLR loss too: per_run.csv shows it beside each run's probe accuracies.
    histories = metric_histories(client, selection.used, [TRAIN_LOSS] + comparison_keys(layers, view))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atlas_runs = _collect_atlas(client, selection.used, out / "atlas")
    with similarity_files(client, selection.used) as files:
        similarity = similarity_between(files, selection.used)
        links = unit_links(files, atlas_runs)
    if len(links) > 1:
        print(f"compare: the atlas links each unit to its matches in {len(links) - 1} other runs")
    atlas_runs = {
        run_id: write_links(out / "atlas", m, links[m["name"]]) if m["name"] in links else m
        for run_id, m in atlas_runs.items()
    }
    page = write_comparison(
        out,
        selection=selection,
        histories=histories,
        view=view,
        atlas_runs=list(atlas_runs.values()),
        similarity=similarity,
    )
    print(f"compare: {page}")


if __name__ == "__main__":
    sys.exit(_cli.run(main))
