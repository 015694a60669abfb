"""distance stage: diversity, rate of change and re-evolution consistency per epoch and layer."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlflow
import pandas as pd
from tqdm import tqdm

from protoviz_core.infra.atomic import atomic_write
from protoviz_core.infra.dvc_files import write_csv, write_json
from protoviz_core.infra.work import prune, run_work
from protoviz_core.measures.distance import distance_work
from protoviz_core.pipeline.config import load_params
from protoviz_core.pipeline.metric_keys import distance_key, in_view
from protoviz_core.pipeline.tracking import pipeline_run
from stages import _cli


def main(argv=None) -> None:
    p = _cli.parser(__doc__)
    p.add_argument("--embeddings", required=True, help="embed stage output folder")
    p.add_argument("--parts", required=True, help="folder for per-(space, epoch) results (resume)")
    p.add_argument(
        "--table", required=True, help="Parquet: space, metric, masked, layer, epoch, quantity, value"
    )
    p.add_argument("--metrics", required=True, help="JSON summary: last epoch per layer, default space")
    p.add_argument("--plot", required=True, help="CSV: diversity per epoch, one column per layer")
    args = p.parse_args(argv)
    params = load_params(args.params)
    info = json.loads((Path(args.embeddings) / "info.json").read_text())  # what this run's embed stage made
    prune(args.parts, info["spaces"], print, pattern="*/")

    rows = []
    for space in info["spaces"]:
        items = distance_work(args.embeddings, space, info["epochs"])
        with tqdm(total=len(items), desc=f"distance {space}", unit="epoch") as bar:
            parts = run_work(items, Path(args.parts) / space, on_done=lambda item, reused: bar.update())
        rows += [row for part in parts for row in part["rows"]]
    table = pd.DataFrame(rows)
    with atomic_write(args.table, "wb") as f:
        table.to_parquet(f, index=False)

    with pipeline_run(params, "distance"):
        for epoch, group in table.groupby("epoch"):  # one batch per epoch: SQLite stays fast
            mlflow.log_metrics(
                {
                    distance_key(r.quantity, r.space, r.metric, r.masked, r.layer): r.value
                    for r in group.itertuples()
                },
                step=int(epoch),
            )

    view = params.distance
    shown = in_view(table, view)
    # Each quantity at the last epoch that has it: the rate of change (and its ratio) ends one
    # extracted epoch before the last.
    latest = shown.sort_values("epoch").groupby(["layer", "quantity"]).tail(1)
    write_json(
        args.metrics,
        {
            "space": view.space,
            "metric": view.metric,
            "masked": view.masked,
            "epoch": int(shown.epoch.max()),
            "rate_of_change_from_epoch": int(latest[latest.quantity == "rate_of_change"].epoch.max())
            if (latest.quantity == "rate_of_change").any()
            else None,
            **{
                layer: dict(zip(group.quantity, group.value))
                for layer, group in latest.sort_values("quantity").groupby("layer")
            },
        },
    )
    diversity = shown[shown.quantity == "diversity"].pivot(index="epoch", columns="layer", values="value")
    write_csv(args.plot, [{"epoch": int(epoch), **row} for epoch, row in diversity.iterrows()])


if __name__ == "__main__":
    sys.exit(_cli.run(main))
