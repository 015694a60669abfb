"""report stage: the run's figures (paper Fig. 1-8), one HTML page and the prototype atlas."""

from __future__ import annotations

import sys

import mlflow
import pandas as pd
from tqdm import tqdm

from protoviz_core.measures.exemplars import ExemplarSet
from protoviz_core.measures.masks import load_masks
from protoviz_core.measures.readability import read_scores
from protoviz_core.pipeline.config import load_params
from protoviz_core.pipeline.run_identity import run_name
from protoviz_core.pipeline.tracking import pipeline_run
from protoviz_core.presentation.report import write_run_report
from protoviz_core.prototypes.store import open_prototypes
from stages import _cli


def main(argv=None) -> None:
    p = _cli.parser(__doc__)
    p.add_argument("--prototypes", required=True, help="prototype store (extract stage output)")
    p.add_argument("--rfmasks", required=True, help="receptive-field masks (rfmask stage output)")
    p.add_argument("--distances", required=True, help="tidy distance table (distance stage output)")
    p.add_argument("--exemplars", required=True, help="natural exemplars (exemplars stage output)")
    p.add_argument(
        "--data", required=True, help="stl10_binary folder the exemplars come from (data stage output)"
    )
    p.add_argument("--probe", required=True, help="probe accuracy per epoch (probe stage plot table)")
    p.add_argument(
        "--readability", required=True, help="2-AFC scores per epoch (readability stage plot table)"
    )
    p.add_argument(
        "--unit-scores", required=True, help="per-unit 2-AFC scores (readability stage output folder)"
    )
    p.add_argument(
        "--similarity", required=True, help="CKA per epoch and layer (similarity stage plot table)"
    )
    p.add_argument("--out", required=True, help="folder for the figures, index.html and atlas/")
    args = p.parse_args(argv)
    params = load_params(args.params)
    store = open_prototypes(args.prototypes)
    exemplars = ExemplarSet.open(
        args.exemplars, args.data, params.data.image_size, sorted(int(e) for e in store.index.epoch.unique())
    )
    # Built inside the run, so that a report that fails to write ends its run FAILED.
    with (
        pipeline_run(params, "report"),
        tqdm(total=store.index.epoch.nunique(), desc="report atlas", unit="epoch") as bar,
    ):
        page = write_run_report(
            args.out,
            store=store,
            masks=load_masks(args.rfmasks),
            distances=pd.read_parquet(args.distances),
            probe=pd.read_csv(args.probe),
            settings=params.report,
            view=params.distance,
            run_name=run_name(params),
            arch=params.train.backbone,
            read_unit=params.read_unit,
            exemplars=exemplars,
            readability=pd.read_csv(args.readability),
            unit_scores=read_scores(args.unit_scores, sorted(int(e) for e in store.index.epoch.unique())),
            similarity=pd.read_csv(args.similarity),
            on_atlas_epoch=lambda epoch: bar.update(),
        )
        mlflow.log_artifacts(args.out, artifact_path="report")
    print(f"report: {page}")


if __name__ == "__main__":
    sys.exit(_cli.run(main))
